/**
 * The bpftrace program of the host's monitor (one for every sandbox of the host), and the tables
 * that turn its numbers into names (system calls, errnos). Pure: text in, text out.
 *
 * ARCHITECTURE NOTE: every probe is filtered in the kernel by the watched cgroup ids (the map
 * `@w` of cgroup v2 ids, `bpf_get_current_cgroup_id()`, which bpftrace calls `cgroup`) AND by
 * `curtask->seccomp.mode == 2` (SECCOMP_MODE_FILTER): the OCI runtime installs the sandbox's
 * seccomp filter just before it executes the agent, so what the runtime itself does in the
 * cgroup beforehand (opening the bundle, mounting the rootfs) is not attributed to the agent,
 * and the agent cannot leave the filter (seccomp filters are inherited and cannot be removed).
 *
 * Opens and refused calls are counted in kernel maps that are never cleared while the agent runs
 * (a print followed by a clear would lose the increments made between the two): refused calls
 * are printed, cumulative, once a second (`interval:s:1`), opens only when the execution is
 * flushed (after the agent's last process is gone). An agent that opens
 * one file a million times costs a map increment each time and one line at the end; only exec
 * and exit are printed per event. Strings the
 * agent controls (paths, argv) are always the last field of a printf line and are read back from
 * bpftrace's JSON output (`-f json`), which escapes quotes, backslashes and control characters.
 * LIMITATION: bpftrace 0.17 strings are at most BPFTRACE_STRLEN bytes (we set 200): a longer
 * path or argument is truncated. openat2 and io_uring opens are not traced.
 */
import { SYSCALLS_X86_64 } from '../policy/syscalls.js';

/** Longest string bpftrace 0.17 copies (its maximum). */
export const STRLEN = 200;
/** argv entries reported per exec (argv[0] is the program). */
export const MAX_ARGV = 4;

/** The x86_64 number of a system call name (SYSCALLS_X86_64 is in number order, with 335..423 unassigned). */
export function syscallNumber(name: string): number | null {
  const i = SYSCALLS_X86_64.indexOf(name);
  if (i < 0) return null;
  return i < 335 ? i : i + 89;
}

/** The name of an x86_64 system call number, or `nr_<n>`. */
export function syscallName(nr: number): string {
  const i = nr < 335 ? nr : nr >= 424 ? nr - 89 : -1;
  return SYSCALLS_X86_64[i] ?? `nr_${nr}`;
}

/** Linux errno numbers (asm-generic/errno-base.h and errno.h) for the results the monitor names. */
const ERRNO: Readonly<Record<number, string>> = {
  1: 'EPERM',
  2: 'ENOENT',
  4: 'EINTR',
  5: 'EIO',
  6: 'ENXIO',
  9: 'EBADF',
  11: 'EAGAIN',
  12: 'ENOMEM',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  17: 'EEXIST',
  18: 'EXDEV',
  19: 'ENODEV',
  20: 'ENOTDIR',
  21: 'EISDIR',
  22: 'EINVAL',
  23: 'ENFILE',
  24: 'EMFILE',
  26: 'ETXTBSY',
  27: 'EFBIG',
  28: 'ENOSPC',
  30: 'EROFS',
  36: 'ENAMETOOLONG',
  38: 'ENOSYS',
  40: 'ELOOP',
  95: 'EOPNOTSUPP',
  122: 'EDQUOT',
};

/** `ok` for 0, else the errno's name (`E<n>` for one not in the table). */
export function resultName(errno: number): string {
  if (errno === 0) return 'ok';
  return ERRNO[errno] ?? `E${errno}`;
}

/** Control operations (the low 3 bits of the ftruncate length; the cgroup id above them). */
export const CONTROL = { watch: 1, flush: 2, unwatch: 3, clear: 4 } as const;
export type ControlOp = (typeof CONTROL)[keyof typeof CONTROL];

/** The ftruncate length that asks the host program for `op` on cgroup `cg` (0 for `clear`). */
export function controlLength(op: ControlOp, cg: number): number {
  if (!Number.isSafeInteger(cg) || cg < 0 || cg >= 2 ** 49) throw new RangeError('cgroup id out of range');
  return cg * 8 + op;
}

/**
 * The host-wide program: one bpftrace for every sandbox of the host (hub.ts). Which cgroups are
 * traced is the map `@w` (cgroup v2 id -> 1), which the program's owner updates live without
 * re-attaching anything: bpftrace 0.17 cannot write a map from user space, so the owner calls
 * `ftruncate(control.fd, cg * 8 + op)` on a file of its own, and the probe on
 * `sys_enter_ftruncate`, filtered by the owner's pid AND that descriptor, does the update and
 * confirms it with `C <op> <cg>` (printed after the map was written: the owner answers "watched"
 * only then). Ops: CONTROL.
 *
 * ARCHITECTURE NOTE: every probe of the agent's actions is filtered in the kernel by `@w[cgroup]`
 * (a registered sandbox) AND `curtask->seccomp.mode == 2` (see the file's first note); every
 * record carries the cgroup id, and the owner routes each record to the execution that registered
 * that id, and to no other. Only the owner's own process can change `@w` (the pid and descriptor
 * filter; an agent runs under seccomp in its own cgroup and never has that pid).
 * Output lines (printf data):
 *   `C <op> <cg>`                        a control operation done
 *   `X <cg> <pid> <ppid> <uid> <path>`   an execve/execveat entered (path last: untrusted)
 *   `A <cg> <pid> <i> <arg>`             argv[i] of that exec, i = 1..MAX_ARGV-1 (arg last: untrusted)
 *   `R <cg> <pid> <ret>`                 the exec returned (0, or -errno)
 *   `Q <cg> <pid> <wait status>`         a process (thread-group leader) exited
 * once a second the cumulative map @d (refused calls: cg, nr, errno -> count) and `T`; on a
 * flush @o (opens: cg, write, errno, path -> count), @n (opens counted: cg -> count), @d, then
 * `C 2 <cg>`.
 */
export function hostProgram(
  control: { readonly pid: number; readonly fd: number },
  o: { readonly refused?: boolean | readonly string[] } = {},
): string {
  if (!Number.isSafeInteger(control.pid) || control.pid <= 0 || !Number.isSafeInteger(control.fd) || control.fd < 0)
    throw new RangeError('the control pid and descriptor must be integers');
  // Cheapest test first: the seccomp mode is one field of the task; @w one hash lookup.
  const f = 'curtask->seccomp.mode == 2 && @w[cgroup]';
  // O_WRONLY|O_RDWR (3), O_CREAT (0100), O_TRUNC (01000): asks to write.
  const write = '(($o.1 & 3) != 0 || ($o.1 & 0x240) != 0)';
  // argv[i] is read only when argv[i-1] was not NULL: past the NULL lies other memory (envp).
  let nested = '';
  for (let i = MAX_ARGV - 1; i >= 1; i--) {
    nested = `$p = *($a + ${i}); if ($p != 0) { printf("A %d %d ${i} %s\\n", cgroup, pid, str($p)); ${nested} }`;
  }
  const argv = `$a = args->argv; if ($a != 0) { $p = *($a); if ($p != 0) { ${nested} } }`;
  const exec = (probe: string): string =>
    `tracepoint:syscalls:sys_enter_${probe} /${f}/ { printf("X %d %d %d %d %s\\n", cgroup, pid, curtask->real_parent->tgid, uid, str(args->filename)); ${argv} }
tracepoint:syscalls:sys_exit_${probe} /${f}/ { printf("R %d %d %d\\n", cgroup, pid, args->ret); }`;
  // One map update at entry (path pointer and flags as a tuple), one count and one delete at exit.
  const open = (probe: string): string =>
    `tracepoint:syscalls:sys_enter_${probe} /${f}/ { @op[tid] = (args->filename, args->flags); }
tracepoint:syscalls:sys_exit_${probe} /@w[cgroup] && @op[tid].0 != 0/ { $o = @op[tid]; @o[cgroup, ${write} ? 1 : 0, args->ret < 0 ? -args->ret : 0, str($o.0)] = count(); @n[cgroup] = count(); delete(@op[tid]); }`;
  // Refused calls: raw_syscalls:sys_exit runs for every system call on the host; the return
  // value is tested first (a register of the context, no helper call), so the program ends at
  // once for the calls that succeeded. One exit tracepoint per refused call instead
  // (`refused: [names]`, a measurement variant) was measured no cheaper within the noise, takes
  // ~3.3 s to attach the 65 of the default profile, and misses what a manifest denies on top of
  // it (docs/monitoring.md, Benchmark).
  const perCall = (names: readonly string[]): string =>
    names
      .map((n) => {
        const nr = syscallNumber(n);
        if (nr === null || !/^[a-z0-9_]+$/.test(n)) throw new RangeError(`not an x86_64 system call: ${n}`);
        return `tracepoint:syscalls:sys_exit_${n} /(args->ret == -1 || args->ret == -38) && ${f}/ { @d[cgroup, ${nr}, -args->ret] = count(); }\n`;
      })
      .join('');
  const refused =
    o.refused === false
      ? ''
      : Array.isArray(o.refused)
        ? perCall(o.refused)
        : `tracepoint:raw_syscalls:sys_exit /(args->ret == -1 || args->ret == -38) && ${f}/ { @d[cgroup, args->id, -args->ret] = count(); }\n`;
  const printD = refused === '' ? '' : 'print(@d); ';
  const clearD = refused === '' ? '' : 'clear(@d); ';
  const ctl = `tracepoint:syscalls:sys_enter_ftruncate /pid == ${control.pid} && args->fd == ${control.fd}/ { $v = args->length; $op = $v & 7; $c = $v >> 3; if ($op == ${CONTROL.watch}) { @w[$c] = 1; } if ($op == ${CONTROL.flush}) { print(@o); print(@n); ${printD}} if ($op == ${CONTROL.unwatch}) { delete(@w[$c]); } if ($op == ${CONTROL.clear}) { clear(@o); clear(@n); ${clearD}clear(@op); } printf("C %d %d\\n", $op, $c); }`;
  return `BEGIN { printf("READY\\n"); }
${ctl}
${exec('execve')}
${exec('execveat')}
tracepoint:sched:sched_process_exit /${f} && pid == tid/ { printf("Q %d %d %d\\n", cgroup, pid, curtask->exit_code); }
${open('openat')}
${open('open')}
${refused}interval:s:1 { ${printD}printf("T\\n"); }
`;
}

/**
 * The system calls a seccomp profile (OCI format) refuses, at least for some arguments: every
 * known name except those allowed unconditionally. An EPERM or ENOSYS return of one of these is
 * reported as `syscall.denied` (the kernel may also refuse them for its own reasons, e.g. mount
 * without CAP_SYS_ADMIN: a refusal either way).
 */
export function refusedByProfile(profile: {
  readonly syscalls: readonly {
    readonly names: readonly string[];
    readonly action: string;
    readonly args?: readonly unknown[];
    readonly errnoRet?: number;
  }[];
}): string[] {
  const allowed = new Set<string>();
  // ENOSYS answers (clone3) are compatibility answers that make libc fall back, not refusals.
  const compat = new Set(profile.syscalls.filter((r) => r.action !== 'SCMP_ACT_ALLOW' && r.errnoRet === 38).flatMap((r) => r.names));
  for (const r of profile.syscalls)
    if (r.action === 'SCMP_ACT_ALLOW' && (r.args === undefined || r.args.length === 0)) for (const n of r.names) allowed.add(n);
  // A later ERRNO rule for the same name (a user profile's narrowing) wins over the allow.
  for (const r of profile.syscalls) if (r.action !== 'SCMP_ACT_ALLOW') for (const n of r.names) allowed.delete(n);
  return SYSCALLS_X86_64.filter((n) => !allowed.has(n) && !compat.has(n));
}

/**
 * The bpftrace program the monitor runs for one execution, and the tables that turn its numbers
 * into names (system calls, errnos). Pure: text in, text out.
 *
 * ARCHITECTURE NOTE: every probe is filtered in the kernel by the execution's cgroup ids (the
 * cgroup v2 id, `bpf_get_current_cgroup_id()`, which bpftrace calls `cgroup`) AND by
 * `curtask->seccomp.mode == 2` (SECCOMP_MODE_FILTER): the OCI runtime installs the sandbox's
 * seccomp filter just before it executes the agent, so what the runtime itself does in the
 * cgroup beforehand (opening the bundle, mounting the rootfs) is not attributed to the agent,
 * and the agent cannot leave the filter (seccomp filters are inherited and cannot be removed).
 *
 * Opens and refused calls are counted in kernel maps that are never cleared while the agent runs
 * (a print followed by a clear would lose the increments made between the two): refused calls
 * are printed, cumulative, once a second (`interval:s:1`), opens
 * only at the end (END, on SIGINT after the agent's last process is gone). An agent that opens
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

/**
 * The program for one execution. `cgroupIds` are cgroup v2 ids (inode numbers of the unified
 * hierarchy's directories). Output lines (printf data):
 *   `X <pid> <ppid> <uid> <path>`   an execve/execveat entered (path last: untrusted)
 *   `A <pid> <i> <arg>`             argv[i] of that exec, i = 1..MAX_ARGV-1 (arg last: untrusted)
 *   `R <pid> <ret>`                 the exec returned (0, or -errno)
 *   `Q <pid> <wait status>`         a process (thread-group leader) exited
 * once a second the cumulative map @d (refused calls: nr, errno -> count) and `T`; at the end
 * @d, @n (opens counted), @o (opens: write, errno, path -> count) and `END`.
 */
export function bpftraceProgram(cgroupIds: readonly number[]): string {
  if (cgroupIds.length === 0 || cgroupIds.some((c) => !Number.isSafeInteger(c) || c <= 0))
    throw new RangeError('cgroup ids must be positive integers');
  const inCg = `(${cgroupIds.map((c) => `cgroup == ${c}`).join(' || ')})`;
  const f = `${inCg} && curtask->seccomp.mode == 2`;
  // O_WRONLY|O_RDWR (3), O_CREAT (0100), O_TRUNC (01000): asks to write.
  const write = '(($o.1 & 3) != 0 || ($o.1 & 0x240) != 0)';
  // argv[i] is read only when argv[i-1] was not NULL: past the NULL lies other memory (envp).
  let nested = '';
  for (let i = MAX_ARGV - 1; i >= 1; i--) {
    nested = `$p = *($a + ${i}); if ($p != 0) { printf("A %d ${i} %s\\n", pid, str($p)); ${nested} }`;
  }
  const argv = `$a = args->argv; if ($a != 0) { $p = *($a); if ($p != 0) { ${nested} } }`;
  const exec = (probe: string): string =>
    `tracepoint:syscalls:sys_enter_${probe} /${f}/ { printf("X %d %d %d %s\\n", pid, curtask->real_parent->tgid, uid, str(args->filename)); ${argv} }
tracepoint:syscalls:sys_exit_${probe} /${f}/ { printf("R %d %d\\n", pid, args->ret); }`;
  // One map update at entry (path pointer and flags as a tuple), one count and one delete at exit.
  const open = (probe: string): string =>
    `tracepoint:syscalls:sys_enter_${probe} /${f}/ { @op[tid] = (args->filename, args->flags); }
tracepoint:syscalls:sys_exit_${probe} /${inCg} && @op[tid].0 != 0/ { $o = @op[tid]; @o[${write} ? 1 : 0, args->ret < 0 ? -args->ret : 0, str($o.0)] = count(); @n = count(); delete(@op[tid]); }`;
  // Refused calls: raw_syscalls:sys_exit runs for every system call on the host, but the filter
  // (cgroup id first) ends it at once for everyone else. One exit tracepoint per refused call
  // would run only for those calls, but bpftrace 0.17 takes ~150 ms to attach each (65 of them:
  // ~10 s before every run), so this is the trade-off chosen (docs/monitoring.md).
  const refused = `tracepoint:raw_syscalls:sys_exit /${f} && (args->ret == -1 || args->ret == -38)/ { @d[args->id, -args->ret] = count(); }\n`;
  const printD = 'print(@d); ';
  const clearD = ' clear(@d);';
  return `BEGIN { printf("READY\\n"); }
${exec('execve')}
${exec('execveat')}
tracepoint:sched:sched_process_exit /${f} && pid == tid/ { printf("Q %d %d\\n", pid, curtask->exit_code); }
${open('openat')}
${open('open')}
${refused}interval:s:1 { ${printD}printf("T\\n"); }
END { ${printD}print(@n); print(@o); printf("END\\n"); clear(@o); clear(@n);${clearD} clear(@op); }
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

/**
 * The default seccomp profile (OCI / Docker JSON format) and the two ways a caller may narrow it:
 * extra denied names (`permissions.syscalls.deny`) and a user profile intersected with it.
 *
 * Pure: no I/O. The user profile arrives as parsed-but-untrusted JSON (`unknown`).
 *
 * ARCHITECTURE NOTE: allowlist style. `defaultAction` is SCMP_ACT_ERRNO with errno 1 (EPERM), so
 * every system call not listed below fails with EPERM, including all of DENIED_ALWAYS. Nothing a
 * manifest or a user profile says can add a system call to the allowlist or loosen a condition:
 * both only remove. Only the x86_64 ABI is listed; libseccomp's bad-arch action (kill) stops
 * 32-bit (int 0x80) and x32 calls, which would otherwise bypass name-based rules.
 * Format: https://github.com/opencontainers/runtime-spec/blob/v1.0.2/config-linux.md#seccomp
 */
import { isKnownSyscall } from '../../policy/syscalls.js';
import { SandboxError } from '../errors.js';

export type SeccompOp =
  'SCMP_CMP_NE' | 'SCMP_CMP_LT' | 'SCMP_CMP_LE' | 'SCMP_CMP_EQ' | 'SCMP_CMP_GE' | 'SCMP_CMP_GT' | 'SCMP_CMP_MASKED_EQ';

export interface SeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: SeccompOp;
}

export interface SeccompRule {
  names: string[];
  action: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
  errnoRet?: number;
  args?: SeccompArg[];
}

export interface SeccompProfile {
  defaultAction: 'SCMP_ACT_ERRNO';
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: SeccompRule[];
}

const EPERM = 1;
const ENOSYS = 38;

/**
 * Denied whatever any profile says (documentation and a test oracle: none of these is in
 * ALLOWED). Includes everything issue 3 lists, plus the usual Docker-default exclusions.
 */
export const DENIED_ALWAYS: readonly string[] = [
  'mount',
  'umount2',
  'pivot_root',
  'chroot',
  'move_mount',
  'open_tree',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'mount_setattr',
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'pidfd_getfd',
  'kcmp',
  'setuid',
  'setgid',
  'setreuid',
  'setregid',
  'setresuid',
  'setresgid',
  'setfsuid',
  'setfsgid',
  'setgroups',
  'kexec_load',
  'kexec_file_load',
  'reboot',
  'swapon',
  'swapoff',
  'bpf',
  'perf_event_open',
  'keyctl',
  'add_key',
  'request_key',
  'unshare',
  'setns',
  'userfaultfd',
  'open_by_handle_at',
  'name_to_handle_at',
  'init_module',
  'finit_module',
  'delete_module',
  'create_module',
  'query_module',
  'get_kernel_syms',
  'iopl',
  'ioperm',
  'acct',
  'quotactl',
  'quotactl_fd',
  'lookup_dcookie',
  'nfsservctl',
  'uselib',
  'ustat',
  'sysfs',
  '_sysctl',
  'settimeofday',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'stime',
  'sethostname',
  'setdomainname',
  'vhangup',
  'syslog',
  'modify_ldt',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  'fanotify_init',
  'vm86',
  'vm86old',
  'afs_syscall',
  'tuxcall',
  'security',
  'putpmsg',
  'getpmsg',
  'create_module',
];

/** Allowed without conditions (x86_64 names; filtered through the kernel table below). */
const ALLOWED: readonly string[] = [
  'accept',
  'accept4',
  'access',
  'alarm',
  'arch_prctl',
  'bind',
  'brk',
  'capget',
  'capset',
  'chdir',
  'chmod',
  'chown',
  'clock_getres',
  'clock_gettime',
  'clock_nanosleep',
  'close',
  'close_range',
  'connect',
  'copy_file_range',
  'creat',
  'dup',
  'dup2',
  'dup3',
  'epoll_create',
  'epoll_create1',
  'epoll_ctl',
  'epoll_ctl_old',
  'epoll_pwait',
  'epoll_pwait2',
  'epoll_wait',
  'epoll_wait_old',
  'eventfd',
  'eventfd2',
  'execve',
  'execveat',
  'exit',
  'exit_group',
  'faccessat',
  'faccessat2',
  'fadvise64',
  'fallocate',
  'fanotify_mark',
  'fchdir',
  'fchmod',
  'fchmodat',
  'fchown',
  'fchownat',
  'fcntl',
  'fdatasync',
  'fgetxattr',
  'flistxattr',
  'flock',
  'fork',
  'fremovexattr',
  'fsetxattr',
  'fstat',
  'fstatfs',
  'fsync',
  'ftruncate',
  'futex',
  'futex_waitv',
  'futimesat',
  'get_mempolicy',
  'get_robust_list',
  'get_thread_area',
  'getcpu',
  'getcwd',
  'getdents',
  'getdents64',
  'getegid',
  'geteuid',
  'getgid',
  'getgroups',
  'getitimer',
  'getpeername',
  'getpgid',
  'getpgrp',
  'getpid',
  'getppid',
  'getpriority',
  'getrandom',
  'getresgid',
  'getresuid',
  'getrlimit',
  'getrusage',
  'getsid',
  'getsockname',
  'getsockopt',
  'gettid',
  'gettimeofday',
  'getuid',
  'getxattr',
  'inotify_add_watch',
  'inotify_init',
  'inotify_init1',
  'inotify_rm_watch',
  'io_cancel',
  'io_destroy',
  'io_getevents',
  'io_pgetevents',
  'io_setup',
  'io_submit',
  'ioctl',
  'ioprio_get',
  'ioprio_set',
  'kill',
  'landlock_add_rule',
  'landlock_create_ruleset',
  'landlock_restrict_self',
  'lchown',
  'lgetxattr',
  'link',
  'linkat',
  'listen',
  'listxattr',
  'llistxattr',
  'lremovexattr',
  'lseek',
  'lsetxattr',
  'lstat',
  'madvise',
  'mbind',
  'membarrier',
  'memfd_create',
  'mincore',
  'mkdir',
  'mkdirat',
  'mknod',
  'mknodat',
  'mlock',
  'mlock2',
  'mlockall',
  'mmap',
  'mprotect',
  'mq_getsetattr',
  'mq_notify',
  'mq_open',
  'mq_timedreceive',
  'mq_timedsend',
  'mq_unlink',
  'mremap',
  'msgctl',
  'msgget',
  'msgrcv',
  'msgsnd',
  'msync',
  'munlock',
  'munlockall',
  'munmap',
  'nanosleep',
  'newfstatat',
  'open',
  'openat',
  'openat2',
  'pause',
  'pidfd_open',
  'pidfd_send_signal',
  'pipe',
  'pipe2',
  'pkey_alloc',
  'pkey_free',
  'pkey_mprotect',
  'poll',
  'ppoll',
  'prctl',
  'pread64',
  'preadv',
  'preadv2',
  'prlimit64',
  'process_mrelease',
  'pselect6',
  'pwrite64',
  'pwritev',
  'pwritev2',
  'read',
  'readahead',
  'readlink',
  'readlinkat',
  'readv',
  'recvfrom',
  'recvmmsg',
  'recvmsg',
  'remap_file_pages',
  'removexattr',
  'rename',
  'renameat',
  'renameat2',
  'restart_syscall',
  'rmdir',
  'rseq',
  'rt_sigaction',
  'rt_sigpending',
  'rt_sigprocmask',
  'rt_sigqueueinfo',
  'rt_sigreturn',
  'rt_sigsuspend',
  'rt_sigtimedwait',
  'rt_tgsigqueueinfo',
  'sched_get_priority_max',
  'sched_get_priority_min',
  'sched_getaffinity',
  'sched_getattr',
  'sched_getparam',
  'sched_getscheduler',
  'sched_rr_get_interval',
  'sched_setaffinity',
  'sched_setattr',
  'sched_setparam',
  'sched_setscheduler',
  'sched_yield',
  'seccomp',
  'select',
  'semctl',
  'semget',
  'semop',
  'semtimedop',
  'sendfile',
  'sendmmsg',
  'sendmsg',
  'sendto',
  'set_mempolicy',
  'set_robust_list',
  'set_thread_area',
  'set_tid_address',
  'setitimer',
  'setpgid',
  'setpriority',
  'setrlimit',
  'setsid',
  'setsockopt',
  'setxattr',
  'shmat',
  'shmctl',
  'shmdt',
  'shmget',
  'shutdown',
  'sigaltstack',
  'signalfd',
  'signalfd4',
  'socketpair',
  'splice',
  'stat',
  'statfs',
  'statx',
  'symlink',
  'symlinkat',
  'sync',
  'sync_file_range',
  'syncfs',
  'sysinfo',
  'tee',
  'tgkill',
  'time',
  'timer_create',
  'timer_delete',
  'timer_getoverrun',
  'timer_gettime',
  'timer_settime',
  'timerfd_create',
  'timerfd_gettime',
  'timerfd_settime',
  'times',
  'tkill',
  'truncate',
  'umask',
  'uname',
  'unlink',
  'unlinkat',
  'utime',
  'utimensat',
  'utimes',
  'vfork',
  'vmsplice',
  'wait4',
  'waitid',
  'write',
  'writev',
];

/** Every namespace-creating clone flag: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (linux/sched.h). */
export const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
/** socket(2) types allowed; SOCK_RAW (3) and SOCK_PACKET (10) are not. Low 4 bits = type (linux/net.h). */
const SOCK_TYPES = [1 /* STREAM */, 2 /* DGRAM */, 5 /* SEQPACKET */];

/** Conditional rules: allowed only when the arguments say so. */
function conditionalRules(): SeccompRule[] {
  const rules: SeccompRule[] = [
    // clone(flags, ...): threads and fork are fine, new namespaces are not (flags & mask == 0).
    {
      names: ['clone'],
      action: 'SCMP_ACT_ALLOW',
      args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
    },
    // personality(): only the values Docker allows (PER_LINUX, PER_LINUX32, UNAME26 variants, query).
    ...[0x0, 0x8, 0x20000, 0x20008, 0xffffffff].map((v): SeccompRule => ({
      names: ['personality'],
      action: 'SCMP_ACT_ALLOW',
      args: [{ index: 0, value: v, op: 'SCMP_CMP_EQ' }],
    })),
  ];
  // socket(domain, type, protocol): only these families and types; never raw or packet sockets.
  for (const family of [AF_UNIX, AF_INET, AF_INET6, AF_NETLINK]) {
    for (const type of SOCK_TYPES) {
      rules.push({
        names: ['socket'],
        action: 'SCMP_ACT_ALLOW',
        args: [
          { index: 0, value: family, op: 'SCMP_CMP_EQ' },
          { index: 1, value: 0xf, valueTwo: type, op: 'SCMP_CMP_MASKED_EQ' },
        ],
      });
    }
  }
  return rules;
}

/**
 * clone3 passes its flags in memory, where seccomp cannot look: answer ENOSYS so libc falls back
 * to clone(2), whose flags are checked above (what Docker does).
 */
const CLONE3_RULE: SeccompRule = { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS };

export interface SeccompOptions {
  /** Extra names to deny (Policy.syscalls.deny). Unknown names are refused. */
  deny?: readonly string[];
  /** A Docker-format profile (parsed JSON, untrusted) to intersect with the default. */
  userProfile?: unknown;
}

/** The default profile, narrowed by `deny` and intersected with `userProfile`. */
export function compileSeccomp(opts: SeccompOptions = {}): SeccompProfile {
  const denied = new Set<string>(DENIED_ALWAYS);
  for (const name of opts.deny ?? []) {
    if (!isKnownSyscall(name)) throw new SandboxError('sandbox.invalid_spec', `syscalls.deny: unknown system call "${name}"`);
    denied.add(name);
  }
  let rules: SeccompRule[] = [{ names: ALLOWED.filter((n) => isKnownSyscall(n)), action: 'SCMP_ACT_ALLOW' }, ...conditionalRules()];
  if (opts.userProfile !== undefined) rules = intersect(rules, parseUserProfile(opts.userProfile));
  const out: SeccompRule[] = [];
  for (const r of rules) {
    const names = r.names.filter((n) => !denied.has(n));
    if (names.length > 0) out.push({ ...r, names });
  }
  if (!denied.has('clone3')) out.push(CLONE3_RULE);
  return { defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: EPERM, architectures: ['SCMP_ARCH_X86_64'], syscalls: out };
}

/** What a user profile says about one syscall name: allowed always, never, or under conditions. */
type Disposition = { kind: 'allow' } | { kind: 'deny' } | { kind: 'cond'; alternatives: SeccompArg[][] };

interface UserProfile {
  defaultAllows: boolean;
  byName: Map<string, Disposition>;
}

const ALLOW_ACTIONS = new Set(['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG']);
const OPS = new Set<string>([
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
]);

function bad(msg: string): never {
  throw new SandboxError('sandbox.seccomp_profile_invalid', `seccomp profile: ${msg}`);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Reads a Docker-format profile (hostile input: every field checked). Rules gated on
 * capabilities the agent does not have (`includes.caps`) or on other architectures are ignored;
 * the agent has no capabilities at all.
 */
export function parseUserProfile(raw: unknown): UserProfile {
  if (!isObj(raw)) bad('not a JSON object');
  const def = raw['defaultAction'];
  if (typeof def !== 'string') bad('defaultAction missing');
  const byName = new Map<string, Disposition>();
  const list = raw['syscalls'] ?? [];
  if (!Array.isArray(list)) bad('syscalls is not an array');
  list.forEach((rule: unknown, i) => {
    if (!isObj(rule)) bad(`syscalls[${i}] is not an object`);
    const names = rule['names'] ?? (typeof rule['name'] === 'string' ? [rule['name']] : undefined);
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) bad(`syscalls[${i}].names is not a list of strings`);
    const action = rule['action'];
    if (typeof action !== 'string') bad(`syscalls[${i}].action missing`);
    const inc = rule['includes'];
    if (isObj(inc)) {
      if (Array.isArray(inc['caps']) && inc['caps'].length > 0) return;
      if (
        Array.isArray(inc['arches']) &&
        inc['arches'].length > 0 &&
        !inc['arches'].some((a) => a === 'amd64' || a === 'x86_64' || a === 'SCMP_ARCH_X86_64')
      )
        return;
    }
    const exc = rule['excludes'];
    if (isObj(exc) && Array.isArray(exc['arches']) && exc['arches'].some((a) => a === 'amd64' || a === 'x86_64')) return;
    const argsRaw = rule['args'] ?? [];
    if (!Array.isArray(argsRaw)) bad(`syscalls[${i}].args is not an array`);
    const args: SeccompArg[] = argsRaw.map((a: unknown, j) => {
      if (!isObj(a)) bad(`syscalls[${i}].args[${j}] is not an object`);
      const { index, value, valueTwo, op } = a;
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > 5) bad(`syscalls[${i}].args[${j}].index`);
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) bad(`syscalls[${i}].args[${j}].value`);
      if (valueTwo !== undefined && (typeof valueTwo !== 'number' || !Number.isSafeInteger(valueTwo) || valueTwo < 0))
        bad(`syscalls[${i}].args[${j}].valueTwo`);
      if (typeof op !== 'string' || !OPS.has(op)) bad(`syscalls[${i}].args[${j}].op`);
      return {
        index,
        value,
        op: op as SeccompOp,
        ...(valueTwo !== undefined && valueTwo !== 0 ? { valueTwo } : op === 'SCMP_CMP_MASKED_EQ' ? { valueTwo: 0 } : {}),
      };
    });
    for (const name of names as string[]) {
      const prev = byName.get(name);
      if (!ALLOW_ACTIONS.has(action)) {
        // A deny rule wins over any allow rule for the same name (conservative reading).
        byName.set(name, { kind: 'deny' });
        continue;
      }
      if (prev?.kind === 'deny' || prev?.kind === 'allow') continue;
      if (args.length === 0) byName.set(name, { kind: 'allow' });
      else byName.set(name, { kind: 'cond', alternatives: [...(prev?.alternatives ?? []), args] });
    }
  });
  return { defaultAllows: ALLOW_ACTIONS.has(def), byName };
}

/** AND of two argument lists, or null when they constrain the same argument differently. */
function mergeArgs(a: SeccompArg[], b: SeccompArg[]): SeccompArg[] | null {
  const out = [...a];
  for (const x of b) {
    const same = out.find((y) => y.index === x.index);
    if (same === undefined) out.push(x);
    else if (same.op !== x.op || same.value !== x.value || (same.valueTwo ?? 0) !== (x.valueTwo ?? 0)) return null;
  }
  return out;
}

/**
 * Intersection: a call passes the result only when it passes both profiles.
 * LIMITATION: when both profiles constrain the same argument of the same call with different
 * comparisons, the pair is dropped (denied) rather than combined: seccomp rules are ORs of ANDs
 * and libseccomp refuses two comparisons on one argument in one rule. Fail secure.
 */
function intersect(ours: SeccompRule[], user: UserProfile): SeccompRule[] {
  const out: SeccompRule[] = [];
  const disposition = (n: string): Disposition => user.byName.get(n) ?? (user.defaultAllows ? { kind: 'allow' } : { kind: 'deny' });
  for (const rule of ours) {
    if (rule.action !== 'SCMP_ACT_ALLOW') {
      out.push(rule);
      continue;
    }
    const keep: string[] = [];
    for (const name of rule.names) {
      const d = disposition(name);
      if (d.kind === 'allow') keep.push(name);
      else if (d.kind === 'cond') {
        for (const alt of d.alternatives) {
          const merged = mergeArgs(rule.args ?? [], alt);
          if (merged !== null) out.push({ names: [name], action: 'SCMP_ACT_ALLOW', args: merged });
        }
      }
    }
    if (keep.length > 0) out.push({ ...rule, names: keep });
  }
  return out;
}

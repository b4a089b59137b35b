/**
 * The spec compiler: normalized Policy + run options -> OCI runtime bundle (config.json object,
 * rootfs skeleton plan). `aegis run --dry-run` prints its output.
 *
 * Pure: no fs, net, child_process, environment or clock. Everything host-specific (resolved code
 * dir, resolved volumes, the image listing, cgroup path, id mapping) arrives in `CompileOptions`.
 * Convert, then validate (validate.ts), then execute (run.ts).
 *
 * ARCHITECTURE NOTE: what the bundle enforces, for every runtime
 * - new pid, mount, ipc, uts, cgroup and network namespaces (a fresh network namespace has only
 *   loopback) and a user namespace: container uid/gid 0..65535 map to an unprivileged host range
 *   (`idMap`), the agent runs as AGENT_UID:AGENT_GID, with no capabilities (all five sets empty)
 *   and noNewPrivileges;
 * - read-only root made of the image (see rootfs.ts), code dir read-only at /agent, tmpfs /tmp,
 *   declared fs paths as tmpfs (read-only for read grants) unless a granted volume covers them,
 *   no other host path;
 * - Docker's masked and read-only /proc and /sys paths, plus AEGIS_MASKED_PATHS (kernel command
 *   line, boot id, block devices, DMI); the seccomp profile from seccomp.ts;
 * - on crun and runc, a user namespace AEGIS made beforehand and owned by a dedicated host uid
 *   (`userns`, joined by path; see src/sandbox/userns.ts), so the kernel's per-user counters
 *   (inotify, POSIX message queues, pending signals, locked shm, ...) are charged to that uid and
 *   not to host root; and low per-sandbox rlimits for the counters the kernel checks against
 *   rlimits (SANDBOX_RLIMITS).
 * cgroup limits (memory, cpu, pids) are NOT in the bundle: AEGIS sets them on the parent cgroup it
 * owns (cgroups/), so that OOM kills and usage can be read after the runtime removed its own cgroup.
 */
import { isWithin } from '../../policy/paths.js';
import type { Isolation, Policy } from '../../policy/types.js';
import { SandboxError } from '../errors.js';
import type { OciConfig, OciMount } from './oci.js';
import { dirsToList, planRootfs, type ImageListing, type RootfsPlan } from './rootfs.js';
import { compileSeccomp } from './seccomp.js';

/** The agent's identity inside the sandbox. */
export const AGENT_UID = 1000;
export const AGENT_GID = 1000;
/** Default host id range for the user namespace (container 0 -> host 100000, 65536 ids). */
export const DEFAULT_ID_MAP = { hostBase: 100_000, size: 65_536 } as const;
export const DEFAULT_TMP_BYTES = 64 * 1024 * 1024;
export const CODE_MOUNT = '/agent';
/** The agent's scratch space: a writable tmpfs, emptied with the run. */
export const TMP_MOUNT = '/tmp';
/** Where the gateway's CA bundle is bind-mounted (over Debian's bundle) when it terminates TLS. */
export const SANDBOX_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/**
 * Owners of the sandboxes' user namespaces: host uid USERNS_OWNER_BASE + the pid of the process
 * that created the namespace (src/sandbox/userns.ts). Live pids are unique, so concurrent
 * sandboxes never share an owner. The range [base, base + PID_MAX_LIMIT) must belong to no host
 * account and no /etc/subuid range.
 */
export const USERNS_OWNER_BASE = 0x7000_0000;
/** Linux's largest possible pid_max (PID_MAX_LIMIT on 64-bit, include/linux/threads.h). */
export const PID_MAX_LIMIT = 4_194_304;

/**
 * Per-process limits of the agent (lowering only: AEGIS has no CAP_SYS_RESOURCE to raise).
 * ARCHITECTURE NOTE: RLIMIT_MSGQUEUE (mq_open), RLIMIT_SIGPENDING (queued signals) and
 * RLIMIT_MEMLOCK (SHM_LOCK, mlock) are checked by the kernel against per-user counters of the
 * sandbox's user namespace; low values bound what one sandbox can hold. RLIMIT_NPROC is left
 * alone: the pids cgroup bounds the processes, and gVisor does not enforce it.
 */
export const SANDBOX_RLIMITS: readonly { readonly type: string; readonly hard: number; readonly soft: number }[] = [
  { type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 },
  { type: 'RLIMIT_CORE', hard: 0, soft: 0 },
  { type: 'RLIMIT_MSGQUEUE', hard: 256 * 1024, soft: 256 * 1024 },
  { type: 'RLIMIT_SIGPENDING', hard: 1024, soft: 1024 },
  { type: 'RLIMIT_MEMLOCK', hard: 64 * 1024, soft: 64 * 1024 },
];

/** A user namespace made for the sandbox (src/sandbox/userns.ts), joined by the runtime. */
export interface UsernsOption {
  /** `/proc/<holder pid>/ns/user`. */
  readonly path: string;
  /** The namespace's owner: USERNS_OWNER_BASE + holder pid. */
  readonly ownerUid: number;
}

/** The namespace path and owner for a holder pid. */
export function usernsFor(holderPid: number): UsernsOption {
  return { path: `/proc/${holderPid}/ns/user`, ownerUid: USERNS_OWNER_BASE + holderPid };
}

/** Docker's defaults (moby/oci/defaults.go). */
export const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];
/**
 * Masked in addition to Docker's: host facts an agent has no use for. The kernel command line
 * (boot parameters, on some hosts the hypervisor's arguments), the boot id (a stable host
 * identifier across sandboxes), the host's block devices and their I/O counters, and the
 * firmware's DMI data (vendor, product, serial). A masked file reads as empty, a masked
 * directory as an empty read-only tmpfs; a path missing on the host is skipped by the runtime.
 * Python and Node start without them.
 * LIMITATION: /proc/self/mountinfo still shows, in its root field, where each bind mount's
 * source lives on its host filesystem (docs/sandbox.md, "What the agent can see of the host").
 */
export const AEGIS_MASKED_PATHS = [
  '/proc/cmdline',
  '/proc/sys/kernel/random/boot_id',
  '/proc/partitions',
  '/proc/diskstats',
  '/sys/block',
  '/sys/class/block',
  '/sys/dev/block',
  '/sys/devices/virtual/block',
  '/sys/devices/virtual/dmi',
  '/sys/class/dmi',
];

export type NetworkOption =
  | { kind: 'none' }
  /**
   * Join `path` (the egress gateway's namespace); `resolvConf`, when given, is bind-mounted
   * read-only at /etc/resolv.conf, and `caBundle` at SANDBOX_CA_BUNDLE (the image must have
   * that file: Debian's ca-certificates).
   */
  | { kind: 'netns'; path: string; resolvConf?: string; caBundle?: string };

export interface ResolvedVolume {
  /** Host directory, already resolved (realpath) and checked by the caller. */
  readonly host: string;
  /** Normalized absolute sandbox path. */
  readonly sandbox: string;
  readonly mode: 'ro' | 'rw';
  /** rw only: the size of the filesystem the volume lives on during the run (see volumes.ts). */
  readonly sizeBytes?: number;
}

export interface CompileOptions {
  /** Host path of the image's root filesystem (never written). */
  readonly imageRootfs: string;
  /** What the image holds along the mount targets' paths (see `mountTargets`). */
  readonly imageListing: ImageListing;
  /** Host path of the agent's code directory, resolved and checked. */
  readonly codeDir: string;
  readonly volumes?: readonly ResolvedVolume[];
  readonly network?: NetworkOption;
  /** Added to the agent's environment after the manifest's (e.g. proxy variables). */
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** Appended to the entrypoint (`aegis run agent.yaml -- args`). */
  readonly extraArgs?: readonly string[];
  /**
   * cgroup path handed to the runtime (a child of the cgroup AEGIS owns), or null when the
   * runtime does not manage cgroups and is started inside the run's cgroup instead.
   */
  readonly cgroupsPath: string | null;
  /** Docker-format profile (parsed JSON, untrusted) to intersect with the default. */
  readonly userSeccompProfile?: unknown;
  readonly isolation: Isolation;
  readonly idMap?: { readonly hostBase: number; readonly size: number };
  /**
   * Join this user namespace (made and mapped with `idMap` by AEGIS) instead of letting the
   * runtime create one as root. Required for crun and runc (validate.ts); gVisor creates its own.
   */
  readonly userns?: UsernsOption;
  readonly tmpSizeBytes?: number;
  readonly hostname?: string;
}

export interface CompiledBundle {
  readonly config: OciConfig;
  /** Directories, empty files and links to create under `<bundle>/rootfs` before starting. */
  readonly rootfs: RootfsPlan;
}

/** Paths a declared grant may not cover or sit in: the root itself and the kernel filesystems. */
const FORBIDDEN_GRANTS = ['/proc', '/dev', '/sys'];

/** Declared fs paths, as tmpfs mounts unless a volume takes their place. */
function declaredMounts(policy: Policy, volumes: readonly ResolvedVolume[]): { path: string; mode: 'ro' | 'rw' }[] {
  for (const p of [...policy.fs.read, ...policy.fs.write]) {
    if (p === '/' || FORBIDDEN_GRANTS.some((f) => p === f || p.startsWith(f + '/'))) {
      throw new SandboxError(
        'sandbox.invalid_spec',
        `permissions.fs path ${p} cannot be granted: the sandbox owns /, /proc, /dev and /sys`,
      );
    }
  }
  if (policy.fs.write.includes(CODE_MOUNT)) {
    throw new SandboxError(
      'sandbox.invalid_spec',
      `permissions.fs.write cannot grant ${CODE_MOUNT}: the agent's code is mounted there read-only`,
    );
  }
  const out: { path: string; mode: 'ro' | 'rw' }[] = [];
  // Already provided: /tmp (a writable tmpfs) and /agent (the code, read-only).
  const provided = new Set([...volumes.map((v) => v.sandbox), TMP_MOUNT, CODE_MOUNT]);
  for (const p of policy.fs.write) if (!provided.has(p)) out.push({ path: p, mode: 'rw' });
  for (const p of policy.fs.read) if (!provided.has(p) && !policy.fs.write.includes(p)) out.push({ path: p, mode: 'ro' });
  return out;
}

const SYSTEM_TARGETS = ['/proc', '/dev', '/sys', TMP_MOUNT, CODE_MOUNT];

/**
 * Every mount target the bundle will have, and the subset that sits directly on the root
 * skeleton (not nested in another mount). The caller lists the image along the latter
 * (`dirsToList`) before calling `compileBundle`.
 */
export function mountTargets(policy: Policy, volumes: readonly ResolvedVolume[] = []): { all: string[]; top: string[] } {
  const all = [...SYSTEM_TARGETS, ...declaredMounts(policy, volumes).map((m) => m.path), ...volumes.map((v) => v.sandbox)];
  const top = all.filter((t) => !all.some((o) => o !== t && isWithin(t, o)));
  return { all, top: [...new Set(top)].sort() };
}

export { dirsToList };

function tmpfs(destination: string, options: string[]): OciMount {
  return { destination, type: 'tmpfs', source: 'tmpfs', options };
}

function bind(destination: string, source: string, mode: 'ro' | 'rw'): OciMount {
  return { destination, type: 'bind', source, options: ['rbind', mode, 'nosuid', 'nodev'] };
}

function depth(p: string): number {
  return p === '/' ? 0 : p.split('/').length - 1;
}

/** Compiles the bundle. Throws SandboxError('sandbox.invalid_spec') when it cannot be made safe. */
export function compileBundle(policy: Policy, opts: CompileOptions): CompiledBundle {
  const volumes = opts.volumes ?? [];
  const { top } = mountTargets(policy, volumes);
  // runc gives a tmpfs the mode of the directory it covers (ignoring `mode=`): make the
  // skeleton's mountpoints of writable tmpfs world-writable with the sticky bit, like /tmp.
  const writableTmpfs = new Set([
    TMP_MOUNT,
    ...declaredMounts(policy, volumes)
      .filter((m) => m.mode === 'rw')
      .map((m) => m.path),
  ]);
  const planned = planRootfs(top, opts.imageListing);
  const rootfs: RootfsPlan = {
    ...planned,
    skeleton: planned.skeleton.map((e) => (e.kind === 'dir' && writableTmpfs.has(e.path) ? { ...e, mode: 0o1777 } : e)),
  };
  const idMap = opts.idMap ?? DEFAULT_ID_MAP;
  const tmpBytes = opts.tmpSizeBytes ?? DEFAULT_TMP_BYTES;
  const network = opts.network ?? { kind: 'none' };

  const system: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    tmpfs('/dev', ['nosuid', 'strictatime', 'mode=755', 'size=65536k']),
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
    },
    tmpfs('/dev/shm', ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k']),
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // sysfs can only be mounted from a network namespace the sandbox's user namespace owns
    // (a fresh one). A joined namespace (egress gateway) belongs to the host's user namespace:
    // runc then fails and crun falls back to bind-mounting the host's /sys, so /sys is an empty
    // read-only tmpfs instead. LIMITATION: programs that read /sys see nothing there.
    network.kind === 'none'
      ? { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] }
      : tmpfs('/sys', ['nosuid', 'noexec', 'nodev', 'ro', 'mode=0555', 'size=4096']),
  ];
  const image = rootfs.binds.map((p) => bind(p, opts.imageRootfs + p, 'ro'));
  const user: OciMount[] = [
    tmpfs(TMP_MOUNT, ['nosuid', 'nodev', 'mode=1777', `size=${tmpBytes}`]),
    bind(CODE_MOUNT, opts.codeDir, 'ro'),
    ...declaredMounts(policy, volumes).map((m) =>
      tmpfs(
        m.path,
        m.mode === 'rw' ? ['nosuid', 'nodev', 'mode=1777', `size=${tmpBytes}`] : ['nosuid', 'nodev', 'mode=0555', 'size=4096', 'ro'],
      ),
    ),
    ...volumes.map((v) => bind(v.sandbox, v.host, v.mode)),
    // The gateway's resolver: images ship an empty resolv.conf (glibc would ask 127.0.0.1).
    ...(network.kind === 'netns' && network.resolvConf !== undefined ? [bind('/etc/resolv.conf', network.resolvConf, 'ro')] : []),
    // The gateway's CA bundle (image bundle + the execution's CA) when it terminates TLS (issue 12).
    ...(network.kind === 'netns' && network.caBundle !== undefined ? [bind(SANDBOX_CA_BUNDLE, network.caBundle, 'ro')] : []),
  ].sort((a, b) => depth(a.destination) - depth(b.destination));

  const env = new Map<string, string>([
    ['PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    ['HOME', '/tmp'],
    ['LANG', 'C.UTF-8'],
    ['PYTHONDONTWRITEBYTECODE', '1'],
  ]);
  for (const [k, v] of Object.entries(policy.agent.env)) env.set(k, v);
  for (const [k, v] of Object.entries(opts.extraEnv ?? {})) env.set(k, v);

  const namespaces: OciConfig['linux']['namespaces'] = [
    { type: 'pid' },
    { type: 'mount' },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'cgroup' },
    network.kind === 'netns' ? { type: 'network', path: network.path } : { type: 'network' },
    // The mappings below stay in the config: runc derives the host ids of container root
    // from them even when it joins the namespace (AEGIS wrote the same mappings into it).
    opts.userns !== undefined ? { type: 'user', path: opts.userns.path } : { type: 'user' },
  ];

  const config: OciConfig = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: AGENT_UID, gid: AGENT_GID, additionalGids: [] },
      args: [...policy.agent.entrypoint, ...(opts.extraArgs ?? [])],
      env: [...env].map(([k, v]) => `${k}=${v}`),
      cwd: CODE_MOUNT,
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: SANDBOX_RLIMITS.map((r) => ({ ...r })),
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: opts.hostname ?? 'aegis',
    mounts: [...system, ...image, ...user],
    linux: {
      uidMappings: [{ containerID: 0, hostID: idMap.hostBase, size: idMap.size }],
      gidMappings: [{ containerID: 0, hostID: idMap.hostBase, size: idMap.size }],
      namespaces,
      ...(opts.cgroupsPath !== null ? { cgroupsPath: opts.cgroupsPath } : {}),
      seccomp: compileSeccomp({ deny: policy.syscalls.deny, userProfile: opts.userSeccompProfile }),
      maskedPaths: [...MASKED_PATHS, ...AEGIS_MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
    annotations: {
      'org.aegis.agent': policy.agent.name,
      'org.aegis.image': policy.agent.runtime.ref,
      'org.aegis.isolation': opts.isolation,
      'org.aegis.limits.memory_bytes': String(policy.limits.memoryBytes),
      'org.aegis.limits.cpu': `${policy.limits.cpu.quotaUs}/${policy.limits.cpu.periodUs}`,
      'org.aegis.limits.pids': String(policy.limits.pids),
      'org.aegis.limits.timeout_ms': String(policy.limits.timeoutMs),
      ...(opts.userns !== undefined ? { 'org.aegis.userns_owner': String(opts.userns.ownerUid) } : {}),
    },
  };
  if (policy.agent.entrypoint.length === 0) throw new SandboxError('sandbox.invalid_spec', 'agent.entrypoint is empty');
  return { config, rootfs };
}

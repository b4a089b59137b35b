/**
 * The Docker backend's mapping: a compiled, adapted and validated OCI config -> the engine's
 * container-create options. Pure (no I/O, no clock): the same bundle the OCI runtimes run, each
 * property carried over to the option that enforces it, and a SandboxError
 * (`sandbox.docker_refused`) for anything the engine cannot express, so a run is refused rather
 * than run weaker.
 *
 * ARCHITECTURE NOTE: what each property becomes
 * - read-only root: `ReadonlyRootfs` (the root is the imported image itself, so the image
 *   directory binds of the OCI bundle are not needed: they are checked to be exactly that);
 * - capabilities: `CapDrop: ['ALL']`, nothing added; `Privileged: false`, always;
 * - no-new-privileges and AEGIS's seccomp profile: `SecurityOpt` (the very JSON of the bundle);
 * - user: the unprivileged host ids 101000:101000 (the engine cannot join a user namespace per
 *   container; see drivers/docker.ts), never 0;
 * - memory = memory + swap, CFS quota and period, pids: the binding limits are those of the
 *   run's cgroup AEGIS owns, made the container's parent (`CgroupParent`), exactly as for the OCI
 *   runtimes: the container's own cgroup is removed by the engine at its exit, its parent keeps
 *   the counters AEGIS reports (OOM, throttling, pids limit hits). The engine's own `Memory` =
 *   `MemorySwap` (equal) and `PidsLimit` (one task above, so the parent binds and counts) are
 *   set too, as a backstop. The CFS quota is the parent's only: the kernel refuses a child quota
 *   above its parent's (EINVAL), and an equal one throttles the child, whose counters vanish
 *   with it; the parent's quota bounds every task below it all the same;
 * - rlimits: `Ulimits` (lowering only, as in the bundle);
 * - masked and read-only /proc and /sys paths: `MaskedPaths`, `ReadonlyPaths` (AEGIS's list);
 * - tmpfs mounts (with their size and mode): `Tmpfs`; binds (code dir, volumes, resolv.conf):
 *   `Mounts` of type bind, read-only where the bundle says so, private propagation.
 *   The engine has no nosuid/nodev for binds: nosuid is moot under no-new-privileges (execve
 *   never raises privileges) and device nodes are refused by the engine's device cgroup
 *   (only null, zero, full, random, urandom, tty, console, pts are allowed);
 * - namespaces: pid, ipc, uts, mount and cgroup are the container's own (`IpcMode: 'private'`,
 *   `CgroupnsMode: 'private'`); the network is `none` or the holder container's (which sits in
 *   the egress gateway's namespace, see engine.ts);
 * - the agent's output: attached streams only (`LogConfig: none`: nothing written by the engine).
 *
 * ARCHITECTURE NOTE (remote engine, `engine.kind: 'remote'`): an engine reached only over its API
 * (in a VM, Docker Desktop, tcp://) has none of this host's cgroups or paths. Then the limits are
 * the engine's HostConfig alone, each exact: `Memory` = `MemorySwap` (no swap), `CpuPeriod` and
 * `CpuQuota`, `PidsLimit`; no `CgroupParent`. Each bind becomes an engine volume AEGIS filled
 * through the archive API (remote.ts), mounted with the bundle's mode and `NoCopy` (the image's
 * files at the target stay hidden, as under a bind); a bind that is neither a volume nor a file
 * the engine or the run's image provides is refused.
 */
import type Docker from 'dockerode';
import { SandboxError } from '../errors.js';
import type { OciConfig, OciMount } from '../spec/oci.js';

/** Labels on everything AEGIS makes in an engine: the run, and who owns it (pid + start time). */
export const LABEL_RUN = 'org.aegis.run';
export const LABEL_OWNER_PID = 'org.aegis.owner-pid';
export const LABEL_OWNER_START = 'org.aegis.owner-start';
export const LABEL_ROLE = 'org.aegis.role';
export const LABEL_IMAGE_DIGEST = 'org.aegis.image.digest';
/**
 * The AEGIS host that owns an object (a random id kept in its AEGIS_HOME): on an engine shared by
 * several hosts, a host sweeps only its own dead runs (pids mean something only where they ran).
 */
export const LABEL_OWNER_HOST = 'org.aegis.owner-host';

/** The owner labels of `owner` (pid, start time, and host when known). */
function ownerLabels(owner: { readonly pid: number; readonly startTime: string; readonly host?: string }): Record<string, string> {
  return {
    [LABEL_OWNER_PID]: String(owner.pid),
    [LABEL_OWNER_START]: owner.startTime,
    ...(owner.host !== undefined ? { [LABEL_OWNER_HOST]: owner.host } : {}),
  };
}

/** The mounts the engine makes itself (with Docker's options); the bundle's must match these kinds. */
const ENGINE_MOUNTS: Readonly<Record<string, string>> = {
  '/proc': 'proc',
  '/dev': 'tmpfs',
  '/dev/pts': 'devpts',
  '/dev/shm': 'tmpfs',
  '/dev/mqueue': 'mqueue',
};

const TMPFS_OPTIONS = /^(ro|rw|nosuid|nodev|noexec|strictatime|mode=[0-7]{3,4}|size=[0-9]+[kmg]?)$/;

export interface ContainerFacts {
  readonly id: string;
  /** The engine's image id (sha256:...), checked against AEGIS's store before the run. */
  readonly image: string;
  /** Host path of the image's root filesystem in the bundle (its binds are the image itself). */
  readonly imageRootfs: string;
  /**
   * The run's cgroup (AEGIS's, with the limits) under which the engine makes the container's;
   * undefined for a remote engine (its own cgroups, with the limits in HostConfig).
   */
  readonly cgroupParent?: string;
  /**
   * How the bundle's host paths reach the container: `local` binds them (the engine shares this
   * host's filesystem); `remote` maps each bind destination to an engine volume AEGIS filled
   * through the archive API (remote.ts), or to a file the run's image or the engine provides
   * (`provided`: the execution CA bundle committed into a per-run image, /etc/resolv.conf from
   * the gateway container); any other bind is refused.
   */
  readonly engine?: EngineMounts;
  /** 'none', or the holder container whose network namespace the agent joins. */
  readonly network: { readonly kind: 'none' } | { readonly kind: 'container'; readonly holder: string };
  readonly limits: { readonly memoryBytes: number; readonly cpuQuotaUs: number; readonly cpuPeriodUs: number; readonly pids: number };
  readonly owner: { readonly pid: number; readonly startTime: string; readonly host?: string };
}

/** A volume mount that does not copy the image's files at the target into the volume (@types wants every field). */
const NO_COPY = { NoCopy: true } as Docker.MountSettings['VolumeOptions'];

export type EngineMounts =
  | { readonly kind: 'local' }
  | { readonly kind: 'remote'; readonly volumes: Readonly<Record<string, string>>; readonly provided: readonly string[] };

function refuse(what: string): never {
  throw new SandboxError('sandbox.docker_refused', `the Docker engine cannot express ${what}: refused rather than run weaker`);
}

function sizeOf(opts: readonly string[]): number | undefined {
  const s = opts.find((o) => o.startsWith('size='))?.slice(5);
  if (s === undefined) return undefined;
  const m = /^([0-9]+)([kmg]?)$/.exec(s);
  if (m === null) return undefined;
  return Number(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[m[2] ?? '']!;
}

/** The create options for the agent's container (throws `sandbox.docker_refused`). */
export function containerOptions(
  config: OciConfig,
  f: ContainerFacts,
): Docker.ContainerCreateOptions & { HostConfig: { CgroupnsMode: 'private' } } {
  const p = config.process;
  const caps = p.capabilities;
  if ([caps.bounding, caps.effective, caps.inheritable, caps.permitted, caps.ambient].some((s) => s.length > 0))
    refuse('capabilities other than none');
  if (!p.noNewPrivileges) refuse('a process without no-new-privileges');
  if (!config.root.readonly) refuse('a writable root');
  if (p.user.uid === 0 || p.user.gid === 0 || p.user.additionalGids.length > 0) refuse('an agent running as root or with extra groups');
  if (p.terminal) refuse('a terminal');
  const ns = config.linux.namespaces;
  if (ns.some((n) => n.type === 'user')) refuse('a user namespace of its own per container');
  if (ns.some((n) => n.type !== 'network' && n.path !== undefined)) refuse('joining a namespace other than the network');
  for (const t of ['pid', 'mount', 'ipc', 'uts', 'cgroup', 'network'] as const)
    if (!ns.some((n) => n.type === t)) refuse(`a run without its own ${t} namespace`);
  const joinsNet = ns.some((n) => n.type === 'network' && n.path !== undefined);
  const delivery: EngineMounts = f.engine ?? { kind: 'local' };
  if (delivery.kind === 'local' && f.cgroupParent === undefined) refuse('a local run without the cgroup that holds its limits');
  const { memoryBytes, cpuQuotaUs, cpuPeriodUs, pids } = f.limits;
  if (![memoryBytes, pids, cpuPeriodUs].every((n) => Number.isSafeInteger(n) && n > 0) || !Number.isSafeInteger(cpuQuotaUs))
    refuse('these limits');
  if (joinsNet !== (f.network.kind === 'container')) refuse('this network set-up (a namespace path needs a holder container)');

  const tmpfs: Record<string, string> = {};
  const binds: Docker.MountSettings[] = [];
  let shmSize: number | undefined;
  for (const m of config.mounts) {
    const engine = ENGINE_MOUNTS[m.destination];
    if (engine !== undefined) {
      if (m.type !== engine) refuse(`${m.type} at ${m.destination}`);
      if (m.destination === '/dev/shm') shmSize = sizeOf(m.options);
      continue;
    }
    if (m.destination === '/sys') {
      // sysfs (the engine's, read-only) or an empty read-only tmpfs (joined network namespace).
      if (m.type === 'sysfs' && m.options.includes('ro')) continue;
      if (m.type === 'tmpfs') {
        tmpfs[m.destination] = tmpfsOptions(m);
        continue;
      }
      refuse(`${m.type} at /sys`);
    }
    if (m.type === 'tmpfs') tmpfs[m.destination] = tmpfsOptions(m);
    else if (m.type === 'bind') {
      if (!m.options.includes('rbind') && !m.options.includes('bind')) refuse(`bind options ${m.options.join(',')}`);
      const ro = m.options.includes('ro');
      if (!ro && !m.options.includes('rw')) refuse(`a bind mount of ${m.destination} without an explicit mode`);
      // The image's own directories: the engine's root is the imported image already.
      if (ro && m.source === f.imageRootfs + m.destination) continue;
      if (delivery.kind === 'remote') {
        const volume = delivery.volumes[m.destination];
        if (volume !== undefined)
          binds.push({ Type: 'volume', Source: volume, Target: m.destination, ReadOnly: ro, VolumeOptions: NO_COPY });
        else if (!ro || !delivery.provided.includes(m.destination))
          refuse(`a bind of the host path ${m.source} at ${m.destination} (the engine is reached only over its API)`);
        continue;
      }
      binds.push({ Type: 'bind', Source: m.source, Target: m.destination, ReadOnly: ro, BindOptions: { Propagation: 'rprivate' } });
    } else refuse(`a ${m.type} mount at ${m.destination}`);
  }

  const ulimits = p.rlimits.map((r) => {
    const name = r.type.replace(/^RLIMIT_/, '').toLowerCase();
    if (!/^[a-z]+$/.test(name)) refuse(`rlimit ${r.type}`);
    return { Name: name, Soft: r.soft, Hard: r.hard };
  });
  const labels = engineLabels(f.id, 'agent', f.owner);
  const hostConfig = {
    CgroupnsMode: 'private' as const,
  };
  return {
    name: f.id,
    Image: f.image,
    Entrypoint: [p.args[0] ?? refuse('an empty entrypoint')],
    Cmd: p.args.slice(1),
    Env: p.env,
    WorkingDir: p.cwd,
    User: `${p.user.uid}:${p.user.gid}`,
    // Joining the holder's network, the engine takes the holder's hostname (it refuses both).
    ...(f.network.kind === 'none' ? { Hostname: config.hostname } : {}),
    Labels: labels,
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: true,
    StdinOnce: true,
    Tty: false,
    HostConfig: {
      ...hostConfig,
      Privileged: false,
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      CapAdd: [],
      SecurityOpt: ['no-new-privileges:true', `seccomp=${JSON.stringify(config.linux.seccomp)}`],
      Memory: memoryBytes,
      MemorySwap: memoryBytes,
      ...(delivery.kind === 'local'
        ? { PidsLimit: pids + 1, CgroupParent: f.cgroupParent }
        : // Remote: the engine's own cgroup is the only one, so it carries every limit exactly.
          { PidsLimit: pids, ...(cpuQuotaUs > 0 ? { CpuPeriod: cpuPeriodUs, CpuQuota: cpuQuotaUs } : {}), OomKillDisable: false }),
      IpcMode: 'private',
      NetworkMode: f.network.kind === 'none' ? 'none' : `container:${f.network.holder}`,
      Mounts: binds,
      Tmpfs: tmpfs,
      ...(shmSize !== undefined ? { ShmSize: shmSize } : {}),
      // The engine also mounts the container's cgroups read-only at /sys/fs/cgroup (the OCI
      // bundle has no such mount): masked, so the agent sees what it sees under crun.
      MaskedPaths: [...config.linux.maskedPaths, '/sys/fs/cgroup'],
      ReadonlyPaths: [...config.linux.readonlyPaths],
      Ulimits: ulimits,
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      Init: false,
      RestartPolicy: { Name: 'no' },
    },
  };
}

function tmpfsOptions(m: OciMount): string {
  const bad = m.options.filter((o) => !TMPFS_OPTIONS.test(o));
  if (bad.length > 0) refuse(`tmpfs options ${bad.join(',')} at ${m.destination}`);
  if (sizeOf(m.options) === undefined) refuse(`a tmpfs without a size at ${m.destination}`);
  // The engine adds noexec to every tmpfs unless told `exec`: the bundle's choice, as crun applies it.
  return [...m.options, ...(m.options.includes('noexec') ? [] : ['exec'])].join(',');
}

/**
 * The holder container: AEGIS's static netns-holder program as init (root with CAP_SYS_ADMIN
 * only, to call setns once, then no capability at all), the gateway's namespace file
 * bind-mounted read-only, no network, no writable file, a handful of pids and little memory.
 */
export function holderOptions(f: {
  id: string;
  image: string;
  program: string;
  programTarget: string;
  netnsPath: string;
  netnsTarget: string;
  hostname: string;
  cgroupParent: string;
  owner: ContainerFacts['owner'];
}): Docker.ContainerCreateOptions {
  return {
    name: `${f.id}-net`,
    Image: f.image,
    Entrypoint: [f.programTarget],
    Cmd: [],
    User: '0:0',
    Hostname: f.hostname,
    Labels: engineLabels(f.id, 'net-holder', f.owner),
    HostConfig: {
      Privileged: false,
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      CapAdd: ['SYS_ADMIN'],
      SecurityOpt: ['no-new-privileges:true'],
      NetworkMode: 'none',
      Memory: 16 * 1024 * 1024,
      MemorySwap: 16 * 1024 * 1024,
      PidsLimit: 4,
      CgroupParent: f.cgroupParent,
      Mounts: [
        { Type: 'bind', Source: f.program, Target: f.programTarget, ReadOnly: true, BindOptions: { Propagation: 'rprivate' } },
        { Type: 'bind', Source: f.netnsPath, Target: f.netnsTarget, ReadOnly: true, BindOptions: { Propagation: 'rprivate' } },
      ],
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      RestartPolicy: { Name: 'no' },
    },
  };
}

/** The keeper's program: holds the run's volumes mounted (a tmpfs volume lives while mounted). */
export const KEEPER_ARGV: readonly string[] = ['/usr/bin/node', '-e', 'setInterval(() => {}, 2 ** 30)'];
/** Where the keeper mounts volume `n`: `/v/<n>`. */
export function keeperTarget(n: number): string {
  return `/v/${n}`;
}

/** The labels of everything AEGIS makes in an engine for run `id`: the run, its role, its owner. */
export function engineLabels(id: string, role: string, owner: ContainerFacts['owner']): Record<string, string> {
  return { [LABEL_RUN]: id, [LABEL_ROLE]: role, ...ownerLabels(owner) };
}

/**
 * An engine volume of a remote run: `tmpfsBytes` makes it a tmpfs of that size owned by
 * `owner` with at most `inodes` files, directories and links (an rw volume: bounded like the
 * staged filesystem of a local run, so that what the agent leaves fits it when read back, and
 * the read-back has a bounded number of entries; LIMITATION: its pages
 * count against the memory limit of whoever writes them, the agent included), otherwise a plain
 * local volume (read-only content: the code directory, ro volumes).
 */
export function volumeOptions(f: {
  name: string;
  id: string;
  owner: ContainerFacts['owner'];
  tmpfs?: { bytes: number; inodes: number; uid: number; gid: number };
}): Docker.VolumeCreateOptions {
  const t = f.tmpfs;
  if (t !== undefined && (![t.bytes, t.inodes, t.uid, t.gid].every((n) => Number.isSafeInteger(n) && n >= 0) || t.inodes < 1))
    refuse('this volume size, inode count or owner');
  return {
    Name: f.name,
    Driver: 'local',
    Labels: engineLabels(f.id, 'volume', f.owner),
    ...(t !== undefined
      ? {
          DriverOpts: {
            type: 'tmpfs',
            device: 'tmpfs',
            o: `size=${t.bytes},nr_inodes=${t.inodes},uid=${t.uid},gid=${t.gid},mode=0700,nosuid,nodev`,
          },
        }
      : {}),
  };
}

/**
 * The keeper container of a remote run: started before the agent and removed after the copy-out,
 * it holds every volume of the run mounted (rw, at keeperTarget(n)) so that the archive API can
 * fill and read them. It runs nothing of the agent's: nobody, no capability, no network, a
 * read-only root, little memory and few pids.
 */
export function keeperOptions(f: {
  id: string;
  image: string;
  volumes: readonly string[];
  owner: ContainerFacts['owner'];
}): Docker.ContainerCreateOptions {
  return {
    name: `${f.id}-keeper`,
    Image: f.image,
    Entrypoint: [...KEEPER_ARGV],
    Cmd: [],
    User: '65534:65534',
    Labels: engineLabels(f.id, 'keeper', f.owner),
    HostConfig: {
      Privileged: false,
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      CapAdd: [],
      SecurityOpt: ['no-new-privileges:true'],
      NetworkMode: 'none',
      Memory: 64 * 1024 * 1024,
      MemorySwap: 64 * 1024 * 1024,
      PidsLimit: 32,
      NanoCpus: 100_000_000,
      Mounts: f.volumes.map((v, n) => ({
        Type: 'volume' as const,
        Source: v,
        Target: keeperTarget(n),
        ReadOnly: false,
        VolumeOptions: NO_COPY,
      })),
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      RestartPolicy: { Name: 'no' },
    },
  };
}

/**
 * A container that is never started: the run's files (the execution CA bundle) are put into its
 * root through the archive API, then it is committed as the run's image (labelled with the run,
 * removed with it).
 */
export function filesOptions(f: { id: string; image: string; owner: ContainerFacts['owner'] }): Docker.ContainerCreateOptions {
  return {
    name: `${f.id}-files`,
    Image: f.image,
    Entrypoint: ['/nonexistent'],
    Cmd: [],
    Labels: engineLabels(f.id, 'files', f.owner),
    HostConfig: { NetworkMode: 'none', LogConfig: { Type: 'none', Config: {} }, AutoRemove: false, RestartPolicy: { Name: 'no' } },
  };
}

/**
 * The gateway container's DNS options from the resolv.conf AEGIS's gateway wrote (for a remote
 * engine: the agent, in the gateway container's network namespace, gets the file the engine
 * makes from them). Only `nameserver` addresses, `search` and `options` words; anything else
 * refuses the run.
 */
export function dnsOptions(resolvConf: string): { Dns: string[]; DnsSearch: string[]; DnsOptions: string[] } {
  const out = { Dns: [] as string[], DnsSearch: [] as string[], DnsOptions: [] as string[] };
  for (const raw of resolvConf.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [key, ...words] = line.split(/\s+/);
    if (words.length === 0 || !words.every((w) => /^[A-Za-z0-9_.:-]+$/.test(w))) refuse(`the resolv.conf line ${JSON.stringify(line)}`);
    if (key === 'nameserver' && words.length === 1) out.Dns.push(words[0]!);
    else if (key === 'search') out.DnsSearch.push(...words);
    else if (key === 'options') out.DnsOptions.push(...words);
    else refuse(`the resolv.conf line ${JSON.stringify(line)}`);
  }
  if (out.Dns.length === 0) refuse('a resolv.conf without a nameserver');
  return out;
}

/**
 * The size of a remote run's tmpfs volume for an rw volume whose staged filesystem on this host
 * has `capacity` data bytes (statfs) and was asked for `requested`: what the agent writes there
 * must fit when read back into the staged filesystem, which also spends blocks on directories and
 * extent trees; so a 1/64 share (at least 1 MiB) is kept for that, in whole pages.
 * LIMITATION: on a remote engine an rw volume holds that much less than its size.
 */
export function rwEngineBytes(capacity: number, requested: number): number {
  const usable = Math.min(requested, capacity - Math.max(Math.floor(capacity / 64), 1024 * 1024));
  return Math.max(4096, Math.floor(usable / 4096) * 4096);
}

/** Most files, directories and links of a remote run's rw volume (the copy-out keeps a path per entry in memory). */
export const MAX_REMOTE_VOLUME_INODES = 100_000;

/**
 * The inode count of a remote run's tmpfs volume for an rw volume whose staged filesystem has
 * `free` inodes: what it can take back (a margin of 16), at most MAX_REMOTE_VOLUME_INODES.
 * tmpfs counts hard links too, so the read-back has at most this many entries (plus its top).
 */
export function rwEngineInodes(free: number): number {
  return Math.max(1, Math.min(MAX_REMOTE_VOLUME_INODES, Math.floor(free) - 16));
}

/**
 * What an engine says it cannot enforce (GET /info): the limit controls a run needs. An engine
 * without one (rootless Docker, cgroup v2 without delegated controllers, a kernel without swap
 * accounting) drops the option with nothing but a warning, so the run is refused instead. Only
 * `true` counts: a missing field is missing support (fail secure).
 */
export function missingLimitSupport(info: Readonly<Record<string, unknown>>): string[] {
  return ['MemoryLimit', 'SwapLimit', 'CpuCfsQuota', 'CpuCfsPeriod', 'PidsLimit'].filter((k) => info[k] !== true);
}

/** The limit options of `asked` the created container does not carry as asked (its inspected HostConfig). */
export function limitsNotKept(asked: object, got: object | undefined): string[] {
  const a = asked as Readonly<Record<string, unknown>>;
  const g = got as Readonly<Record<string, unknown>> | undefined;
  return ['Memory', 'MemorySwap', 'CpuQuota', 'CpuPeriod', 'PidsLimit'].filter((k) => a[k] !== undefined && a[k] !== 0 && g?.[k] !== a[k]);
}

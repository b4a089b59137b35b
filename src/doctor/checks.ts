/**
 * `aegis doctor` decisions: host facts in, a list of checks out, each with what to do about a
 * failure. Pure: the facts are gathered by probe.ts, fixes are applied by fix.ts.
 */
import { parseMountinfo } from '../host/mountinfo.js';

/** What probe.ts gathers. Plain data, so tests can describe any host. */
export interface HostFacts {
  readonly euid: number;
  /** /etc/os-release ID and VERSION_ID. */
  readonly os: { readonly id: string; readonly versionId: string };
  /** Command name -> first line of its version output, or null when not installed. */
  readonly commands: Readonly<Record<string, { readonly path: string; readonly version: string } | null>>;
  /** /proc/self/mountinfo text. */
  readonly mountinfo: string;
  /** /proc/cgroups text. */
  readonly procCgroups: string;
  /** cgroup.controllers of the cgroup2 mount (unified or /sys/fs/cgroup), or null if none. */
  readonly v2Controllers: string | null;
  /** /proc/sys/user/max_user_namespaces, or null when unreadable. */
  readonly maxUserNamespaces: number | null;
  readonly kvm: boolean;
  /** /sys/kernel/btf/vmlinux exists (the runtime monitor's bpftrace needs BTF). */
  readonly btf?: boolean;
  readonly images: {
    readonly dir: string;
    readonly storeExists: boolean;
    readonly defaultRef: string;
    /** Result of resolving the default image. */
    readonly defaultImage:
      { readonly ok: true; readonly digest: string } | { readonly ok: false; readonly code: string; readonly message: string };
  };
  /** The Docker engine (isolation: docker), as the probe found it. */
  readonly docker: DockerFacts;
  /** isolation microvm (QEMU, the guest, KVM), as the probe found it; absent: not probed. */
  readonly microvm?: MicrovmFacts;
}

/** What `isolation: microvm` needs, as probe.ts found it (docs/sandbox.md "microVM"). */
export interface MicrovmFacts {
  /** The configured guest directory (AEGIS_MICROVM_GUEST). */
  readonly guestDir: string;
  /** The directory holding vmlinuz and initramfs.cpio.gz, or null when there is none. */
  readonly guest: string | null;
  /** Why that guest does not speak this AEGIS's protocol (built from an older init), or null. */
  readonly guestProblem?: string | null;
  /** qemu-system-x86_64's path, or null. */
  readonly qemu: string | null;
  /** AEGIS_MICROVM_ALLOW_EMULATION=1. */
  readonly allowEmulation: boolean;
  /**
   * The KVM probe (a stock guest booted with KVM and a timeout, cached): works, fails (crashed or
   * hung), no_device (/dev/kvm cannot be opened), unknown (no QEMU or no guest to probe with).
   */
  readonly kvm: { readonly result: 'works' | 'fails' | 'no_device' | 'unknown'; readonly detail: string; readonly cached: boolean };
}

/**
 * isolation microvm: QEMU, the guest, whether KVM runs a stock guest, and which mode a run would
 * use. Warnings, not failures: microvm is an optional isolation level, like docker.
 */
export function microvmChecks(m: MicrovmFacts): Check[] {
  const out: Check[] = [];
  out.push(
    m.qemu !== null
      ? { id: 'microvm.qemu', status: 'ok', summary: `QEMU at ${m.qemu} (isolation: microvm)` }
      : {
          id: 'microvm.qemu',
          status: 'warn',
          summary: 'qemu-system-x86_64 is not installed (needed only for isolation: microvm)',
          advice: 'apt-get install qemu-system-x86',
          fix: { kind: 'apt', packages: ['qemu-system-x86'] },
        },
  );
  const rebuild = `bash scripts/microvm/build-guest.sh ${m.guestDir} (scripts/setup.sh runs it; ~25 s)`;
  out.push(
    m.guest === null
      ? {
          id: 'microvm.guest',
          status: 'warn',
          summary: `no microVM guest in ${m.guestDir} (needed only for isolation: microvm)`,
          advice: rebuild,
        }
      : m.guestProblem
        ? {
            id: 'microvm.guest',
            status: 'warn',
            summary: `the microVM guest in ${m.guest} cannot be used: ${m.guestProblem}`,
            advice: rebuild,
          }
        : { id: 'microvm.guest', status: 'ok', summary: `microVM guest (kernel and initramfs) in ${m.guest}` },
  );
  const kvmWorks = m.kvm.result === 'works';
  const cached = m.kvm.cached ? ' (cached probe)' : '';
  out.push(
    kvmWorks
      ? { id: 'microvm.kvm', status: 'ok', summary: `KVM runs a stock guest kernel${cached}` }
      : {
          id: 'microvm.kvm',
          status: 'warn',
          summary:
            m.kvm.result === 'no_device'
              ? `no usable KVM: ${m.kvm.detail}`
              : m.kvm.result === 'fails'
                ? `/dev/kvm opens, but ${m.kvm.detail}${cached}: this KVM runs only patched guests (opening /dev/kvm is no proof)`
                : `KVM not probed: ${m.kvm.detail}`,
          advice: 'microVMs with hardware isolation need a host whose KVM runs stock guests (nested virtualization enabled, or bare metal)',
        },
  );
  const missing =
    m.qemu === null ? 'QEMU is missing' : m.guest === null ? 'the guest is missing' : m.guestProblem ? 'the guest must be rebuilt' : null;
  if (missing !== null)
    out.push({
      id: 'microvm.mode',
      status: 'warn',
      summary: `isolation microvm cannot run: ${missing}`,
      advice: 'see microvm.qemu and microvm.guest above',
    });
  else if (m.allowEmulation)
    out.push({
      id: 'microvm.mode',
      status: 'warn',
      summary:
        'runs use software emulation (AEGIS_MICROVM_ALLOW_EMULATION=1): for testing only, slow (a kernel boots per run in seconds), ' +
        "and QEMU's translator, not the hardware, separates the guest" +
        (kvmWorks ? '; KVM works here: unset AEGIS_MICROVM_ALLOW_EMULATION to use it' : ''),
    });
  else if (kvmWorks) out.push({ id: 'microvm.mode', status: 'ok', summary: 'runs use KVM (hardware-virtualized guests)' });
  else
    out.push({
      id: 'microvm.mode',
      status: 'warn',
      summary: 'isolation microvm is refused before start: KVM does not run a stock guest here and software emulation is not allowed',
      advice: 'a host whose KVM works; for testing only: AEGIS_MICROVM_ALLOW_EMULATION=1',
    });
  return out;
}

export interface DockerFacts {
  /** DOCKER_HOST, or the default socket. */
  readonly host: string;
  /** Why the engine could not be asked (no socket, refused, timeout), or null when it answered. */
  readonly unreachable: string | null;
  readonly version?: string;
  readonly apiVersion?: string;
  readonly cgroupDriver?: string;
  readonly cgroupVersion?: string;
  /** The engine's kernel is this host's (a local engine, not one in a VM). */
  readonly sameKernel?: boolean;
  /** AEGIS_DOCKER_ENGINE: how the engine is to be used (auto: local on this host's kernel, remote otherwise). */
  readonly engineMode?: 'auto' | 'local' | 'remote';
  /**
   * A container with AEGIS's seccomp profile, no-new-privileges, no capabilities and no network
   * ran `true`: null when not tried (no AEGIS image in the engine yet), else the error or 'ok'.
   */
  readonly seccompRun?: string | null;
}

/** The engine checks: docker is an optional backend, so a missing engine is a warning, not a failure. */
export function dockerChecks(d: DockerFacts): Check[] {
  if (d.unreachable !== null)
    return [
      {
        id: 'docker.engine',
        status: 'warn',
        summary: `no Docker engine at ${d.host} (needed only for isolation: docker): ${d.unreachable}`,
        advice: 'apt-get install docker.io, then start dockerd (scripts/setup.sh does both), or set DOCKER_HOST',
      },
    ];
  const out: Check[] = [
    { id: 'docker.engine', status: 'ok', summary: `Docker engine ${d.version ?? '?'} (API ${d.apiVersion ?? '?'}) at ${d.host}` },
  ];
  const remote = d.engineMode === 'remote' || (d.engineMode !== 'local' && d.sameKernel !== true);
  out.push(
    remote || d.cgroupDriver === 'cgroupfs'
      ? {
          id: 'docker.cgroup_driver',
          status: 'ok',
          summary: remote
            ? `cgroup driver ${d.cgroupDriver ?? '?'}: not used (a remote engine keeps the limits in its own cgroups)`
            : `cgroup driver cgroupfs (cgroup v${d.cgroupVersion ?? '?'})`,
        }
      : {
          id: 'docker.cgroup_driver',
          status: 'warn',
          summary: `cgroup driver ${d.cgroupDriver ?? '?'}: AEGIS places containers below its own cgroup, which needs cgroupfs`,
          advice: 'start dockerd with --exec-opt native.cgroupdriver=cgroupfs, or use it as a remote engine (AEGIS_DOCKER_ENGINE=remote)',
        },
  );
  out.push(
    d.engineMode === 'local' && d.sameKernel !== true
      ? {
          id: 'docker.local',
          status: 'warn',
          summary: 'AEGIS_DOCKER_ENGINE=local, but the engine runs in another kernel (a VM, e.g. Docker Desktop): docker runs are refused',
          advice: 'unset AEGIS_DOCKER_ENGINE (auto uses it as a remote engine: docs/sandbox.md, Docker)',
        }
      : remote
        ? {
            id: 'docker.local',
            status: 'ok',
            summary: `${d.sameKernel === true ? 'AEGIS_DOCKER_ENGINE=remote' : 'the engine runs in another kernel (a VM, e.g. Docker Desktop)'}: used as a remote engine (limits in its HostConfig, code and volumes through its archive API, network through a gateway container)`,
          }
        : {
            id: 'docker.local',
            status: 'ok',
            summary: "the engine runs on this host's kernel: AEGIS's cgroup limits and checked binds apply",
          },
  );
  if (d.seccompRun === null || d.seccompRun === undefined)
    out.push({
      id: 'docker.seccomp',
      status: 'warn',
      summary: `seccomp profile not tried: the default image is not in the engine yet (the first docker run imports it)`,
    });
  else
    out.push(
      d.seccompRun === 'ok'
        ? { id: 'docker.seccomp', status: 'ok', summary: "a container ran under AEGIS's seccomp profile with no-new-privileges" }
        : {
            id: 'docker.seccomp',
            status: 'warn',
            summary: `the engine cannot run AEGIS's seccomp profile: ${d.seccompRun}`,
            advice: 'Docker >= 20.10 with seccomp support (docker info: Security Options: seccomp)',
          },
    );
  return out;
}

export type Fix =
  | { readonly kind: 'apt'; readonly packages: readonly string[] }
  | { readonly kind: 'mount-cgroup-v1'; readonly controllers: readonly string[] }
  | { readonly kind: 'mount-tracefs' }
  | { readonly kind: 'build-image'; readonly ref: string };

export interface Check {
  readonly id: string;
  readonly status: 'ok' | 'warn' | 'fail';
  readonly summary: string;
  /** What to do, in words (also for fixes `--fix` applies). */
  readonly advice?: string;
  /** Present when `aegis doctor --fix` can apply the remedy safely. */
  readonly fix?: Fix;
}

export type CgroupMode = 'v1' | 'v2' | 'hybrid' | 'none';

export interface CgroupLayout {
  readonly mode: CgroupMode;
  /** Controller -> mount point of its v1 hierarchy. */
  readonly v1: Readonly<Record<string, string>>;
  readonly v2Mount: string | null;
  /** Controllers bound to the v2 hierarchy. */
  readonly v2Controllers: readonly string[];
}

/** Reads cgroup mounts from mountinfo (proc(5): fields, then " - fstype source superopts"). */
export function cgroupLayout(mountinfo: string, v2Controllers: string | null): CgroupLayout {
  const v1: Record<string, string> = {};
  let v2Mount: string | null = null;
  for (const { mountPoint: mp, fstype, superOptions } of parseMountinfo(mountinfo)) {
    if (fstype === 'cgroup2') v2Mount ??= mp;
    else if (fstype === 'cgroup') {
      for (const opt of superOptions) {
        if (
          ['rw', 'ro', 'relatime', 'nosuid', 'nodev', 'noexec', 'clone_children'].includes(opt) ||
          opt.startsWith('name=') ||
          opt.startsWith('release_agent')
        )
          continue;
        v1[opt] ??= mp;
      }
    }
  }
  const hasV1 = Object.keys(v1).length > 0;
  const mode: CgroupMode = hasV1 && v2Mount ? 'hybrid' : hasV1 ? 'v1' : v2Mount ? 'v2' : 'none';
  const ctrls = (v2Controllers ?? '').split(/\s+/).filter(Boolean);
  return { mode, v1, v2Mount, v2Controllers: ctrls };
}

/** Enabled controllers listed in /proc/cgroups. */
export function enabledControllers(procCgroups: string): string[] {
  const out: string[] = [];
  for (const line of procCgroups.split('\n')) {
    if (line.startsWith('#')) continue;
    const f = line.trim().split(/\s+/);
    if (f.length >= 4 && f[3] === '1') out.push(f[0] as string);
  }
  return out;
}

/** Which Debian package provides each command AEGIS uses. */
export const PACKAGE_OF: Readonly<Record<string, string>> = {
  crun: 'crun',
  runc: 'runc',
  runsc: 'runsc',
  nft: 'nftables',
  ip: 'iproute2',
  debootstrap: 'debootstrap',
  'mkfs.ext4': 'e2fsprogs',
  bpftrace: 'bpftrace',
};

const LIMIT_CONTROLLERS = ['memory', 'cpu', 'pids'] as const;

/** What a user can do with AEGIS on this host: everything as root; the pure commands otherwise. */
export interface UserAccess {
  readonly root: boolean;
  readonly asThisUser: readonly string[];
  readonly needRoot: readonly string[];
}

/**
 * The commands that need no privilege (they read a manifest, or the audit log under the user's own
 * $AEGIS_HOME, or list the world-readable image store), and the ones that need root: a sandbox
 * needs cgroups, namespaces and nftables; images are root-owned files; fixes change the host.
 */
const ROOT_FREE = ['aegis validate', 'aegis policy test|show', 'aegis audit (own $AEGIS_HOME)', 'aegis image ls'];
const ROOT_ONLY = ['aegis run', 'aegis image build|import|verify|rm', 'aegis doctor --fix'];

export function userAccess(euid: number): UserAccess {
  const root = euid === 0;
  return { root, asThisUser: root ? [...ROOT_FREE, ...ROOT_ONLY] : ROOT_FREE, needRoot: root ? [] : ROOT_ONLY };
}

export function evaluate(f: HostFacts): Check[] {
  const checks: Check[] = [];
  const cmd = (name: string) => f.commands[name] ?? null;
  const aptFix = (name: string): Fix => ({ kind: 'apt', packages: [PACKAGE_OF[name] ?? name] });

  checks.push(
    f.os.id === 'debian' && f.os.versionId === '12'
      ? { id: 'host.os', status: 'ok', summary: 'Debian 12 (bookworm)' }
      : {
          id: 'host.os',
          status: 'warn',
          summary: `${f.os.id || 'unknown'} ${f.os.versionId}: AEGIS is built and tested on Debian 12`,
          advice: 'package names and fixes below assume Debian 12',
        },
  );
  // Not root is a failure, not a warning: no sandbox can start (cgroups, namespaces, nftables).
  const who = userAccess(f.euid);
  checks.push(
    who.root
      ? { id: 'host.root', status: 'ok', summary: 'running as root' }
      : {
          id: 'host.root',
          status: 'fail',
          summary: `running as uid ${f.euid}, not root: no sandbox can start as this user`,
          advice: `as root (sudo): ${who.needRoot.join(', ')}; as this user: ${who.asThisUser.join(', ')}`,
        },
  );

  // OCI runtimes: crun is the default; runc and runsc are alternatives.
  for (const [name, required, note] of [
    ['crun', true, 'default runtime (isolation: crun)'],
    ['runc', false, 'isolation: runc'],
    ['runsc', false, 'isolation: gvisor (platform ptrace; the kvm platform hangs on this host class)'],
  ] as const) {
    const c = cmd(name);
    checks.push(
      c
        ? { id: `runtime.${name}`, status: 'ok', summary: `${name}: ${c.version} (${note})` }
        : {
            id: `runtime.${name}`,
            status: required ? 'fail' : 'warn',
            summary: `${name} is not installed (${note})`,
            advice: `apt-get install ${PACKAGE_OF[name]}`,
            fix: aptFix(name),
          },
    );
  }

  // cgroups
  const layout = cgroupLayout(f.mountinfo, f.v2Controllers);
  const enabled = new Set(enabledControllers(f.procCgroups));
  checks.push(
    layout.mode === 'none'
      ? {
          id: 'cgroup.layout',
          status: 'fail',
          summary: 'no cgroup filesystem mounted',
          advice: 'mount cgroup2 on /sys/fs/cgroup (or boot with systemd)',
        }
      : {
          id: 'cgroup.layout',
          status: 'ok',
          summary: `cgroup ${layout.mode}${layout.mode !== 'v2' ? ` (v1: ${Object.keys(layout.v1).sort().join(',')})` : ''}${layout.v2Mount ? ` (v2 at ${layout.v2Mount}: ${layout.v2Controllers.join(',') || 'no controllers'})` : ''}`,
        },
  );
  for (const c of LIMIT_CONTROLLERS) {
    const usable = layout.mode === 'v2' ? layout.v2Controllers.includes(c) : c in layout.v1;
    const where = layout.mode === 'v2' ? layout.v2Mount : layout.v1[c];
    checks.push(
      usable
        ? { id: `cgroup.${c}`, status: 'ok', summary: `${c} controller usable (${where})` }
        : {
            id: `cgroup.${c}`,
            status: 'fail',
            summary: `${c} controller not usable${enabled.has(c) ? '' : ' (disabled in the kernel)'}: ${c === 'memory' ? 'memory' : c === 'cpu' ? 'CPU' : 'process-count'} limits cannot be enforced`,
            advice: enabled.has(c)
              ? layout.mode === 'v2'
                ? `enable it: echo +${c} > ${layout.v2Mount}/cgroup.subtree_control`
                : `mount it: mkdir -p /sys/fs/cgroup/${c} && mount -t cgroup -o ${c} cgroup /sys/fs/cgroup/${c}`
              : `boot with cgroup_enable=${c}`,
          },
    );
  }
  // crun refuses hybrid mode while any controller is bound to the v2 hierarchy
  // ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2").
  if (layout.mode === 'hybrid') {
    const onV2 = layout.v2Controllers;
    checks.push(
      onV2.length === 0
        ? { id: 'cgroup.crun_hybrid', status: 'ok', summary: 'hybrid mode: no controller on cgroup v2 (crun works)' }
        : {
            id: 'cgroup.crun_hybrid',
            status: 'fail',
            summary: `hybrid mode with ${onV2.join(',')} on cgroup v2: crun fails with "cgroups in hybrid mode not supported"`,
            advice:
              onV2.map((c) => `mkdir -p /sys/fs/cgroup/${c} && mount -t cgroup -o ${c} cgroup /sys/fs/cgroup/${c}`).join('; ') +
              ' (once per boot)',
            fix: { kind: 'mount-cgroup-v1', controllers: onV2 },
          },
    );
  }

  checks.push(
    f.maxUserNamespaces !== null && f.maxUserNamespaces > 0
      ? { id: 'kernel.userns', status: 'ok', summary: `user namespaces available (max ${f.maxUserNamespaces})` }
      : { id: 'kernel.userns', status: 'warn', summary: 'user namespaces unavailable', advice: 'sysctl -w user.max_user_namespaces=15000' },
  );

  for (const [name, why] of [
    ['nft', 'egress firewall in sandbox network namespaces'],
    ['ip', 'network namespaces and veth pairs'],
    ['debootstrap', 'aegis image build'],
    ['mkfs.ext4', 'the size-limited filesystems of rw volumes'],
  ] as const) {
    const c = cmd(name);
    checks.push(
      c
        ? { id: `tools.${name}`, status: 'ok', summary: `${name}: ${c.version}` }
        : {
            id: `tools.${name}`,
            status: 'fail',
            summary: `${name} is not installed (${why})`,
            advice: `apt-get install ${PACKAGE_OF[name]}`,
            fix: aptFix(name),
          },
    );
  }

  checks.push({
    id: 'host.kvm',
    status: 'ok',
    summary: f.kvm
      ? '/dev/kvm present (gVisor uses platform ptrace; whether isolation microvm can use it: microvm.kvm)'
      : '/dev/kvm absent (gVisor uses platform ptrace; isolation microvm: microvm.kvm)',
  });
  if (f.microvm !== undefined) checks.push(...microvmChecks(f.microvm));

  checks.push(...monitorChecks(f));
  checks.push(...dockerChecks(f.docker));

  const img = f.images;
  if (img.defaultImage.ok) {
    checks.push({ id: 'images.default', status: 'ok', summary: `${img.defaultRef} is ${img.defaultImage.digest} in ${img.dir}` });
  } else if (img.defaultImage.code === 'image.not_found') {
    checks.push({
      id: 'images.default',
      status: 'fail',
      summary: `default image ${img.defaultRef} is not in ${img.dir}${img.storeExists ? '' : ' (no store yet)'}`,
      advice: `aegis image build ${img.defaultRef} (needs debootstrap; ~30-60 s)`,
      fix: { kind: 'build-image', ref: img.defaultRef },
    });
  } else {
    checks.push({
      id: 'images.default',
      status: 'fail',
      summary: `default image ${img.defaultRef} is unusable: ${img.defaultImage.code}: ${img.defaultImage.message}`,
      advice: `aegis image verify ${img.defaultRef}; if it stays broken: aegis image rm ${img.defaultRef} && aegis image build ${img.defaultRef}`,
    });
  }
  return checks;
}

/** Where the runtime monitor expects tracefs (src/monitor). */
export const TRACEFS_MOUNT = '/sys/kernel/tracing';

/**
 * The runtime monitor (docs/monitoring.md): bpftrace, tracefs and BTF. Warnings, not failures:
 * without them runs are not monitored (AEGIS_MONITOR=auto), or refused (AEGIS_MONITOR=on).
 */
function monitorChecks(f: HostFacts): Check[] {
  const out: Check[] = [];
  const bt = f.commands['bpftrace'] ?? null;
  out.push(
    bt
      ? { id: 'monitor.bpftrace', status: 'ok', summary: `${bt.version} (runtime monitor)` }
      : {
          id: 'monitor.bpftrace',
          status: 'warn',
          summary: 'bpftrace is not installed: runs are not monitored (processes, files, refused calls)',
          advice: 'apt-get install bpftrace',
          fix: { kind: 'apt', packages: ['bpftrace'] },
        },
  );
  const tracefs = parseMountinfo(f.mountinfo).some((m) => m.fstype === 'tracefs' && m.mountPoint === TRACEFS_MOUNT);
  out.push(
    tracefs
      ? { id: 'monitor.tracefs', status: 'ok', summary: `tracefs mounted at ${TRACEFS_MOUNT}` }
      : {
          id: 'monitor.tracefs',
          status: 'warn',
          summary: `tracefs is not mounted at ${TRACEFS_MOUNT}: bpftrace cannot attach to system call tracepoints`,
          advice: `mount -t tracefs tracefs ${TRACEFS_MOUNT} (once per boot)`,
          fix: { kind: 'mount-tracefs' },
        },
  );
  if (f.btf !== undefined)
    out.push(
      f.btf
        ? { id: 'monitor.btf', status: 'ok', summary: 'kernel BTF available (/sys/kernel/btf/vmlinux)' }
        : {
            id: 'monitor.btf',
            status: 'warn',
            summary: 'the kernel has no BTF (/sys/kernel/btf/vmlinux): the monitor cannot read task fields',
            advice: 'a kernel built with CONFIG_DEBUG_INFO_BTF=y',
          },
    );
  out.push({
    id: 'monitor.gvisor',
    status: 'ok',
    summary:
      "under gVisor (runsc) the monitor records resource samples and fs.changes only: the agent's execs, opens and refused calls " +
      "happen in runsc's own kernel, out of the host's eBPF view (this runsc's `trace` facility is not used)",
  });
  return out;
}

/** The fixes `--fix` would apply, merged (one apt-get for all packages), in a safe order. */
export function planFixes(checks: readonly Check[]): Fix[] {
  const pkgs = new Set<string>();
  const mounts = new Set<string>();
  const builds = new Set<string>();
  let tracefs = false;
  for (const c of checks) {
    if (c.status === 'ok' || !c.fix) continue;
    if (c.fix.kind === 'apt') c.fix.packages.forEach((p) => pkgs.add(p));
    else if (c.fix.kind === 'mount-cgroup-v1') c.fix.controllers.forEach((m) => mounts.add(m));
    else if (c.fix.kind === 'mount-tracefs') tracefs = true;
    else builds.add(c.fix.ref);
  }
  const out: Fix[] = [];
  if (pkgs.size) out.push({ kind: 'apt', packages: [...pkgs].sort() });
  if (mounts.size) out.push({ kind: 'mount-cgroup-v1', controllers: [...mounts].sort() });
  if (tracefs) out.push({ kind: 'mount-tracefs' });
  for (const ref of builds) out.push({ kind: 'build-image', ref });
  return out;
}

/**
 * runsc (gVisor): the agent's system calls are served by gVisor's user-space kernel (the
 * Sentry), not by the host kernel. Platform ptrace (the kvm platform hangs on these hosts).
 *
 * ARCHITECTURE NOTE: `--oci-seccomp` makes the Sentry apply the bundle's seccomp profile to the
 * agent; without it gVisor ignores the profile.
 *
 * ARCHITECTURE NOTE (network): with no network policy the sandbox runs `--network=none` (no
 * interface at all). Behind the egress gateway it runs `--network=host` inside the gateway's
 * namespace: gVisor's sockets are then real sockets of that namespace, so both nftables layers
 * (inside the namespace and on the host end of the veth) apply. gVisor's own netstack
 * (`--network=sandbox`) does not start on these hosts (runsc 2022-12 on kernel 6.x takes every
 * namespace for the host's), and would bypass the in-namespace rules (packet socket).
 * LIMITATION: this runsc cannot combine `--network=host` with an OCI user namespace ("error
 * setting up chroot: operation not permitted"), so for a joined namespace the user namespace is
 * dropped from the config: the Sentry is the boundary there (the agent runs with no
 * capabilities inside gVisor's kernel, and the Sentry and gofer run under their own namespaces
 * and seccomp filters). The agent then runs as uid/gid 101000, the host ids the user namespace
 * maps it to elsewhere, so host file permissions are the same as under crun and runc (and never
 * those of a host account). The validator allows exactly this (src/sandbox/spec/validate.ts).
 */
import { readdirSync } from 'node:fs';
import { DEFAULT_ID_MAP } from '../spec/compile.js';
import type { OciConfig } from '../spec/oci.js';
import { findExecutable } from '../../host/exec.js';
import type { RuntimeDriver, RuntimeRun } from './types.js';

/**
 * Host tasks of the Sentry and gofer per mount, and the headroom above them (see pidsOverhead).
 * Fitted on measurements (idle tasks = 4 x mounts, within 1); the headroom keeps the allowance of
 * a typical bundle (20 mounts) at the 128 it was, so the agent gets no more processes than before.
 */
export const RUNSC_TASKS_PER_MOUNT = 4;
export const RUNSC_BASE_TASKS = 48;

/**
 * ARCHITECTURE NOTE (clone3): the default profile answers clone3 with ENOSYS (its flags live in
 * memory, where seccomp cannot look), so that libc falls back to clone, whose flags the profile
 * does check. This runsc (2022-12) applies `--oci-seccomp` rules but ignores `errnoRet`: the
 * agent got EPERM, libc did not fall back, and no thread could start ("can't start new thread").
 * The Sentry itself answers clone3 with ENOSYS (it does not implement it; checked by a
 * conformance probe), so under gVisor the rule is removed and libc falls back as intended; every
 * other rule stays.
 */
const ENOSYS = 38;

function withoutClone3Rule(config: OciConfig): OciConfig {
  const seccomp = config.linux.seccomp;
  if (seccomp === undefined) return config;
  let changed = false;
  const syscalls = seccomp.syscalls.map((r) => {
    if (!(r.names.length === 1 && r.names[0] === 'clone3' && r.action === 'SCMP_ACT_ERRNO' && r.errnoRet === ENOSYS)) return r;
    changed = true;
    return { names: ['clone3'], action: 'SCMP_ACT_ALLOW' as const };
  });
  return changed ? { ...config, linux: { ...config.linux, seccomp: { ...seccomp, syscalls } } } : config;
}

export class RunscDriver implements RuntimeDriver {
  readonly isolation = 'gvisor' as const;
  readonly binary: string;
  /**
   * LIMITATION: the Sentry and gofer run their own threads in the run's cgroup (with the ptrace
   * platform every guest address space is also a host stub process), so the host pids limit is
   * the agent's limit plus this allowance; the agent's processes are still bounded by it.
   * The gofer and the Sentry serve every mount with threads of their own: measured here (runsc
   * 2022-12, python3 sleeping), about 4 host tasks per mount (20 mounts: 80 tasks, 37: 150,
   * 94: 374). A flat allowance of 128 made a grant inside /etc (which mirrors /etc one entry per
   * mount, 94 mounts) fail at start: the Go runtime could not create a thread (EAGAIN at the
   * pids limit) and runsc reported `urpc method "containerManager.StartRoot" failed: EOF`.
   */
  pidsOverhead(config: OciConfig): number {
    return RUNSC_BASE_TASKS + RUNSC_TASKS_PER_MOUNT * config.mounts.length;
  }
  /** `--ignore-cgroups`: the Sentry and gofer stay in the run's cgroup AEGIS started them in. */
  readonly cgroupMode = 'inherit' as const;
  readonly rlimitsInherited = false;
  constructor(binary = 'runsc') {
    this.binary = findExecutable(binary) ?? binary;
  }

  unavailableReason(): string | null {
    return findExecutable(this.binary) === null ? `${this.binary} is not installed (Debian package "runsc")` : null;
  }

  adapt(given: OciConfig): OciConfig {
    const config = withoutClone3Rule(given);
    const joined = config.linux.namespaces.some((n) => n.type === 'network' && n.path !== undefined);
    if (!joined) return config;
    // Without the user namespace the agent's ids are host ids: use the very ids the namespace
    // would have mapped it to (101000), never a host account's (1000 is usually a person's).
    const linux = config.linux;
    const u = config.process.user;
    const process = { ...config.process, user: { ...u, uid: DEFAULT_ID_MAP.hostBase + u.uid, gid: DEFAULT_ID_MAP.hostBase + u.gid } };
    return {
      ...config,
      process,
      linux: { ...linux, namespaces: linux.namespaces.filter((n) => n.type !== 'user'), uidMappings: [], gidMappings: [] },
    };
  }

  private global(r: RuntimeRun): string[] {
    return ['--root', r.stateRoot, '--platform=ptrace', '--oci-seccomp', '--ignore-cgroups'];
  }

  runArgs(r: RuntimeRun): string[] {
    const network = r.networkNamespace !== undefined ? '--network=host' : '--network=none';
    return [...this.global(r), network, 'run', '--bundle', r.bundleDir, '--pid-file', r.pidFile, r.id];
  }

  killArgs(r: RuntimeRun, signal: 'TERM' | 'KILL'): string[] {
    return [...this.global(r), 'kill', '--all', r.id, signal];
  }

  /** runsc keeps `<id>_sandbox:<id>.state` and `.lock` files in its root. */
  hasState(r: Pick<RuntimeRun, 'id' | 'stateRoot'>): boolean {
    try {
      return readdirSync(r.stateRoot).some((n) => n.startsWith(`${r.id}_`));
    } catch {
      return false;
    }
  }

  deleteArgs(r: RuntimeRun): string[] {
    return [...this.global(r), 'delete', '--force', r.id];
  }
}

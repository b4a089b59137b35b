/**
 * runsc (gVisor): the agent's system calls are served by gVisor's user-space kernel (the
 * Sentry), not by the host kernel. Platform ptrace (the kvm platform hangs on these hosts).
 *
 * ARCHITECTURE NOTE: `--oci-seccomp` makes the Sentry apply the bundle's seccomp profile to the
 * agent; without it gVisor ignores the profile. `--network=none` until the egress gateway hands
 * a network namespace over.
 */
import { readdirSync } from 'node:fs';
import type { OciConfig } from '../spec/oci.js';
import { findExecutable } from './oci-cli.js';
import type { RuntimeDriver, RuntimeRun } from './types.js';

export class RunscDriver implements RuntimeDriver {
  readonly isolation = 'gvisor' as const;
  readonly binary: string;
  /**
   * LIMITATION: the Sentry and gofer run their own threads in the run's cgroup (with the ptrace
   * platform every guest address space is also a host stub process), so the host pids limit is
   * the agent's limit plus this allowance; the agent's processes are still bounded by it.
   */
  readonly pidsOverhead = 128;
  /** `--ignore-cgroups`: the Sentry and gofer stay in the run's cgroup AEGIS started them in. */
  readonly cgroupMode = 'inherit' as const;
  constructor(binary = 'runsc') {
    this.binary = findExecutable(binary) ?? binary;
  }

  unavailableReason(): string | null {
    return findExecutable(this.binary) === null ? `${this.binary} is not installed (Debian package "runsc")` : null;
  }

  adapt(config: OciConfig): OciConfig {
    return config;
  }

  private global(r: RuntimeRun): string[] {
    return ['--root', r.stateRoot, '--platform=ptrace', '--oci-seccomp', '--network=none', '--ignore-cgroups'];
  }

  runArgs(r: RuntimeRun): string[] {
    return [...this.global(r), 'run', '--bundle', r.bundleDir, '--pid-file', r.pidFile, r.id];
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

/**
 * The one interface every OCI runtime driver implements. A driver only knows how to call its
 * runtime; the bundle, cgroups, timeout and cleanup belong to run.ts, so one compiled policy
 * runs unchanged on crun, runc and runsc.
 */
import type { Isolation } from '../../policy/types.js';
import type { OciConfig } from '../spec/oci.js';

export interface RuntimeRun {
  readonly id: string;
  readonly bundleDir: string;
  /** The runtime's `--root` state directory (AEGIS-owned, one per runtime). */
  readonly stateRoot: string;
  readonly pidFile: string;
  /** The network namespace the sandbox joins (egress gateway), or undefined for a fresh empty one. */
  readonly networkNamespace?: string;
}

/** What a runtime with a kernel of its own (a microVM) saw of the agent's limits inside it. */
export interface GuestUsage {
  readonly oom: boolean;
  readonly pidsLimitHit: boolean;
}

export interface RuntimeDriver {
  readonly isolation: Isolation;
  /** The executable (absolute path or a name looked up on PATH). */
  readonly binary: string;
  /**
   * Host tasks the runtime itself needs inside the run's cgroup for this (adapted) config, added
   * to the agent's pids limit (gVisor's Sentry and gofer threads live there, and their number
   * grows with the mounts; crun and runc exec into the agent).
   */
  pidsOverhead(config: OciConfig): number;
  /** Host memory the runtime itself needs in the run's cgroup above the agent's limit (a VMM), or undefined for none. */
  readonly memoryOverhead?: number;
  /**
   * How the agent gets into the run's cgroup:
   * - 'inherit': the runtime manages no cgroups (crun `--cgroup-manager=disabled`, runsc
   *   `--ignore-cgroups`); AEGIS starts the runtime inside the run's cgroup and everything it
   *   forks stays there. Saves the runtime's own cgroup setup in every hierarchy (5-10 ms).
   * - 'child': the runtime creates `cgroupsPath` below the run's cgroup (runc).
   */
  readonly cgroupMode: 'inherit' | 'child';
  /**
   * True when the runtime cannot set `process.rlimits` itself (its adapt() empties them): AEGIS
   * then starts it under `prlimit` with the bundle's limits and the agent inherits them.
   */
  readonly rlimitsInherited: boolean;
  /** Why this runtime cannot run on this host, or null when it can. */
  unavailableReason(): string | null;
  /**
   * A slower check run before the sandbox is built (a microVM's KVM probe, cached): why this
   * runtime cannot run here, or null. Optional; unavailableReason() has passed already.
   */
  preflight?(): Promise<string | null>;
  /** Runtime-specific adjustments of a validated config (pure; must not loosen it). */
  adapt(config: OciConfig): OciConfig;
  /** Arguments that run the bundle in the foreground and exit with the agent's status. */
  runArgs(r: RuntimeRun): string[];
  /** Arguments of a command that signals the container's init, or null to signal the pid in `pidFile`. */
  killArgs(r: RuntimeRun, signal: 'TERM' | 'KILL'): string[] | null;
  /** True while the runtime keeps state for `id` under `stateRoot` (then `deleteArgs` is due). */
  hasState(r: Pick<RuntimeRun, 'id' | 'stateRoot'>): boolean;
  /** Arguments that forcibly remove whatever state the runtime kept for `id`. */
  deleteArgs(r: RuntimeRun): string[];
  /**
   * Engines reached over an API (docker) remove the run's containers here instead of
   * `deleteArgs`; resolves true when the engine still held any.
   */
  removeContainers?(r: Pick<RuntimeRun, 'id' | 'stateRoot'>): Promise<boolean>;
  /**
   * Runtimes whose agent lives under a kernel of their own (microvm), where the host cgroup does
   * not see its OOM kills or refused forks: what the guest reported, read after the runtime
   * exited and before the bundle is removed; null when nothing was reported.
   */
  guestUsage?(r: RuntimeRun): GuestUsage | null;
}

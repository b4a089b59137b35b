/**
 * How a run ended (pure): the runtime's exit, what AEGIS did to it, and the cgroup's OOM flag in;
 * the run's status and exit code out. The contract of `aegis run`'s exit code lives here.
 *
 *   AEGIS stopped it (time limit, abort)          -> timeout | killed, 137
 *   killed by SIGKILL (or 137) with an OOM event  -> oom, 137
 *   the container never started and exit != 0    -> not started (failed_to_start, 125)
 *   otherwise                                     -> exited, the agent's code (128 + signal)
 */

export type RunStatus = 'exited' | 'oom' | 'timeout' | 'killed' | 'failed_to_start';

/** Exit code of a run AEGIS stopped (time limit, abort, OOM). */
export const EXIT_KILLED = 137;
/** Exit code of a run AEGIS could not start. */
export const EXIT_CANNOT_START = 125;

export interface ExitFacts {
  /** What AEGIS did: stopped it at the time limit, or on abort; null if it did neither. */
  readonly stoppedBy: 'timeout' | 'killed' | null;
  /** The runtime process's exit code, or null when a signal ended it. */
  readonly code: number | null;
  readonly signal: string | null;
  /** The number of `signal` (os.constants.signals), or null. */
  readonly signalNumber: number | null;
  /** The cgroup saw the memory limit hit and the OOM killer act. */
  readonly oom: boolean;
  /** The runtime created the container (it wrote its pid file). */
  readonly containerStarted: boolean;
}

export type ExitClass =
  | { readonly kind: 'ended'; readonly status: Exclude<RunStatus, 'failed_to_start'>; readonly exitCode: number }
  | { readonly kind: 'not_started'; readonly detail: string };

export function classifyExit(f: ExitFacts): ExitClass {
  if (f.stoppedBy !== null) return { kind: 'ended', status: f.stoppedBy, exitCode: EXIT_KILLED };
  const killedBySignal = f.signal === 'SIGKILL' || f.code === EXIT_KILLED;
  if (killedBySignal && f.oom) return { kind: 'ended', status: 'oom', exitCode: EXIT_KILLED };
  if (!f.containerStarted && f.code !== 0) return { kind: 'not_started', detail: `exit ${f.code ?? f.signal}` };
  return { kind: 'ended', status: 'exited', exitCode: f.code ?? 128 + (f.signalNumber ?? 0) };
}

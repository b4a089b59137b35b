/** Errors of the runtime monitor (src/monitor). Codes are API. */
import { AegisError } from '../errors.js';

export type MonitorErrorCode =
  /** The host cannot run the monitor (no bpftrace, tracefs not mounted, no BTF, not root). */
  | 'monitor.unavailable'
  /** bpftrace did not attach its probes (it exited, or said nothing within the bound). */
  | 'monitor.attach_failed'
  /** A cgroup id could not be read, or a list of them was empty or malformed. */
  | 'monitor.target_invalid'
  /** The monitor's directory is not root's private directory (another user could pose as the daemon). */
  | 'monitor.dir_unsafe';

export class MonitorError extends AegisError<MonitorErrorCode> {}

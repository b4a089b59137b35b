/** Errors of the alerting area. Codes are API: callers and tests branch on `code`. */
import { AegisError } from '../errors.js';

export type AlertErrorCode =
  /** A rule file does not parse or a rule is not valid (the message names file, line and column). */
  | 'alerts.rule_invalid'
  /** A rule file or events file cannot be read. */
  | 'alerts.io'
  /** An events file line is not an audit event. */
  | 'alerts.event_invalid'
  /** A delivery sink cannot be set up: its secret file is unsafe or unreadable, its CA file is not a certificate. */
  | 'alerts.sink_invalid';

export class AlertError extends AegisError<AlertErrorCode> {}

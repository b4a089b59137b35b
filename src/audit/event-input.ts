/**
 * Validation of what producers hand to the log (AuditEventInput): shape, sizes, JSON-only
 * payload. Producers are our own code, but a malformed event must fail loudly with
 * AuditError('audit.event_invalid') rather than poison the log. Pure.
 */
import { canonicalJson } from './canonical-json.js';
import { AuditError } from './errors.js';
import { UUID_V7_RE } from './event-id.js';
import type { AuditEvent, AuditEventInput } from './event.js';

const RFC3339_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/u;
const ACTION_RE = /^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$/u;
const MAX_FIELD = 1024;

function invalid(msg: string): AuditError {
  return new AuditError('audit.event_invalid', msg);
}

function optString(v: unknown, what: string): void {
  if (v !== undefined && (typeof v !== 'string' || v.length === 0 || v.length > MAX_FIELD)) {
    throw invalid(`${what} must be a non-empty string of at most ${MAX_FIELD} characters`);
  }
}

/**
 * Returns the complete event (v, id, time filled in) and the canonical JSON of its payload, or
 * throws audit.event_invalid.
 */
export function completeEvent(
  input: AuditEventInput,
  newId: () => string,
  nowIso: () => string,
): { event: AuditEvent; payloadJson: string } {
  if (typeof input !== 'object' || input === null) throw invalid('event must be an object');
  const { actor, action, decision, reason, subject, payload } = input;
  if (typeof actor !== 'object' || actor === null) throw invalid('actor must be an object');
  optString(actor.agent, 'actor.agent');
  optString(actor.execution, 'actor.execution');
  optString(actor.principal, 'actor.principal');
  if (typeof action !== 'string' || action.length > 128 || !ACTION_RE.test(action))
    throw invalid(`action ${JSON.stringify(action)} is not a dotted lowercase name`);
  if (decision !== 'allow' && decision !== 'deny' && decision !== 'error' && decision !== 'info')
    throw invalid('decision must be allow, deny, error or info');
  optString(reason, 'reason');
  optString(subject, 'subject');
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw invalid('payload must be an object');
  let payloadJson: string;
  try {
    payloadJson = canonicalJson(payload);
  } catch (cause) {
    throw new AuditError('audit.event_invalid', 'payload is not plain JSON', { cause });
  }
  if (input.id !== undefined && (typeof input.id !== 'string' || !UUID_V7_RE.test(input.id)))
    throw invalid('id must be a lowercase UUIDv7');
  if (
    input.time !== undefined &&
    (typeof input.time !== 'string' || !RFC3339_MS_UTC.test(input.time) || Number.isNaN(Date.parse(input.time)))
  ) {
    throw invalid('time must be RFC 3339 UTC with milliseconds (YYYY-MM-DDTHH:MM:SS.sssZ)');
  }
  // Fixed object shapes (absent fields are undefined, which every encoder skips): this runs once
  // per event.
  const event: AuditEvent = {
    v: 1,
    id: input.id ?? newId(),
    time: input.time ?? nowIso(),
    actor: { agent: actor.agent, execution: actor.execution, principal: actor.principal },
    action,
    decision,
    reason,
    subject,
    payload,
  };
  return { event, payloadJson };
}

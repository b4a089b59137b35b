/**
 * The one audit event type (version 1) for everything the security model logs: lifecycle,
 * network, filesystem, tools, resources, policy decisions, authentication, secrets, alerts.
 *
 * Producers (sandbox, gateway, CLI, server) build an `AuditEventInput`; the audit log assigns
 * `id` and `time` when they are absent and stores the canonical JSON form as a Merkle leaf.
 * Never put a secret value in a payload: name the secret and the host instead.
 */
/**
 * `deny`: a policy (or a gateway check) refused; `error`: it was allowed but failed (an
 * upstream that did not resolve, refused or timed out), so `--decision deny` lists only refusals.
 */
export type AuditDecision = 'allow' | 'deny' | 'error' | 'info';

export interface AuditActor {
  /** Agent name from the manifest (absent for host-level events such as API auth). */
  readonly agent?: string;
  /** Execution (run) id. */
  readonly execution?: string;
  /** Authenticated principal (API user, operator) when there is one. */
  readonly principal?: string;
}

export interface AuditEvent {
  /** Schema version of this event shape. */
  readonly v: 1;
  /** Time-ordered unique id (UUIDv7, RFC 9562). */
  readonly id: string;
  /** RFC 3339 UTC time with milliseconds. */
  readonly time: string;
  readonly actor: AuditActor;
  /** Dotted action name, e.g. `run.start`, `run.exit`, `net.dns`, `net.connect`, `http.request`. */
  readonly action: string;
  readonly decision: AuditDecision;
  /** Machine-readable reason code (policy DenyReason/AllowReason or an area's own code). */
  readonly reason?: string;
  /** Data subject this event concerns (for erasure); payload is encrypted under the subject's key. */
  readonly subject?: string;
  /** Action-specific details: JSON values only. */
  readonly payload: Readonly<Record<string, unknown>>;
}

/** What producers hand to the audit log: id and time are filled in when omitted. */
export type AuditEventInput = Omit<AuditEvent, 'v' | 'id' | 'time'> & { readonly id?: string; readonly time?: string };

/** Anything that accepts audit events: the audit log, a JSON-lines file, a test collector. */
export interface AuditSink {
  append(event: AuditEventInput): void | Promise<void>;
}

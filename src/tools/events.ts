/**
 * The broker's audit events (pure): `tool.call` for every call forwarded to a server (and for a
 * request the broker could not even read), `tool.denied` for every refusal, `tool.list` for
 * every listing. Action names and payload fields are API (docs/tools.md, docs/audit.md).
 *
 * Arguments are recorded as their JSON text, cut at ARGUMENTS_MAX_BYTES, with their full size:
 * the audit log encrypts payloads, but a tool call's arguments can be large (a document to
 * upload) and the log's budget is per execution.
 */
import type { AuditActor, AuditEventInput } from '../audit/event.js';
import type { EgressMatcher } from '../policy/types.js';

/** How much of a call's arguments (JSON text, UTF-8 bytes) an event keeps. */
export const ARGUMENTS_MAX_BYTES = 4096;
/** Host names taken from a call's arguments at most (the rest are counted only). */
export const ARGUMENT_HOSTS_MAX = 32;

/** What became of a forwarded call. */
export type ToolOutcome =
  /** The server answered with a result. */
  | 'result'
  /** The server answered with a result flagged `isError` (the tool failed; the protocol did not). */
  | 'is_error'
  /** A JSON-RPC error from the server, a message that broke the protocol, or one too large. */
  | 'protocol_error'
  /** No answer within the server's `timeout`. */
  | 'timeout'
  /** The server could not be reached (not started, connection refused or lost). */
  | 'unavailable';

export interface BoundedArguments {
  /** The arguments' JSON text, cut at ARGUMENTS_MAX_BYTES (on a character boundary). */
  readonly arguments: string;
  readonly argumentsBytes: number;
  readonly argumentsTruncated: boolean;
}

export function boundArguments(args: unknown): BoundedArguments {
  let text: string;
  try {
    text = JSON.stringify(args ?? {}) ?? 'null';
  } catch {
    text = '"<arguments not serializable>"';
  }
  const bytes = Buffer.byteLength(text);
  if (bytes <= ARGUMENTS_MAX_BYTES) return { arguments: text, argumentsBytes: bytes, argumentsTruncated: false };
  // Cut on a code point boundary: decode the first bytes leniently and drop a trailing partial character.
  let cut = Buffer.from(text).subarray(0, ARGUMENTS_MAX_BYTES).toString('utf8');
  if (cut.endsWith('\ufffd')) cut = cut.slice(0, -1);
  return { arguments: cut, argumentsBytes: bytes, argumentsTruncated: true };
}

// Host names in argument strings: the authority of a URL (scheme://host) and the domain of an
// e-mail address. Fixed patterns, linear; run on at most ARGUMENTS_SCAN_BYTES of text.
const URL_HOST = /[a-z][a-z0-9+.-]{0,31}:\/\/(?:[^\s/@?#]{0,256}@)?(\[[0-9a-f:.]{2,45}\]|[a-z0-9.-]{1,253})/gi;
const MAIL_DOMAIN = /[a-z0-9._%+-]{1,64}@([a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+)/gi;
const ARGUMENTS_SCAN_BYTES = 64 * 1024;

/** Host names (lower case, no trailing dot) that URLs and e-mail addresses in the arguments name, at most ARGUMENT_HOSTS_MAX. */
export function hostsInArguments(args: unknown): string[] {
  const hosts = new Set<string>();
  const strings: string[] = [];
  let budget = ARGUMENTS_SCAN_BYTES;
  const walk = (v: unknown, depth: number): void => {
    if (budget <= 0 || depth > 16) return;
    if (typeof v === 'string') {
      const s = v.slice(0, budget);
      budget -= s.length;
      strings.push(s);
    } else if (Array.isArray(v)) for (const x of v) walk(x, depth + 1);
    else if (v !== null && typeof v === 'object') for (const x of Object.values(v as Record<string, unknown>)) walk(x, depth + 1);
  };
  walk(args, 0);
  for (const s of strings) {
    for (const m of s.matchAll(URL_HOST)) hosts.add(m[1]!.toLowerCase().replace(/\.$/, ''));
    for (const m of s.matchAll(MAIL_DOMAIN)) hosts.add(m[1]!.toLowerCase().replace(/\.$/, ''));
    if (hosts.size >= ARGUMENT_HOSTS_MAX) break;
  }
  return [...hosts].filter((h) => h !== '').slice(0, ARGUMENT_HOSTS_MAX);
}

/** Of `hosts`, those the agent's own egress policy would not let it reach (on any port). */
export function hostsOutsideAllowlist(hosts: readonly string[], egress: EgressMatcher): string[] {
  return hosts.filter((h) => {
    const bare = h.startsWith('[') ? h.slice(1, -1) : h;
    return !egress.decideName(bare).allow && !egress.decide(bare, 443).allow && !egress.decide(bare, 80).allow;
  });
}

export interface ToolCallRecord {
  readonly server: string;
  readonly tool: string | null;
  readonly args: unknown;
  readonly durationMs: number;
  readonly outcome: ToolOutcome;
  /** The JSON-RPC error code and message (never the result) when the outcome is not a result. */
  readonly error?: { readonly code: number; readonly message: string };
  /** `tools.*` code when the broker itself ended the call (message too large, server unavailable). */
  readonly reason?: string;
  readonly resultBytes?: number;
  readonly rule?: string;
}

export function toolCallEvent(actor: AuditActor, r: ToolCallRecord, egress: EgressMatcher): AuditEventInput {
  const ok = r.outcome === 'result' || r.outcome === 'is_error';
  const hosts = hostsInArguments(r.args);
  return {
    actor,
    action: 'tool.call',
    decision: ok ? 'allow' : 'error',
    ...(ok ? { reason: r.rule ?? 'tool.allowed.name' } : { reason: r.reason ?? `tool.${r.outcome}` }),
    payload: {
      server: r.server,
      tool: r.tool,
      ...boundArguments(r.args),
      argumentHosts: hosts,
      hostsOutsideAllowlist: hostsOutsideAllowlist(hosts, egress),
      durationMs: Math.round(r.durationMs * 1000) / 1000,
      outcome: r.outcome,
      ...(r.error !== undefined ? { error: { code: r.error.code, message: r.error.message.slice(0, 512) } } : {}),
      ...(r.resultBytes !== undefined ? { resultBytes: r.resultBytes } : {}),
    },
  };
}

export function toolDeniedEvent(
  actor: AuditActor,
  d: { readonly server: string; readonly tool: unknown; readonly args: unknown; readonly reason: string; readonly detail: string },
): AuditEventInput {
  return {
    actor,
    action: 'tool.denied',
    decision: 'deny',
    reason: d.reason,
    payload: {
      server: d.server,
      tool: typeof d.tool === 'string' ? d.tool.slice(0, 256) : null,
      ...boundArguments(d.args),
      detail: d.detail,
    },
  };
}

export function toolListEvent(actor: AuditActor, server: string, offered: number, hidden: readonly string[]): AuditEventInput {
  return {
    actor,
    action: 'tool.list',
    decision: 'info',
    payload: { server, offered, hidden: hidden.slice(0, 64).map((t) => String(t).slice(0, 128)), hiddenCount: hidden.length },
  };
}

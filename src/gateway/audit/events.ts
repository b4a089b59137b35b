/**
 * Builders of the gateway's audit events (pure). Each returns an `AuditEventInput` the audit
 * log takes unchanged (it assigns `id`/`time`).
 *
 * Actions:
 * - `net.dns`       one per allowed DNS question: name, type, transport, rcode, answers; refused
 *                   ones only for their first occurrences (src/gateway/dns/fold.ts).
 * - `net.dns.summary` refused DNS questions counted instead (per reason, every second and at
 *                   close): count, questions [{name, type, count}], questionsOmitted.
 * - `net.connect`   one per connection (explicit proxy CONNECT, SOCKS5, transparent TLS/HTTP):
 *                   host, port, bytes sent/received, duration; denials are emitted at once.
 * - `http.request`  one per plain-HTTP request (forward proxy and transparent port 80).
 * - `net.blocked`   packets nftables dropped (direct connections to other ports or addresses,
 *                   ICMP, IPv6, non-DNS UDP): one per traffic class with drops since the last
 *                   reading (every second while the sandbox runs, and at teardown).
 *
 * `reason` is the policy's reason code (`net.allowed.*` / `net.denied.*`) when the policy
 * decided, or one of the gateway's own `GatewayReason` codes below.
 */
import type { AuditActor, AuditEventInput } from '../../audit/event.js';
import type { Decision } from '../../policy/types.js';

/** Reasons the gateway itself gives (not policy decisions). Part of the API: add, never repurpose. */
export type GatewayReason =
  /** Per-sandbox token bucket empty (HTTP 429 where the protocol allows). */
  | 'gateway.rate_limited'
  /** The byte quota of the sandbox is used up. */
  | 'gateway.quota_exceeded'
  /** TLS SNI differs from the CONNECT / SOCKS5 host (domain fronting). */
  | 'gateway.sni_mismatch'
  /** The ClientHello carries encrypted_client_hello: the real destination would be hidden. */
  | 'gateway.ech_refused'
  /** Transparent TLS without SNI: no name to decide on. */
  | 'gateway.sni_missing'
  /** HTTP Host header differs from the request-target / CONNECT host. */
  | 'gateway.host_mismatch'
  /** Transparent capture: the SNI/Host name is not one the agent resolved through the gateway. */
  | 'gateway.not_resolved'
  /** The agent's bytes did not parse (TLS, HTTP, SOCKS5, DNS). */
  | 'gateway.malformed'
  /** DNS question type other than A/AAAA (TXT, MX, ANY, ... tunnelling). */
  | 'gateway.dns_type_refused'
  /** Upstream resolution or connection failed (decision `error`: allowed, but it did not work). */
  | 'gateway.upstream_failed'
  /** A plain-HTTP proxy request for an https:// URL: the gateway never speaks TLS for the agent. */
  | 'gateway.scheme_refused'
  /** Only SOCKS5 CONNECT is offered (no BIND, no UDP ASSOCIATE). */
  | 'gateway.socks_command_refused'
  /** The sandbox already holds the maximum number of concurrent connections on a listener. */
  | 'gateway.too_many_connections'
  /** Packets nftables dropped: the sandbox has no route except through the gateway's listeners. */
  | 'gateway.no_route'
  /** The gateway closed (the run ended) before the question was answered; nothing was sent. */
  | 'gateway.closed'
  /** A destination the TLS terminator must see (bound secret, HTTP rules) reached on a byte-tunnel path (generic TCP). */
  | 'gateway.inspection_required'
  /** TLS termination: the upstream's certificate did not verify (unknown CA, wrong name, expired). */
  | 'gateway.upstream_cert_invalid';

export type ConnectMode = 'connect' | 'socks5' | 'transparent-tls' | 'transparent-http' | 'transparent-tcp' | 'forward';

/**
 * `deny`: refused (by the policy or a gateway check); `error`: allowed, but the upstream failed
 * (no address, refused, timed out, unusable answer). Kept apart so that a query for denials
 * shows only what was refused.
 */
export type Verdict =
  | { readonly decision: 'allow'; readonly reason: string }
  | { readonly decision: 'deny' | 'error'; readonly reason: string; readonly detail: string };

export function verdictOf(d: Decision): Verdict {
  return d.allow ? { decision: 'allow', reason: d.reason } : { decision: 'deny', reason: d.reason, detail: d.detail };
}

export function gatewayDeny(reason: GatewayReason, detail: string): Verdict {
  return { decision: 'deny', reason, detail };
}

/** An allowed destination whose upstream failed: an `error` outcome, never a denial. */
export function upstreamFailed(detail: string): Verdict {
  return { decision: 'error', reason: 'gateway.upstream_failed', detail };
}

function base(actor: AuditActor, action: string, v: Verdict, payload: Record<string, unknown>): AuditEventInput {
  const p = v.decision === 'allow' ? payload : { ...payload, detail: v.detail };
  return { actor, action, decision: v.decision, reason: v.reason, payload: p };
}

export interface DnsFacts {
  readonly name: string;
  /** Question type mnemonic (A, AAAA, TXT, ...) or TYPE<n>. */
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
  /** Response code sent to the agent (NOERROR, REFUSED, SERVFAIL, FORMERR), or `none` when no answer was sent. */
  readonly rcode: string;
  /** Addresses returned to the agent (empty when denied). */
  readonly answers: readonly string[];
}

export function dnsEvent(actor: AuditActor, v: Verdict, f: DnsFacts): AuditEventInput {
  return base(actor, 'net.dns', v, { name: f.name, type: f.type, transport: f.transport, rcode: f.rcode, answers: [...f.answers] });
}

export interface ConnectFacts {
  readonly mode: ConnectMode;
  /** The host the agent asked for (as sent, bounded), or null when it could not be read. */
  readonly host: string | null;
  readonly port: number | null;
  /** SNI seen in the agent's ClientHello, when there was one. */
  readonly sni?: string | null;
  /** Address the gateway connected to upstream, when it did. */
  readonly upstream?: string | null;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly durationMs: number;
}

export function connectEvent(actor: AuditActor, v: Verdict, f: ConnectFacts): AuditEventInput {
  return base(actor, 'net.connect', v, {
    mode: f.mode,
    host: f.host,
    port: f.port,
    sni: f.sni ?? null,
    upstream: f.upstream ?? null,
    bytesSent: f.bytesSent,
    bytesReceived: f.bytesReceived,
    durationMs: f.durationMs,
  });
}

export interface HttpFacts {
  /** `intercepted`: a request inside a TLS connection the gateway terminated (issue 12). */
  readonly mode: 'forward' | 'transparent-http' | 'intercepted';
  readonly method: string;
  /** Absolute URL (bounded length); query strings are kept: they are what exfiltration uses. */
  readonly url: string;
  /** Status the agent got (from upstream, or the gateway's own 4xx/5xx). */
  readonly status: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly durationMs: number;
}

export interface BlockedFacts {
  /** Traffic class: tcp, udp, icmp (IPv4), ipv6 (any IPv6 packet), other (any other IPv4 protocol). */
  readonly protocol: string;
  readonly packets: number;
  readonly bytes: number;
  /** Where they went, most packets first (bounded; `destinationsOmitted` says how many more). */
  readonly destinations: ReadonlyArray<{
    readonly address: string;
    readonly protocol: string;
    readonly port: number | null;
    readonly packets: number;
  }>;
  readonly destinationsOmitted: number;
}

/** Packets of one class that nftables dropped since the previous reading. */
export function blockedEvent(actor: AuditActor, f: BlockedFacts): AuditEventInput {
  const where =
    f.destinations.length > 0
      ? ` (to ${f.destinations.map((d) => (d.port === null ? d.address : `${d.address.includes(':') ? `[${d.address}]` : d.address}:${d.port}`)).join(', ')}${f.destinationsOmitted > 0 ? `, +${f.destinationsOmitted} more` : ''})`
      : '';
  const detail = `${f.packets} ${f.protocol} packet${f.packets === 1 ? '' : 's'} dropped by nftables${where}: the sandbox's only way out is the gateway`;
  return base(actor, 'net.blocked', gatewayDeny('gateway.no_route', detail), {
    protocol: f.protocol,
    packets: f.packets,
    bytes: f.bytes,
    destinations: f.destinations.map((d) => ({ address: d.address, protocol: d.protocol, port: d.port, packets: d.packets })),
    destinationsOmitted: f.destinationsOmitted,
  });
}

export function httpRequestEvent(actor: AuditActor, v: Verdict, f: HttpFacts): AuditEventInput {
  return base(actor, 'http.request', v, { ...f });
}

/** Cut an untrusted string to a bounded length for the log (the agent controls it). */
export function bounded(s: string, max = 2048): string {
  return s.length <= max ? s : `${s.slice(0, max)}…(${s.length - max} more)`;
}

/**
 * Byte tunnel between the agent and an upstream, shared by CONNECT, SOCKS5 and transparent TLS.
 *
 * TLS stays end to end: the gateway only reads the agent's ClientHello. (Except for the hosts the
 * TLS terminator must see, a bound secret's host or a host with method/path rules: `openTunnel`
 * hands those to src/gateway/intercept/ instead, or refuses them on paths that cannot.) When the first bytes
 * of a tunnel are a TLS handshake, the SNI must name the host the tunnel was opened for
 * (domain fronting is refused) and Encrypted Client Hello is refused (it would hide the name).
 * Bytes are counted against the sandbox's quota; one `net.connect` event is written at the end.
 */
import type { Socket } from 'node:net';
import type { Decision } from '../../policy/types.js';
import { connectEvent, gatewayDeny, upstreamFailed, verdictOf, type ConnectMode, type Verdict } from '../audit/events.js';
import { GatewayError } from '../errors.js';
import type { Session } from '../session.js';
import { looksLikeTls, parseClientHello, type ClientHelloResult } from './sni.js';
import { sameHost } from './authority.js';
import { connectTo, resolveTarget, type Upstream } from './upstream.js';

/** The agent must finish its ClientHello within this time (slowloris). */
export const HELLO_TIMEOUT_MS = 10_000;
/** Bytes a tunnel may queue towards one side before it stops reading the other (backpressure). */
export const TUNNEL_QUEUE_BYTES = 512 * 1024;
/** A tunnel with no traffic either way for this long is closed. */
export const TUNNEL_IDLE_MS = 15 * 60_000;

export interface TunnelInfo {
  readonly mode: ConnectMode;
  readonly host: string;
  readonly port: number;
  readonly startedAt: number;
  readonly allowReason: string;
}

/** What a tunnel is requested for, and the checks the caller adds (see `openTunnel`). */
export interface TunnelRequest {
  /** The name or address the policy decides on (and the upstream is resolved from). */
  readonly host: string;
  readonly port: number;
  /** The policy's decision for (host, port); called after the rate limit. */
  readonly decide: () => Decision;
  /** The caller's own check after the policy allowed (Host header, name resolved, ...). */
  readonly check?: () => Verdict | null;
  /** The caller already charged the rate limit (transparent TLS, before reading the hello). */
  readonly rateCharged?: boolean;
  /**
   * Connect to this address (one the gateway's own DNS answered for `host`) instead of
   * resolving `host` again; the DNS-rebinding guard still applies.
   */
  readonly address?: string;
  /**
   * The caller can hand the connection to the TLS terminator (CONNECT, SOCKS5, transparent
   * TLS). A destination the terminator must see (a bound secret's host, a host with method/path
   * rules) is then returned as `intercept` instead of being connected; on other paths (generic
   * TCP) it is refused (`gateway.inspection_required`): fail closed.
   */
  readonly interceptable?: boolean;
  /** The name the terminator decides on, when `host` is an address (generic TCP: the name the gateway's DNS answered). */
  readonly nameForIntercept?: () => string | null;
}

export type OpenedTunnel =
  | { readonly ok: true; readonly upstream: Upstream; readonly allowReason: string; readonly intercept?: undefined }
  | { readonly ok: true; readonly upstream?: undefined; readonly allowReason: string; readonly intercept: { readonly address: string } }
  | { readonly ok: false; readonly verdict: Verdict };

/**
 * The one check-then-connect path of every tunnel (CONNECT, SOCKS5, transparent TLS, generic
 * TCP), deny first: rate limit -> policy -> the caller's check -> byte quota -> resolution and
 * rebinding guard -> upstream connection. Only an allowed destination whose upstream then
 * fails is an `error` (gateway.upstream_failed); everything before is a denial. The caller
 * answers in its protocol and, on success, calls `runTunnel`.
 */
export async function openTunnel(session: Session, r: TunnelRequest): Promise<OpenedTunnel> {
  if (!r.rateCharged && !session.connections.take())
    return { ok: false, verdict: gatewayDeny('gateway.rate_limited', 'new-connection rate limit exceeded') };
  const decision = r.decide();
  if (!decision.allow) return { ok: false, verdict: verdictOf(decision) };
  const own = r.check?.() ?? null;
  if (own) return { ok: false, verdict: own };
  const interceptName = r.nameForIntercept?.() ?? r.host;
  const intercept = session.interceptor?.wants(interceptName, r.port) ?? false;
  if (intercept && !r.interceptable)
    return {
      ok: false,
      verdict: gatewayDeny(
        'gateway.inspection_required',
        `${r.host}:${r.port} must be seen by the gateway (a secret or HTTP rules), and this path is a byte tunnel`,
      ),
    };
  if (session.quota.exceeded()) return { ok: false, verdict: gatewayDeny('gateway.quota_exceeded', 'byte quota of the sandbox used up') };
  let address: string;
  if (r.address !== undefined) {
    const g = session.matcher.decideResolvedAddress(r.address);
    if (!g.allow) return { ok: false, verdict: verdictOf(g) };
    address = r.address;
  } else {
    const t = await resolveTarget(session, r.host);
    if (!t.ok) return t;
    address = t.address;
  }
  if (intercept) return { ok: true, allowReason: decision.reason, intercept: { address } };
  try {
    return { ok: true, upstream: await connectTo(address, r.port), allowReason: decision.reason };
  } catch (err) {
    return { ok: false, verdict: upstreamFailed(err instanceof Error ? err.message : String(err)) };
  }
}

/**
 * Read the agent's ClientHello from `sock` (with `head` already buffered). Resolves with the
 * buffered bytes and the parse result; rejects on timeout, close or malformed input.
 */
export function readClientHello(
  sock: Socket,
  head: Buffer,
): Promise<{ bytes: Buffer; hello: Extract<ClientHelloResult, { status: 'complete' }> }> {
  return new Promise((resolve, reject) => {
    let buf = head;
    const timer = setTimeout(() => finish(new GatewayError('gateway.tls_malformed', 'ClientHello not received in time')), HELLO_TIMEOUT_MS);
    const finish = (err: Error | null, hello?: Extract<ClientHelloResult, { status: 'complete' }>): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.pause();
      if (err) reject(err);
      else resolve({ bytes: buf, hello: hello! });
    };
    const tryParse = (): void => {
      try {
        const r = parseClientHello(buf);
        if (r.status === 'complete') finish(null, r);
      } catch (err) {
        finish(err as Error);
      }
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      tryParse();
    };
    const onClose = (): void => finish(new GatewayError('gateway.tls_malformed', 'connection closed before a complete ClientHello'));
    sock.on('data', onData);
    sock.once('close', onClose);
    if (buf.length > 0) tryParse();
    sock.resume();
  });
}

/** Why a ClientHello may not go to `host`, or null when it may. */
export function helloVerdict(hello: Extract<ClientHelloResult, { status: 'complete' }>, host: string): Verdict | null {
  if (hello.ech) return gatewayDeny('gateway.ech_refused', 'Encrypted Client Hello would hide the destination name');
  if (hello.sni !== null && !sameHost(hello.sni, host)) {
    return gatewayDeny('gateway.sni_mismatch', `TLS SNI ${hello.sni} differs from the requested host ${host}`);
  }
  return null;
}

/**
 * Run a tunnel between `client` (the agent) and `upstream`. The first client bytes are held
 * back until they are known not to be a fronted ClientHello. Writes the `net.connect` event.
 */
export function runTunnel(
  session: Session,
  client: Socket,
  up: Upstream,
  info: TunnelInfo,
  head: Buffer,
  sniKnown: string | null = null,
): void {
  const upstream = up.socket;
  // Read now: a destroyed socket no longer reports it (the event was written with null).
  const upstreamAddress = upstream.remoteAddress ?? null;
  client.setNoDelay(true);
  session.track(client);
  session.track(upstream);
  let sent = 0;
  let received = 0;
  let sni: string | null = sniKnown;
  let verdict: Verdict = { decision: 'allow', reason: info.allowReason };
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    client.destroy();
    upstream.destroy();
    session.emit(
      connectEvent(session.actor, verdict, {
        mode: info.mode,
        host: info.host,
        port: info.port,
        sni,
        upstream: upstreamAddress,
        bytesSent: sent,
        bytesReceived: received,
        durationMs: Math.round(session.now() - info.startedAt),
      }),
    );
  };
  client.on('error', finish);
  upstream.on('error', finish);
  client.once('close', finish);
  upstream.once('close', finish);
  // The agent may have gone while the upstream was being connected: its 'close' has fired.
  if (client.destroyed) {
    finish();
    return;
  }
  // An idle tunnel is closed (streams such as SSE send more often than this).
  client.setTimeout(TUNNEL_IDLE_MS, finish);
  upstream.setTimeout(TUNNEL_IDLE_MS, finish);

  const quotaCut = (): void => {
    verdict = gatewayDeny('gateway.quota_exceeded', 'byte quota of the sandbox used up');
    finish();
  };
  // Upstream -> agent (the bulk direction of a download): the upstream's own large reads.
  const toClient = writer(upstream, client, (n) => {
    received += n;
    if (!session.charge(n)) quotaCut();
  });
  up.attach(toClient.write);
  upstream.once('end', () => client.end());
  if (!toClient.waiting()) upstream.resume();

  const startPiping = (first: Buffer): void => {
    if (first.length > 0) {
      sent += first.length;
      if (!session.charge(first.length)) return quotaCut();
      upstream.write(first);
    }
    const toUpstream = writer(client, upstream, (n) => {
      sent += n;
      if (!session.charge(n)) quotaCut();
    });
    client.on('data', (c: Buffer) => toUpstream.write(c));
    client.once('end', () => upstream.end());
    client.resume();
  };

  const inspect = (first: Buffer): void => {
    if (!looksLikeTls(first[0]!)) return startPiping(first);
    readClientHello(client, first).then(
      ({ bytes, hello }) => {
        sni = hello.sni;
        const v = helloVerdict(hello, info.host);
        if (v) {
          verdict = v;
          return finish();
        }
        startPiping(bytes);
      },
      (err: unknown) => {
        verdict = gatewayDeny('gateway.malformed', err instanceof Error ? err.message : String(err));
        finish();
      },
    );
  };

  if (sniKnown !== null) return startPiping(head); // transparent TLS: the hello was already checked
  if (head.length > 0) return inspect(head);
  client.once('data', (first: Buffer) => {
    client.pause();
    inspect(first);
  });
  client.resume();
}

/**
 * A sink for `from`'s chunks that writes them to `to`, counting bytes, with backpressure:
 * `from` is paused while `to` has more queued than its high-water mark.
 */
function writer(
  from: Socket,
  to: Socket,
  count: (n: number) => void,
): { write: (c: Buffer, done?: () => void) => void; waiting: () => boolean } {
  let waiting = false;
  const resume = (): void => {
    waiting = false;
    from.resume();
  };
  return {
    write: (c: Buffer, done?: () => void) => {
      count(c.length);
      // `done` (the buffer may be reused) only after a successful write: a failed one may still hold it.
      // Pause the reader only once TUNNEL_QUEUE_BYTES are queued, not at the socket's 16 KiB
      // high-water mark: a 256 KiB read always exceeds that, and stop-and-go per read halved raw
      // TCP throughput (the kernel's send buffer then runs dry while the reader waits).
      if (
        !to.write(c, done && ((err?: Error | null) => void (err ? undefined : done()))) &&
        to.writableLength >= TUNNEL_QUEUE_BYTES &&
        !waiting
      ) {
        waiting = true;
        from.pause();
        to.once('drain', resume);
      }
    },
    waiting: () => waiting,
  };
}

/** Emit a denial `net.connect` event for a connection refused before any tunnel existed. */
export function auditDenied(
  session: Session,
  mode: ConnectMode,
  host: string | null,
  port: number | null,
  verdict: Verdict,
  startedAt: number,
  sni: string | null = null,
): void {
  session.emit(
    connectEvent(session.actor, verdict, {
      mode,
      host,
      port,
      sni,
      bytesSent: 0,
      bytesReceived: 0,
      durationMs: Math.round(session.now() - startedAt),
    }),
  );
}

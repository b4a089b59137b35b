/**
 * TLS termination for the hosts the gateway must see (issue 12): the hosts a secret of this
 * execution is bound to, and the hosts with HTTP method/path rules. Every other destination
 * stays an end-to-end byte tunnel (tunnel.ts).
 *
 * For an intercepted connection the gateway completes the agent's TLS handshake with a leaf
 * certificate from the execution's CA (ca.ts), reads each request (HTTP/1.1, or HTTP/2 when the
 * agent's ALPN asks for h2), decides it
 * (method/path rules), swaps this execution's placeholders for the values where the secret may
 * go (src/secrets/inject.ts) or refuses it (403, `secret.denied`), and sends it on a new TLS
 * connection to the address the gateway resolved, verifying the upstream's certificate and
 * name against the host's trust store (plus the operator's `upstreamCaFile`, never anything the
 * agent controls).
 *
 * LIMITATION: requests go upstream as HTTP/1.1 (keep-alive), whatever the agent spoke. Bodies: the first BODY_SCAN_BYTES of a
 * request body are read before it is sent, and a placeholder there refuses the request if its
 * secret is not bound to the host; placeholders are never swapped in bodies, and bytes past
 * that window are not scanned. Upgrades (WebSocket) are not relayed on intercepted hosts.
 */
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createH2Server, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { AuditEventInput } from '../../audit/event.js';
import { checkBody, hostBound, injectRequest, type InjectableSecret } from '../../secrets/inject.js';
import {
  connectEvent,
  gatewayDeny,
  httpRequestEvent,
  upstreamFailed,
  verdictOf,
  bounded,
  type ConnectMode,
  type Verdict,
} from '../audit/events.js';
import type { Session } from '../session.js';
import { parseAuthority, sameHost } from '../proxy/authority.js';
import type { ExecutionCa } from './ca.js';

/** Request-body bytes read (and scanned for placeholders) before the request is sent upstream. */
export const BODY_SCAN_BYTES = 64 * 1024;
const REQUEST_TIMEOUT_MS = 5 * 60_000;
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);
/** Node's codes for a certificate that did not verify. */
const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|HOSTNAME|ERR_TLS_CERT/;

interface Conn {
  readonly host: string;
  readonly port: number;
  readonly address: string;
}

export interface InterceptorOptions {
  readonly ca: ExecutionCa;
  readonly secrets: readonly InjectableSecret[];
  /** PEM certificates the upstream's chain must lead to (the host's store, plus upstreamCaFile). */
  readonly trustedCas: readonly string[];
  /** Ports on which a bound secret's host is terminated (default 443; other ports stay tunnels). */
  readonly tlsPorts?: readonly number[];
  /**
   * Whether this run may still use `version` of `secret` (expiry, rotation overlap, removal;
   * `validForRun` against the store). Asked before a swap, at most every VALIDITY_CACHE_MS per
   * secret. Absent: always (tests, benchmarks). A failing check refuses (fail closed).
   */
  readonly stillValid?: (secret: string, version: number) => Promise<boolean>;
  /** How long a validity answer is reused (default VALIDITY_CACHE_MS). */
  readonly validityCacheMs?: number;
}

/** How long a validity answer is reused (the store is read at most this often per secret). */
export const VALIDITY_CACHE_MS = 1000;

export class Interceptor {
  private readonly conns = new WeakMap<Socket, Conn>();
  private readonly contexts = new Map<string, SecureContext>();
  private readonly validity = new Map<string, { at: number; valid: Promise<boolean> }>();
  private readonly server: Server;
  private readonly agent: HttpsAgent;

  constructor(
    private readonly session: Session,
    private readonly o: InterceptorOptions,
  ) {
    this.agent = new HttpsAgent({ keepAlive: true, maxSockets: 64, ca: [...o.trustedCas] });
    this.server = createServer({
      maxHeaderSize: 16 * 1024,
      headersTimeout: 10_000,
      requestTimeout: REQUEST_TIMEOUT_MS,
      keepAliveTimeout: 5_000,
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const conn = this.conns.get(req.socket);
      if (!conn) return void res.destroy();
      this.handle(req, res, conn, false).catch((err: unknown) => {
        process.stderr.write(`aegis gateway: intercept: ${String(err)}\n`);
        res.destroy();
      });
    });
    // Unparseable bytes inside the terminated TLS (or a header/request timeout): audited, that connection closed.
    this.server.on('clientError', (err: NodeJS.ErrnoException, sock: Socket) => {
      const conn = this.conns.get(sock);
      this.session.emit(
        httpRequestEvent(this.session.actor, gatewayDeny('gateway.malformed', `unparseable request (${err.code ?? err.message})`), {
          mode: 'intercepted',
          method: '',
          url: conn ? `https://${conn.host}${conn.port === 443 ? '' : `:${conn.port}`}` : '',
          status: 400,
          bytesSent: 0,
          bytesReceived: 0,
          durationMs: 0,
        }),
      );
      sock.destroy();
    });
  }

  /** Whether connections to `host:port` must be terminated: a bound secret's host, or HTTP rules. */
  wants(host: string, port: number): boolean {
    if (this.session.matcher.inspectsHttp(host, port)) return true;
    return (this.o.tlsPorts ?? [443]).includes(port) && this.o.secrets.some((s) => hostBound(s.hosts, host));
  }

  close(): void {
    this.agent.destroy();
    this.server.close();
  }

  /**
   * Terminate the agent's TLS on `client` (its first bytes in `head`) for `host`, already
   * allowed and resolved to `address`. Writes `net.connect` when the connection ends.
   */
  async serve(
    client: Socket,
    head: Buffer,
    info: { mode: ConnectMode; host: string; port: number; address: string; startedAt: number; allowReason: string },
  ): Promise<void> {
    const session = this.session;
    session.track(client);
    client.setNoDelay(true);
    let verdict: Verdict = { decision: 'allow', reason: info.allowReason };
    let sni: string | null = null;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      client.destroy();
      session.emit(
        connectEvent(session.actor, verdict, {
          mode: info.mode,
          host: info.host,
          port: info.port,
          sni,
          upstream: info.address,
          bytesSent: client.bytesRead,
          bytesReceived: client.bytesWritten,
          durationMs: Math.round(session.now() - info.startedAt),
        }),
      );
    };
    client.once('close', finish);
    let leaf;
    try {
      leaf = await this.o.ca.leafFor(info.host);
    } catch (err) {
      verdict = upstreamFailed(`no certificate for ${info.host}: ${String(err)}`);
      return finish();
    }
    // Bytes already read (the ClientHello of transparent capture) cannot be unshifted into a
    // socket whose handle TLS takes over: the TLS layer then reads a stream that replays them.
    const transport = head.length > 0 ? replaying(client, head) : client;
    let secureContext = this.contexts.get(info.host);
    if (secureContext === undefined) {
      // One context per host and run (parsing the key and chain per connection cost ~1/3 of a handshake).
      secureContext = createSecureContext({ cert: leaf.certPem, key: leaf.keyPem, minVersion: 'TLSv1.2' });
      this.contexts.set(info.host, secureContext);
    }
    const tls = new TLSSocket(transport as Socket, { isServer: true, secureContext, ALPNProtocols: ['h2', 'http/1.1'] });
    tls.on('error', () => {
      tls.destroy();
      client.destroy();
    });
    tls.once('secure', () => {
      const name = (tls as TLSSocket & { servername?: string | false }).servername;
      sni = typeof name === 'string' ? name : null;
      if (sni !== null && !sameHost(sni, info.host)) {
        verdict = gatewayDeny('gateway.sni_mismatch', `TLS SNI ${sni} differs from the requested host ${info.host}`);
        tls.destroy();
        return finish();
      }
      const conn: Conn = { host: info.host, port: info.port, address: info.address };
      if (tls.alpnProtocol === 'h2') return this.serveH2(tls, conn);
      this.conns.set(tls, conn);
      this.server.emit('connection', tls);
    });
    client.resume();
  }

  /**
   * HTTP/2 from the agent (ALPN h2): an h2 session over the terminated TLS socket, one per
   * connection; each stream goes through the same `handle` (Node's compatibility API), and
   * upstream it becomes an HTTP/1.1 request.
   */
  private serveH2(tls: TLSSocket, conn: Conn): void {
    const h2 = createH2Server({ maxSessionMemory: 16, settings: { maxConcurrentStreams: 100, maxHeaderListSize: 16 * 1024 } });
    h2.on('request', (req: Http2ServerRequest, res: Http2ServerResponse) => {
      this.handle(req as unknown as IncomingMessage, res as unknown as ServerResponse, conn, true).catch((err: unknown) => {
        process.stderr.write(`aegis gateway: intercept (h2): ${String(err)}\n`);
        res.destroy();
      });
    });
    h2.on('sessionError', () => tls.destroy());
    tls.once('close', () => h2.close());
    // Over a JS stream: an h2 session given the TLS socket itself (its native handle) received nothing.
    h2.emit('connection', replaying(tls, Buffer.alloc(0)));
  }

  private async handle(req: IncomingMessage, res: ServerResponse, conn: Conn, h2: boolean): Promise<void> {
    const session = this.session;
    const startedAt = session.now();
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const url = bounded(`https://${conn.host}${conn.port === 443 ? '' : `:${conn.port}`}${redactPlaceholders(path)}`);
    let sent = 0;
    let received = 0;
    const audit = (v: Verdict, status: number): void =>
      session.emit(
        httpRequestEvent(session.actor, v, {
          mode: 'intercepted',
          method,
          url,
          status,
          bytesSent: sent,
          bytesReceived: received,
          durationMs: Math.round(session.now() - startedAt),
        }),
      );
    const refuse = (v: Verdict, status: number): void => {
      audit(v, status);
      const body = `${JSON.stringify({ error: v.decision === 'error' ? 'allowed, but the upstream failed (AEGIS egress gateway)' : 'denied by AEGIS egress policy', reason: v.reason, detail: v.decision === 'allow' ? '' : v.detail })}\n`;
      if (!res.headersSent)
        res.writeHead(status, {
          'X-Aegis-Decision': v.decision,
          'X-Aegis-Reason': v.reason,
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
          ...(h2 ? {} : { Connection: 'close' }), // HTTP/2 has no connection-specific fields
        });
      res.end(body);
      req.resume();
    };
    if (!path.startsWith('/')) return refuse(gatewayDeny('gateway.malformed', 'request-target is not origin-form'), 400);
    const hostHeader = (h2 ? (req.headers[':authority'] as string | undefined) : undefined) ?? req.headers.host;
    if (hostHeader !== undefined) {
      let ok = false;
      try {
        ok = sameHost(parseAuthority(hostHeader, conn.port).host, conn.host);
      } catch {
        ok = false;
      }
      if (!ok)
        return refuse(gatewayDeny('gateway.host_mismatch', `Host header ${bounded(hostHeader, 200)} differs from ${conn.host}`), 403);
    }
    if (!session.connections.take()) return refuse(gatewayDeny('gateway.rate_limited', 'request rate limit exceeded'), 429);
    if (session.quota.exceeded()) return refuse(gatewayDeny('gateway.quota_exceeded', 'byte quota of the sandbox used up'), 429);
    const decision = session.matcher.decideHttp(conn.host, conn.port, method, path);
    if (!decision.allow) return refuse(verdictOf(decision), 403);

    const pairs: Array<[string, string]> = [];
    // (HTTP/2 pseudo-headers are not forwarded: the path and authority are handled apart.)
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
      if (!req.rawHeaders[i]!.startsWith(':')) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    const injected = injectRequest(this.o.secrets, conn.host, pairs, path, false);
    if (!injected.ok) {
      this.denied(injected, conn.host);
      return refuse({ decision: 'deny', reason: injected.reason, detail: injected.detail }, 403);
    }

    // The first body bytes, scanned before anything is sent.
    const head = await readHead(req, BODY_SCAN_BYTES);
    if (head === null) return void res.destroy();
    const bodyRefusal = checkBody(this.o.secrets, conn.host, head.bytes.toString('latin1'), false);
    if (bodyRefusal) {
      this.denied(bodyRefusal, conn.host);
      return refuse({ decision: 'deny', reason: bodyRefusal.reason, detail: bodyRefusal.detail }, 403);
    }
    for (const u of injected.uses) {
      if (await this.stillValid(u.secret, u.version)) continue;
      const r = {
        reason: 'secrets.credential_retired',
        secret: u.secret,
        version: u.version,
        where: u.where === 'query' ? 'the query' : `header ${u.where}`,
        detail: `version ${u.version} of secret ${u.secret} is no longer valid for this run (expired, removed, or rotated out longer ago than the overlap)`,
      };
      this.denied(r, conn.host);
      return refuse({ decision: 'deny', reason: r.reason, detail: r.detail }, 403);
    }
    for (const u of injected.uses)
      session.emit({
        actor: session.actor,
        action: 'secret.use',
        decision: 'allow',
        reason: 'secrets.injected',
        payload: { secret: u.secret, version: u.version, host: conn.host, header: u.where, method },
      });

    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of injected.headers) {
      const lower = k.toLowerCase();
      if (HOP_BY_HOP.has(lower)) continue;
      const prev = headers[lower];
      headers[lower] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    headers.host = conn.port === 443 ? conn.host : `${conn.host}:${conn.port}`;
    if (req.headers['transfer-encoding'] !== undefined && req.headers['content-length'] === undefined && head.ended)
      headers['content-length'] = String(head.bytes.length);
    const up = httpsRequest({
      host: conn.address,
      port: conn.port,
      servername: conn.host,
      method,
      path: injected.path,
      headers,
      agent: this.agent,
      setHost: false,
    });
    up.setTimeout(REQUEST_TIMEOUT_MS, () => up.destroy(new Error('upstream timed out')));
    const allowed = verdictOf(decision);
    up.on('response', (ur) => {
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(ur.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      const status = ur.statusCode ?? 0;
      if (status < 100 || status > 599 || status === 101) {
        ur.destroy();
        return refuse(upstreamFailed(`upstream answered with status ${status}`), 502);
      }
      try {
        res.writeHead(status, out);
      } catch (err) {
        ur.destroy();
        return refuse(upstreamFailed(`upstream response not relayable: ${(err as Error).message}`), 502);
      }
      ur.on('data', (c: Buffer) => {
        received += c.length;
        if (!session.charge(c.length)) {
          ur.destroy();
          res.destroy();
        }
      });
      ur.pipe(res);
      res.once('close', () => audit(allowed, status));
    });
    res.once('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      const certBad = CERT_ERRORS.test(err.code ?? '') || CERT_ERRORS.test(err.message);
      const v = certBad
        ? gatewayDeny('gateway.upstream_cert_invalid', `the certificate of ${conn.host} did not verify: ${err.code ?? err.message}`)
        : upstreamFailed(err.message);
      if (!res.headersSent) refuse(v, 502);
      else res.destroy();
    });
    sent += head.bytes.length;
    if (!session.charge(head.bytes.length)) return void up.destroy(new Error('byte quota exceeded'));
    if (head.bytes.length > 0) up.write(head.bytes);
    if (head.ended) return void up.end();
    req.on('data', (c: Buffer) => {
      sent += c.length;
      if (!session.charge(c.length)) up.destroy(new Error('byte quota exceeded'));
    });
    req.pipe(up);
  }

  private stillValid(secret: string, version: number): Promise<boolean> {
    const check = this.o.stillValid;
    if (check === undefined) return Promise.resolve(true);
    const now = performance.now();
    const key = `${secret}\0${version}`;
    const hit = this.validity.get(key);
    if (hit !== undefined && now - hit.at < (this.o.validityCacheMs ?? VALIDITY_CACHE_MS)) return hit.valid;
    const valid = check(secret, version).catch(() => false);
    this.validity.set(key, { at: now, valid });
    return valid;
  }

  private denied(r: { reason: string; secret: string | null; version: number | null; where: string; detail: string }, host: string): void {
    const e: AuditEventInput = {
      actor: this.session.actor,
      action: 'secret.denied',
      decision: 'deny',
      reason: r.reason,
      payload: { secret: r.secret, version: r.version, host, where: r.where, detail: r.detail },
    };
    this.session.emit(e);
  }
}

/** A duplex over `sock` whose readable side first yields `head` (may be empty). */
function replaying(sock: Socket, head: Buffer): Duplex {
  const d = new Duplex({
    read() {
      sock.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      sock.write(chunk, cb);
    },
    final(cb) {
      sock.end();
      cb();
    },
    destroy(err, cb) {
      sock.destroy();
      cb(err);
    },
  });
  if (head.length > 0) d.push(head);
  sock.on('data', (c: Buffer) => {
    if (!d.push(c)) sock.pause();
  });
  sock.once('end', () => d.push(null));
  sock.once('close', () => d.destroy());
  sock.on('error', (err) => d.destroy(err));
  return d;
}

/** The URL for the log: placeholders replaced by a marker (the log never holds one). */
export function redactPlaceholders(s: string): string {
  return s.replace(/aegis-ph-[0-9a-f]{32}/gi, 'aegis-ph-[redacted]');
}

/** Read up to `max` body bytes (or to its end); null when the agent went away. */
function readHead(req: IncomingMessage, max: number): Promise<{ bytes: Buffer; ended: boolean } | null> {
  return new Promise((resolve) => {
    if (req.readableEnded) return resolve({ bytes: Buffer.alloc(0), ended: true });
    const chunks: Buffer[] = [];
    let n = 0;
    const finish = (v: { bytes: Buffer; ended: boolean } | null): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      if (v && !v.ended) req.pause();
      resolve(v);
    };
    const onData = (c: Buffer): void => {
      chunks.push(c);
      n += c.length;
      if (n >= max) finish({ bytes: Buffer.concat(chunks), ended: false });
    };
    const onEnd = (): void => finish({ bytes: Buffer.concat(chunks), ended: true });
    const onClose = (): void => finish(req.readableEnded ? { bytes: Buffer.concat(chunks), ended: true } : null);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
  });
}

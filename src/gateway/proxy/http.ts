/**
 * HTTP listeners: the explicit proxy (CONNECT tunnels and absolute-form plain-HTTP forwarding,
 * what HTTP_PROXY/HTTPS_PROXY point at) and the transparent port-80 capture (origin-form
 * requests, destination from the Host header).
 *
 * Every request is decided deny-first: parse -> rate limit -> host consistency -> policy ->
 * resolution + rebinding guard. Denials answer 403 (429 when rate limited) with
 * `X-Aegis-Reason: <code>` and a JSON body, and are audited.
 *
 * HOSTILE INPUT: Node's llhttp parses the agent's bytes with `maxHeaderSize`; header and
 * request timeouts bound slowloris; a parse error costs only that connection (`clientError`).
 */
import { Agent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { gatewayDeny, httpRequestEvent, upstreamFailed, verdictOf, bounded, type Verdict } from '../audit/events.js';
import { GatewayError } from '../errors.js';
import type { Session } from '../session.js';
import { parseAbsoluteUrl, parseAuthority, sameHost, type Authority } from './authority.js';
import { resolveTarget } from './upstream.js';
import { auditDenied, openTunnel, runTunnel } from './tunnel.js';
import { injectRequest } from '../../secrets/inject.js';
import { redactPlaceholders } from '../intercept/terminate.js';

export const MAX_HEADER_BYTES = 16 * 1024;
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 5 * 60_000;

/** Hop-by-hop and proxy headers that are never forwarded (RFC 9110 §7.6.1). */
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
]);

export type HttpMode = 'explicit' | 'transparent';

function denyBody(v: Verdict): string {
  const error = v.decision === 'error' ? 'allowed, but the upstream failed (AEGIS egress gateway)' : 'denied by AEGIS egress policy';
  return `${JSON.stringify({ error, reason: v.reason, detail: v.decision === 'allow' ? '' : v.detail })}\n`;
}

function statusFor(v: Verdict): number {
  if (v.reason === 'gateway.rate_limited' || v.reason === 'gateway.quota_exceeded') return 429;
  if (v.reason === 'gateway.malformed' || v.reason === 'gateway.scheme_refused') return 400;
  if (v.reason === 'gateway.upstream_failed') return 502;
  return 403;
}

function denyHead(v: Verdict): string {
  const status = statusFor(v);
  const body = denyBody(v);
  return `HTTP/1.1 ${status} ${status === 429 ? 'Too Many Requests' : status === 400 ? 'Bad Request' : status === 502 ? 'Bad Gateway' : 'Forbidden'}\r\nX-Aegis-Decision: ${v.decision}\r\nX-Aegis-Reason: ${v.reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

export function startHttpListener(session: Session, mode: HttpMode, host: string, port = 0): Promise<Server> {
  const upstreamAgent = new Agent({ keepAlive: true, maxSockets: 64 });
  const server = createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    headersTimeout: HEADERS_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: 5_000,
    connectionsCheckingInterval: 1_000,
  });
  session.guard(server, mode === 'explicit' ? 'connect' : 'transparent-http');
  server.on('connection', (s: Socket) => {
    session.track(s);
    s.on('error', () => s.destroy());
  });
  server.on('request', (req, res) => {
    handleRequest(session, mode, upstreamAgent, req, res).catch((err: unknown) => {
      process.stderr.write(`aegis gateway: http: ${String(err)}\n`);
      res.destroy();
    });
  });
  server.on('connect', (req: IncomingMessage, sock: Socket, head: Buffer) => {
    handleConnect(session, mode, req, sock, head).catch((err: unknown) => {
      process.stderr.write(`aegis gateway: connect: ${String(err)}\n`);
      sock.destroy();
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, sock: Socket) => {
    const code = err.code ?? '';
    const detail =
      code === 'HPE_HEADER_OVERFLOW'
        ? 'request header block too large'
        : code.includes('TIMEOUT')
          ? 'request not received in time'
          : `unparseable request (${code || err.message})`;
    auditDenied(
      session,
      mode === 'explicit' ? 'forward' : 'transparent-http',
      null,
      null,
      gatewayDeny('gateway.malformed', detail),
      session.now(),
    );
    if (sock.writable && !sock.destroyed) {
      const status =
        code === 'HPE_HEADER_OVERFLOW'
          ? '431 Request Header Fields Too Large'
          : code.includes('TIMEOUT')
            ? '408 Request Timeout'
            : '400 Bad Request';
      sock.end(`HTTP/1.1 ${status}\r\nX-Aegis-Reason: gateway.malformed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    sock.destroy();
  });
  server.on('close', () => upstreamAgent.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(new GatewayError('gateway.listen_failed', `HTTP listener on ${host}:${port}: ${err.message}`, { cause: err })),
    );
    server.listen(port, host, () => resolve(server));
  });
}

async function handleConnect(session: Session, mode: HttpMode, req: IncomingMessage, sock: Socket, head: Buffer): Promise<void> {
  const startedAt = session.now();
  const refuse = (v: Verdict, a: Authority | null): void => {
    auditDenied(session, 'connect', a?.host ?? bounded(req.url ?? '', 300), a?.port ?? null, v, startedAt);
    sock.end(denyHead(v));
  };
  if (mode !== 'explicit') return refuse(gatewayDeny('gateway.malformed', 'CONNECT on the transparent port'), null);
  let target: Authority;
  try {
    target = parseAuthority(req.url ?? '', null);
  } catch (err) {
    return refuse(gatewayDeny('gateway.malformed', (err as Error).message), null);
  }
  const hostHeader = req.headers.host;
  const hostConsistent = (): Verdict | null => {
    if (hostHeader === undefined) return null;
    let h: Authority | null = null;
    try {
      h = parseAuthority(hostHeader, target.port);
    } catch {
      h = null;
    }
    return !h || !sameHost(h.host, target.host)
      ? gatewayDeny('gateway.host_mismatch', `Host header ${bounded(hostHeader, 200)} differs from CONNECT ${target.host}`)
      : null;
  };
  const opened = await openTunnel(session, {
    host: target.host,
    port: target.port,
    decide: () => session.matcher.decide(target.host, target.port),
    check: hostConsistent,
    interceptable: true,
  });
  if (!opened.ok) return refuse(opened.verdict, target);
  if (opened.intercept) {
    if (sock.destroyed) return;
    sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    return session.interceptor!.serve(sock, head, {
      mode: 'connect',
      host: target.host,
      port: target.port,
      address: opened.intercept.address,
      startedAt,
      allowReason: opened.allowReason,
    });
  }
  if (sock.destroyed) {
    opened.upstream.socket.destroy();
    return;
  }
  sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  runTunnel(
    session,
    sock,
    opened.upstream,
    { mode: 'connect', host: target.host, port: target.port, startedAt, allowReason: opened.allowReason },
    head,
  );
}

async function handleRequest(session: Session, mode: HttpMode, agent: Agent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const startedAt = session.now();
  const eventMode = mode === 'explicit' ? 'forward' : 'transparent-http';
  const method = req.method ?? 'GET';
  let urlForLog = bounded(req.url ?? '');
  let sent = 0;
  let received = 0;
  const audit = (v: Verdict, status: number): void => {
    session.emit(
      httpRequestEvent(session.actor, v, {
        mode: eventMode,
        method,
        url: urlForLog,
        status,
        bytesSent: sent,
        bytesReceived: received,
        durationMs: Math.round(session.now() - startedAt),
      }),
    );
  };
  const refuse = (v: Verdict): void => {
    const status = statusFor(v);
    audit(v, status);
    const body = denyBody(v);
    res.writeHead(status, {
      'X-Aegis-Decision': v.decision,
      'X-Aegis-Reason': v.reason,
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      Connection: 'close',
    });
    res.end(body);
    req.resume();
  };

  // 1. Where does the agent want to go?
  let target: Authority;
  let path: string;
  const hostHeader = req.headers.host;
  try {
    if (mode === 'explicit') {
      const u = parseAbsoluteUrl(req.url ?? '');
      if (u.scheme !== 'http') {
        return refuse(
          gatewayDeny('gateway.scheme_refused', `${u.scheme}: URLs are not forwarded over plain HTTP (use CONNECT; TLS stays end to end)`),
        );
      }
      target = u.authority;
      path = u.path;
    } else {
      if (hostHeader === undefined) return refuse(gatewayDeny('gateway.malformed', 'request without a Host header'));
      target = parseAuthority(hostHeader, 80);
      path = req.url ?? '/';
      if (!path.startsWith('/')) return refuse(gatewayDeny('gateway.malformed', 'transparent request-target is not origin-form'));
      urlForLog = bounded(`http://${hostHeader}${path}`);
    }
  } catch (err) {
    return refuse(gatewayDeny('gateway.malformed', (err as Error).message));
  }

  // 2. Deny first: rate, policy, consistency.
  if (!session.connections.take()) return refuse(gatewayDeny('gateway.rate_limited', 'request rate limit exceeded'));
  const decision = session.matcher.decideHttp(target.host, target.port, method, path);
  if (!decision.allow) return refuse(verdictOf(decision));
  // A placeholder never goes out in clear text, nor to a host its secret is not bound to.
  if (session.secrets.length > 0) {
    const pairs: Array<[string, string]> = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    const r = injectRequest(session.secrets, target.host, pairs, path, true);
    if (!r.ok) {
      urlForLog = redactPlaceholders(urlForLog);
      session.emit({
        actor: session.actor,
        action: 'secret.denied',
        decision: 'deny',
        reason: r.reason,
        payload: { secret: r.secret, version: r.version, host: target.host, where: r.where, detail: r.detail },
      });
      return refuse({ decision: 'deny', reason: r.reason, detail: r.detail });
    }
  }
  if (mode === 'explicit' && hostHeader !== undefined) {
    let h: Authority | null;
    try {
      h = parseAuthority(hostHeader, target.port);
    } catch {
      h = null;
    }
    if (!h || !sameHost(h.host, target.host)) {
      return refuse(
        gatewayDeny('gateway.host_mismatch', `Host header ${bounded(hostHeader, 200)} differs from the request-target host ${target.host}`),
      );
    }
  }
  if (mode === 'transparent' && !session.wasResolved(target.host)) {
    return refuse(gatewayDeny('gateway.not_resolved', `Host ${target.host} was not resolved through the gateway's DNS`));
  }
  if (session.quota.exceeded()) return refuse(gatewayDeny('gateway.quota_exceeded', 'byte quota of the sandbox used up'));
  const t = await resolveTarget(session, target.host);
  if (!t.ok) return refuse(t.verdict);

  // 3. Forward. The Host header is the agent's own (checked above) or the request-target's.
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
  }
  headers.host = hostHeader ?? (target.port === 80 ? target.host : `${target.host}:${target.port}`);
  const allowed: Verdict = verdictOf(decision);
  const up = httpRequest({ host: t.address, port: target.port, method, path, headers, agent, setHost: false });
  up.setTimeout(REQUEST_TIMEOUT_MS, () => up.destroy(new Error('upstream timed out')));
  up.on('response', (ur) => {
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(ur.headers)) {
      if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
    }
    // The upstream's bytes are untrusted too: a status Node cannot relay (000-099, 101 outside
    // an upgrade, > 599) or headers it refuses would throw here, outside any handler.
    const status = ur.statusCode ?? 0;
    if (status < 100 || status > 599 || status === 101) {
      ur.destroy();
      refuse(upstreamFailed(`upstream answered with status ${status}`));
      return;
    }
    try {
      res.writeHead(status, out);
    } catch (err) {
      ur.destroy();
      refuse(upstreamFailed(`upstream response not relayable: ${(err as Error).message}`));
      return;
    }
    let cut: Verdict | null = null;
    ur.on('data', (c: Buffer) => {
      received += c.length;
      if (!session.charge(c.length)) {
        cut = gatewayDeny('gateway.quota_exceeded', 'byte quota of the sandbox used up during the response');
        ur.destroy();
        res.destroy();
      }
    });
    ur.pipe(res);
    res.once('close', () => audit(cut ?? allowed, ur.statusCode ?? 0));
  });
  res.once('close', () => {
    if (!res.writableFinished) up.destroy(); // the agent went away: stop the upstream request
  });
  up.on('error', (err) => {
    if (!res.headersSent) refuse(upstreamFailed(err.message));
    else res.destroy();
  });
  req.on('data', (c: Buffer) => {
    sent += c.length;
    if (!session.charge(c.length)) up.destroy(new Error('byte quota exceeded'));
  });
  req.pipe(up);
}

/**
 * SOCKS5 listener (RFC 1928): no-authentication method, CONNECT command only. The destination
 * (domain or address) is decided like a CONNECT, and the tunnel applies the same SNI check.
 *
 * HOSTILE INPUT: the greeting and request are parsed incrementally by the pure functions below
 * with fixed size bounds; a handshake must complete within HANDSHAKE_TIMEOUT_MS.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { gatewayDeny, type Verdict } from '../audit/events.js';
import { GatewayError } from '../errors.js';
import type { Session } from '../session.js';
import { auditDenied, openTunnel, runTunnel } from './tunnel.js';

export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** RFC 1928 §6 reply codes. */
export const REP = {
  succeeded: 0x00,
  failure: 0x01,
  notAllowed: 0x02,
  hostUnreachable: 0x04,
  commandNotSupported: 0x07,
  atypNotSupported: 0x08,
} as const;

export type SocksParse<T> = { readonly status: 'incomplete' } | ({ readonly status: 'complete'; readonly consumed: number } & T);

function malformed(why: string): never {
  throw new GatewayError('gateway.socks_malformed', `SOCKS5: ${why}`);
}

/** Method-selection message: VER NMETHODS METHODS (RFC 1928 §3). */
export function parseGreeting(b: Uint8Array): SocksParse<{ methods: readonly number[] }> {
  if (b.length < 2) return { status: 'incomplete' };
  if (b[0] !== 0x05) malformed(`version ${b[0]} is not 5`);
  const n = b[1]!;
  if (n === 0) malformed('no methods offered');
  if (b.length < 2 + n) return { status: 'incomplete' };
  return { status: 'complete', consumed: 2 + n, methods: [...b.subarray(2, 2 + n)] };
}

/** Request: VER CMD RSV ATYP DST.ADDR DST.PORT (RFC 1928 §4, §5). */
export function parseRequest(b: Uint8Array): SocksParse<{ cmd: number; host: string; port: number; atyp: number }> {
  if (b.length < 5) return { status: 'incomplete' };
  if (b[0] !== 0x05) malformed(`version ${b[0]} is not 5`);
  if (b[2] !== 0x00) malformed('reserved byte is not 0');
  const cmd = b[1]!;
  const atyp = b[3]!;
  let host: string;
  let off: number;
  switch (atyp) {
    case 0x01: // IPv4
      if (b.length < 4 + 4 + 2) return { status: 'incomplete' };
      host = [...b.subarray(4, 8)].join('.');
      off = 8;
      break;
    case 0x03: {
      // Domain name: one length byte, then the name (no terminating NUL).
      const len = b[4]!;
      if (len === 0) malformed('empty domain name');
      if (b.length < 5 + len + 2) return { status: 'incomplete' };
      const raw = b.subarray(5, 5 + len);
      for (const c of raw) if (c < 0x21 || c > 0x7e) malformed('domain name has a non-printable byte');
      host = Buffer.from(raw).toString('latin1');
      off = 5 + len;
      break;
    }
    case 0x04: {
      if (b.length < 4 + 16 + 2) return { status: 'incomplete' };
      const words: string[] = [];
      for (let i = 0; i < 8; i++) words.push(((b[4 + 2 * i]! << 8) | b[5 + 2 * i]!).toString(16));
      host = words.join(':');
      off = 20;
      break;
    }
    default:
      malformed(`address type ${atyp} is not supported`);
  }
  const port = (b[off]! << 8) | b[off + 1]!;
  return { status: 'complete', consumed: off + 2, cmd, host, port, atyp };
}

export function reply(rep: number): Buffer {
  return Buffer.from([0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
}

function repFor(v: Verdict): number {
  return v.decision === 'error' ? REP.hostUnreachable : REP.notAllowed;
}

export function startSocksListener(session: Session, host: string, port = 0): Promise<Server> {
  const server = createServer((sock) => {
    session.track(sock);
    sock.on('error', () => sock.destroy());
    serve(session, sock).catch((err: unknown) => {
      process.stderr.write(`aegis gateway: socks: ${String(err)}\n`);
      sock.destroy();
    });
  });
  session.guard(server, 'socks5');
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(new GatewayError('gateway.listen_failed', `SOCKS5 listener on ${host}:${port}: ${err.message}`, { cause: err })),
    );
    server.listen(port, host, () => resolve(server));
  });
}

/** Read from `sock` until `parse` completes; returns the result and the bytes after it. */
function readMessage<T>(
  sock: Socket,
  initial: Buffer,
  parse: (b: Uint8Array) => SocksParse<T>,
): Promise<{ msg: Extract<SocksParse<T>, { status: 'complete' }>; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = initial;
    const timer = setTimeout(
      () => done(new GatewayError('gateway.socks_malformed', 'SOCKS5 handshake not completed in time')),
      HANDSHAKE_TIMEOUT_MS,
    );
    const done = (err: Error | null, r?: { msg: Extract<SocksParse<T>, { status: 'complete' }>; rest: Buffer }): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.pause();
      if (err) reject(err);
      else resolve(r!);
    };
    const attempt = (): void => {
      try {
        const r = parse(buf);
        if (r.status === 'complete')
          done(null, { msg: r as Extract<SocksParse<T>, { status: 'complete' }>, rest: buf.subarray(r.consumed) });
        else if (buf.length > 600) done(new GatewayError('gateway.socks_malformed', 'SOCKS5 message too long'));
      } catch (err) {
        done(err as Error);
      }
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      attempt();
    };
    const onClose = (): void => done(new GatewayError('gateway.socks_malformed', 'closed during the SOCKS5 handshake'));
    sock.on('data', onData);
    sock.once('close', onClose);
    if (buf.length > 0) attempt();
    sock.resume();
  });
}

async function serve(session: Session, sock: Socket): Promise<void> {
  const startedAt = session.now();
  let greeting;
  let request;
  try {
    greeting = await readMessage(sock, Buffer.alloc(0), parseGreeting);
    if (!greeting.msg.methods.includes(0x00)) {
      sock.end(Buffer.from([0x05, 0xff])); // no acceptable methods
      auditDenied(
        session,
        'socks5',
        null,
        null,
        gatewayDeny('gateway.malformed', 'client offers no "no authentication" method'),
        startedAt,
      );
      return;
    }
    sock.write(Buffer.from([0x05, 0x00]));
    request = await readMessage(sock, greeting.rest, parseRequest);
  } catch (err) {
    auditDenied(session, 'socks5', null, null, gatewayDeny('gateway.malformed', (err as Error).message), startedAt);
    sock.destroy();
    return;
  }
  const { cmd, host, port } = request.msg;
  const refuse = (v: Verdict, rep = repFor(v)): void => {
    auditDenied(session, 'socks5', host, port, v, startedAt);
    sock.end(reply(rep));
  };
  if (cmd !== 0x01)
    return refuse(
      gatewayDeny('gateway.socks_command_refused', `SOCKS5 command ${cmd} is not supported (CONNECT only)`),
      REP.commandNotSupported,
    );
  const opened = await openTunnel(session, { host, port, decide: () => session.matcher.decide(host, port) });
  if (!opened.ok) return refuse(opened.verdict);
  // LIMITATION: SOCKS5 is a byte tunnel; hosts the terminator must see are refused there (openTunnel).
  if (opened.intercept) return refuse(gatewayDeny('gateway.inspection_required', 'unreachable: SOCKS5 is never intercepted'));
  if (sock.destroyed) {
    opened.upstream.socket.destroy();
    return;
  }
  sock.write(reply(REP.succeeded));
  runTunnel(
    session,
    sock,
    opened.upstream,
    { mode: 'socks5', host: host.toLowerCase(), port, startedAt, allowReason: opened.allowReason },
    request.rest,
  );
}

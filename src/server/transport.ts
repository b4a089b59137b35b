/**
 * Where the API listens: TCP (`--listen HOST:PORT`, TLS with --tls-cert/--tls-key; plaintext only
 * on a loopback address unless --insecure) and/or a unix socket (`--socket PATH`, default
 * /run/aegis/aegis.sock), mode 0660, owned by root and group `aegis` (or root when that group
 * does not exist), like Docker's socket: the group is the list of local users who may use AEGIS.
 *
 * ARCHITECTURE NOTE: the socket's mode is set through the umask before bind, so there is no
 * moment when it is reachable with looser permissions. Socket clients are identified by the
 * kernel's peer credentials (peercred.ts), never by anything they send.
 */
import { chmod, chown, lstat, mkdir, readFile, unlink } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, isIP, type AddressInfo, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ServerError } from './errors.js';

export const DEFAULT_SOCKET = '/run/aegis/aegis.sock';
export const SOCKET_GROUP = 'aegis';

export interface TransportOptions {
  /** `HOST:PORT` (IPv6 in brackets). */
  readonly listen?: string;
  readonly tls?: { readonly cert: string; readonly key: string };
  readonly insecure?: boolean;
  readonly socket?: string;
}

export interface Listening {
  /** `http(s)://host:port` when listening on TCP. */
  readonly url: string | undefined;
  readonly socket: string | undefined;
  readonly socketGid: number;
  /** Stops accepting new connections (open ones, such as event streams, go on). */
  stopAccepting(): void;
  /**
   * Stops accepting, lets open connections finish for up to `graceMs` (default 1000), then closes
   * what is left (a client holding an event stream open cannot keep the server up).
   */
  close(graceMs?: number): Promise<void>;
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):(\d{1,5})$/.exec(text);
  if (m === null)
    throw new ServerError('server.config_invalid', `--listen ${text}: expected HOST:PORT (an IP address, [IPv6] or localhost)`);
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!;
  const port = Number(m[2]);
  if (port > 65535 || (host !== 'localhost' && isIP(host) === 0))
    throw new ServerError('server.config_invalid', `--listen ${text}: not a valid address`);
  return { host, port };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The gid of a group from /etc/group, or undefined. */
export async function groupGid(name: string): Promise<number | undefined> {
  const text = await readFile('/etc/group', 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  return undefined;
}

/** Refuses to replace a socket another server is still answering on; removes a stale one. */
async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st === undefined) return;
  if (!st.isSocket()) throw new ServerError('server.config_invalid', `--socket ${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new ServerError('server.config_invalid', `--socket ${path}: another server is listening there`);
  await unlink(path);
}

function listenOn(server: Server, arg: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(arg, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Starts the listeners for a ready Fastify app (its handler is shared by every listener). */
export async function listen(app: FastifyInstance, o: TransportOptions): Promise<Listening> {
  const tcp = o.listen !== undefined ? parseListen(o.listen) : undefined;
  if (tcp !== undefined && o.tls === undefined && !isLoopback(tcp.host) && o.insecure !== true)
    throw new ServerError(
      'server.config_invalid',
      `--listen ${o.listen}: plaintext on a non-loopback address needs --tls-cert/--tls-key (or --insecure)`,
    );
  await app.ready();
  const handler = (req: IncomingMessage, res: ServerResponse): void => app.routing(req, res);
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const track = (s: Server): Server => {
    s.on('connection', (c: Socket) => {
      sockets.add(c);
      c.on('close', () => sockets.delete(c));
    });
    servers.push(s);
    return s;
  };
  let url: string | undefined;
  let socketGid = 0;
  try {
    if (tcp !== undefined) {
      const s = track(o.tls !== undefined ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, handler) : createHttpServer(handler));
      await listenOn(s, tcp);
      const a = s.address() as AddressInfo;
      url = `${o.tls !== undefined ? 'https' : 'http'}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    }
    if (o.socket !== undefined) {
      await mkdir(dirname(o.socket), { recursive: true, mode: 0o755 });
      await clearStaleSocket(o.socket);
      socketGid = (await groupGid(SOCKET_GROUP)) ?? 0;
      const s = track(createHttpServer(handler));
      const old = process.umask(0o177);
      try {
        await listenOn(s, { path: o.socket });
      } finally {
        process.umask(old);
      }
      await chown(o.socket, 0, socketGid);
      await chmod(o.socket, 0o660);
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  let closed: Promise<unknown> = Promise.resolve();
  let accepting = true;
  const stopAccepting = (): void => {
    if (!accepting) return;
    accepting = false;
    closed = Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
  };
  return {
    url,
    socket: o.socket,
    socketGid,
    stopAccepting,
    close: async (graceMs = 1000) => {
      stopAccepting();
      for (const srv of servers) srv.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const c of sockets) c.destroy();
      await closed;
      if (o.socket !== undefined) await unlink(o.socket).catch(() => undefined);
    },
  };
}

/**
 * HTTP transport over TCP (http://, https://) or the server's unix socket (`unix:/path`, or
 * `socketPath`), with node:http only: fetch cannot speak to a unix socket without undici's
 * dispatcher, which is not a public module of Node 20.
 */
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { AegisApiError, AegisClientError, apiErrorFrom } from './errors.js';

export interface TransportOptions {
  /** `http://host:port`, `https://host:port`, or `unix:/path/to/aegis.sock`. */
  readonly url: string;
  /** Bearer API key; without it, the server identifies a unix-socket peer by its uid (if configured to). */
  readonly apiKey?: string;
  /** Talk to this unix socket instead of `url`'s host (the URL's path prefix still applies). */
  readonly socketPath?: string;
  /** Extra CA certificates (PEM) for https:// (a server with its own certificate). */
  readonly ca?: string | Buffer;
  /** Per-request timeout for answers that are not streams (ms; default 60 s). */
  readonly timeoutMs?: number;
}

export interface Request {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path with the query string, starting with `/`. */
  readonly path: string;
  readonly headers?: OutgoingHttpHeaders;
  readonly body?: Buffer;
  /** No timeout once the answer's headers arrived (SSE and tar streams). */
  readonly stream?: boolean;
}

/** Largest JSON answer read into memory. */
const MAX_JSON_BYTES = 32 * 1024 * 1024;

interface Target {
  readonly mod: typeof http | typeof https;
  readonly host: string;
  readonly port: number | undefined;
  readonly socketPath: string | undefined;
  readonly prefix: string;
  readonly display: string;
}

function parseTarget(opts: TransportOptions): Target {
  if (opts.url.startsWith('unix:')) {
    const path = opts.url.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path.startsWith('/')) throw new AegisClientError('invalid_options', `${opts.url}: a unix socket URL is unix:/absolute/path`);
    return { mod: http, host: 'localhost', port: undefined, socketPath: path, prefix: '', display: opts.url };
  }
  let u: URL;
  try {
    u = new URL(opts.url);
  } catch {
    throw new AegisClientError('invalid_options', `${opts.url} is not a URL (http://host:port, https://host:port or unix:/path)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new AegisClientError('invalid_options', `${opts.url}: the server URL must be http://, https:// or unix:/path`);
  }
  return {
    mod: u.protocol === 'https:' ? https : http,
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: u.port === '' ? undefined : Number(u.port),
    socketPath: opts.socketPath,
    prefix: u.pathname.replace(/\/+$/, ''),
    display: opts.socketPath !== undefined ? `unix:${opts.socketPath}` : u.origin,
  };
}

export class Transport {
  private readonly target: Target;
  /**
   * One connection per request: a kept-alive connection that the server closes while idle can be
   * reused by the next request at that moment, which then fails (ECONNRESET) though the server is
   * fine, and a POST cannot be retried safely.
   */
  private readonly agent: http.Agent;
  constructor(private readonly opts: TransportOptions) {
    this.target = parseTarget(opts);
    this.agent = new this.target.mod.Agent({ keepAlive: false });
  }

  /** Where requests go, for messages (`http://127.0.0.1:8080`, `unix:/run/aegis/aegis.sock`). */
  get where(): string {
    return this.target.display;
  }

  /** Sends a request; resolves with the answer when its status is 2xx, else rejects with AegisApiError. */
  async send(req: Request): Promise<IncomingMessage> {
    const res = await this.raw(req);
    if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) return res;
    const body = await readBody(res, 1024 * 1024).catch(() => Buffer.alloc(0));
    throw apiErrorFrom(res.statusCode ?? 0, body);
  }

  /** Sends a request and parses the JSON answer (undefined for 202/204 without a body). */
  async json<T>(req: Request): Promise<T> {
    const res = await this.send(req);
    const body = await readBody(res, MAX_JSON_BYTES);
    if (body.length === 0) return undefined as T;
    try {
      return JSON.parse(body.toString('utf8')) as T;
    } catch (err) {
      throw new AegisClientError('bad_response', `${req.method} ${req.path}: the server's answer is not JSON`, { cause: err });
    }
  }

  private raw(req: Request): Promise<IncomingMessage> {
    const t = this.target;
    const headers: OutgoingHttpHeaders = { accept: 'application/json', ...req.headers };
    if (this.opts.apiKey !== undefined && this.opts.apiKey !== '') headers['authorization'] = `Bearer ${this.opts.apiKey}`;
    if (req.body !== undefined) headers['content-length'] = req.body.length;
    const timeoutMs = this.opts.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const r = t.mod.request(
        {
          method: req.method,
          host: t.host,
          port: t.port,
          socketPath: t.socketPath,
          path: t.prefix + req.path,
          headers,
          agent: this.agent,
          ...(this.opts.ca !== undefined ? { ca: this.opts.ca } : {}),
        },
        (res) => {
          if (req.stream) r.setTimeout(0);
          resolve(res);
        },
      );
      r.setTimeout(timeoutMs, () =>
        r.destroy(new AegisClientError('timeout', `${req.method} ${req.path}: no answer from ${t.display} in ${timeoutMs} ms`)),
      );
      r.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof AegisClientError || err instanceof AegisApiError) reject(err);
        else
          reject(
            new AegisClientError('unreachable', `cannot reach the AEGIS server at ${t.display} (${err.code ?? err.message})`, {
              cause: err,
            }),
          );
      });
      r.end(req.body);
    });
  }
}

/** Reads a whole answer (at most `max` bytes). */
export async function readBody(res: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) {
      res.destroy();
      throw new AegisClientError('bad_response', `the server's answer is larger than ${max} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

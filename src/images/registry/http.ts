/**
 * A small client of the OCI distribution API (adapter): TLS verified against the system roots
 * or a configured private CA, Basic and Bearer-token authentication (the registry's
 * WWW-Authenticate challenge decides), bounded reads of everything that is parsed, timeouts.
 *
 * Every byte a registry sends is untrusted: manifests are size-limited before they are parsed,
 * blobs are hashed while they are written and refused when the digest differs, redirects are
 * followed at most 3 times and never carry the credentials to another host.
 */
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { ImageError } from '../errors.js';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

export interface SessionOptions {
  /** `host` or `host:port`. */
  readonly registry: string;
  readonly repository: string;
  /** `pull` or `pull,push`: the scope asked of a token service. */
  readonly actions: 'pull' | 'pull,push';
  /** Extra trusted CA certificates (PEM); the system's roots are trusted too. */
  readonly ca?: string;
  readonly credentials?: Credentials;
  /** Per-request inactivity timeout (default 30 s). */
  readonly timeoutMs?: number;
}

export interface Response {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: IncomingMessage;
}

/** Reads a whole body, refusing more than `max` bytes. */
export async function readBounded(body: Readable, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += (c as Buffer).length;
    if (n > max) {
      body.destroy();
      throw new ImageError('image.too_large', `${what} is larger than ${max} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Parses `Bearer realm="...",service="...",scope="..."` / `Basic realm="..."`. */
export function parseChallenge(header: string | undefined): { scheme: 'basic' | 'bearer'; params: Record<string, string> } | null {
  if (header === undefined) return null;
  const m = /^\s*(Basic|Bearer)\s*(.*)$/i.exec(header);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /([A-Za-z]+)="([^"]*)"/g;
  for (let p = re.exec(m[2]!); p !== null; p = re.exec(m[2]!)) params[p[1]!.toLowerCase()] = p[2]!;
  return { scheme: m[1]!.toLowerCase() as 'basic' | 'bearer', params };
}

export class RegistrySession {
  private authorization: string | null = null;
  private readonly timeoutMs: number;
  constructor(private readonly o: SessionOptions) {
    this.timeoutMs = o.timeoutMs ?? 30_000;
  }

  private send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body: Buffer | Readable | undefined,
    withAuth: boolean,
  ): Promise<Response> {
    const opts: RequestOptions = {
      method,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? 443 : Number(url.port),
      path: url.pathname + url.search,
      headers: {
        'user-agent': 'aegis-image/1',
        ...headers,
        ...(withAuth && this.authorization !== null ? { authorization: this.authorization } : {}),
        ...(Buffer.isBuffer(body) ? { 'content-length': String(body.length) } : {}),
      },
      // A private CA adds to the system's roots (both stay trusted).
      ...(this.o.ca !== undefined ? { ca: [...rootCertificates, this.o.ca] } : {}),
      ...(isIP(url.hostname.replace(/^\[|\]$/g, '')) === 0 ? { servername: url.hostname } : {}),
      rejectUnauthorized: true,
    };
    return new Promise((resolve, reject) => {
      const req = httpsRequest(opts, (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res }));
      req.setTimeout(this.timeoutMs, () =>
        req.destroy(new ImageError('image.registry_unreachable', `${url.host}: no answer within ${this.timeoutMs} ms`)),
      );
      req.on('error', (err) =>
        reject(
          err instanceof ImageError
            ? err
            : new ImageError(
                'image.registry_unreachable',
                `${url.host}: ${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.trim(),
                { cause: err },
              ),
        ),
      );
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on('error', (e) => req.destroy(e));
        body.pipe(req);
      }
    });
  }

  private base(): string {
    return `https://${this.o.registry}`;
  }

  /** The API check (`GET /v2/`) that also establishes authentication from the challenge. */
  async login(): Promise<void> {
    const url = new URL('/v2/', this.base());
    const r = await this.send('GET', url, {}, undefined, false);
    r.body.resume();
    if (r.status === 200) return;
    if (r.status !== 401)
      throw new ImageError('image.registry_error', `${this.o.registry}: GET /v2/ answered ${r.status}: not an OCI registry?`);
    const ch = parseChallenge(r.headers['www-authenticate'] as string | undefined);
    const creds = this.o.credentials;
    if (ch === null) throw new ImageError('image.registry_error', `${this.o.registry}: 401 without a usable WWW-Authenticate challenge`);
    if (creds === undefined)
      throw new ImageError(
        'image.registry_auth',
        `${this.o.registry} asks for credentials: add them to the registry auth file (docs/images.md)`,
      );
    const basic = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    if (ch.scheme === 'basic') {
      this.authorization = basic;
    } else {
      const realm = ch.params['realm'];
      if (realm === undefined || !realm.startsWith('https://'))
        throw new ImageError('image.registry_error', `${this.o.registry}: token realm ${realm ?? '(none)'} is not an https URL`);
      const t = new URL(realm);
      if (ch.params['service'] !== undefined) t.searchParams.set('service', ch.params['service']);
      t.searchParams.set('scope', `repository:${this.o.repository}:${this.o.actions}`);
      this.authorization = basic;
      const tr = await this.send('GET', t, {}, undefined, true);
      const text = await readBounded(tr.body, 64 * 1024, 'token response');
      if (tr.status !== 200)
        throw new ImageError('image.registry_auth', `${t.host}: the token service refused the credentials (${tr.status})`);
      let token: unknown;
      try {
        const j = JSON.parse(text.toString('utf8')) as { token?: unknown; access_token?: unknown };
        token = j.token ?? j.access_token;
      } catch {
        token = undefined;
      }
      if (typeof token !== 'string' || token === '' || token.length > 16 * 1024)
        throw new ImageError('image.registry_error', `${t.host}: the token response has no token`);
      this.authorization = `Bearer ${token}`;
    }
    const check = await this.send('GET', url, {}, undefined, true);
    check.body.resume();
    if (check.status === 401) throw new ImageError('image.registry_auth', `${this.o.registry} refused the credentials`);
    if (check.status !== 200) throw new ImageError('image.registry_error', `${this.o.registry}: GET /v2/ answered ${check.status}`);
  }

  /**
   * One request to a path under /v2/<repository>/ (or an absolute URL from a Location header),
   * following redirects (at most 3; credentials only to the registry itself).
   */
  async request(method: string, pathOrUrl: string, headers: Record<string, string> = {}, body?: Buffer | Readable): Promise<Response> {
    let url =
      pathOrUrl.startsWith('https://') || pathOrUrl.startsWith('/')
        ? new URL(pathOrUrl, this.base())
        : new URL(`/v2/${this.o.repository}/${pathOrUrl}`, this.base());
    for (let hop = 0; ; hop++) {
      const own = url.host === this.o.registry;
      const r = await this.send(method, url, headers, body, own);
      if (
        (r.status === 301 || r.status === 302 || r.status === 303 || r.status === 307 || r.status === 308) &&
        (method === 'GET' || method === 'HEAD')
      ) {
        r.body.resume();
        const loc = r.headers.location;
        if (hop >= 3 || loc === undefined) throw new ImageError('image.registry_error', `${url.host}: too many redirects`);
        const next = new URL(loc, url);
        if (next.protocol !== 'https:') throw new ImageError('image.registry_error', `${url.host}: redirect to ${next.protocol} refused`);
        url = next;
        continue;
      }
      return r;
    }
  }
}

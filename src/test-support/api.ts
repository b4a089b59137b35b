/**
 * Test helper for the API server: an HTTP client over TCP or a unix socket whose every response
 * is checked against the server's own OpenAPI document (/v1/openapi.json): the status must be
 * documented for the operation and a JSON body must match the documented schema (converted
 * back from the document's JSON Schema with zod's z.fromJSONSchema, so it is the document, not
 * the server's zod schemas, that the responses are held to).
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { z } from 'zod';

export interface Target {
  /** `http://127.0.0.1:port` or `https://...`; or a unix socket path. */
  readonly url?: string;
  readonly socketPath?: string;
  /** Extra CA for https. */
  readonly ca?: string;
}

export interface ApiResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly raw: Buffer;
  readonly text: string;
  /** Parsed JSON when the response is JSON. */
  readonly json: unknown;
}

export interface RequestOptions {
  readonly key?: string;
  readonly json?: unknown;
  /** A raw body (with its content type). */
  readonly body?: Buffer | string;
  readonly contentType?: string;
  readonly headers?: Record<string, string>;
}

/** One HTTP request (no checking). */
export function rawRequest(t: Target, method: string, path: string, o: RequestOptions = {}): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.key !== undefined) headers['authorization'] = `Bearer ${o.key}`;
  let body: Buffer | undefined;
  if (o.json !== undefined) {
    body = Buffer.from(JSON.stringify(o.json));
    headers['content-type'] = 'application/json';
  } else if (o.body !== undefined) {
    body = Buffer.isBuffer(o.body) ? o.body : Buffer.from(o.body);
    if (o.contentType !== undefined) headers['content-type'] = o.contentType;
  }
  if (body !== undefined) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const u = t.url !== undefined ? new URL(t.url) : undefined;
    const opts = {
      method,
      path,
      headers,
      ...(t.socketPath !== undefined ? { socketPath: t.socketPath } : { host: u!.hostname, port: Number(u!.port) }),
      ...(t.ca !== undefined ? { ca: t.ca } : {}),
    };
    const req = (u?.protocol === 'https:' ? httpsRequest : httpRequest)(opts, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(parts);
        const text = raw.toString('utf8');
        const ct = String(res.headers['content-type'] ?? '');
        let json: unknown;
        if (ct.startsWith('application/json')) json = JSON.parse(text);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

type Doc = {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>>;
  components: { schemas: Record<string, unknown> };
};

function inlineRefs(schema: unknown, doc: Doc): unknown {
  if (Array.isArray(schema)) return schema.map((s) => inlineRefs(s, doc));
  if (schema === null || typeof schema !== 'object') return schema;
  const o = schema as Record<string, unknown>;
  if (typeof o['$ref'] === 'string') {
    const name = o['$ref'].replace('#/components/schemas/', '');
    return inlineRefs(doc.components.schemas[name], doc);
  }
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, inlineRefs(v, doc)]));
}

/** The documented path template a concrete path matches (`/v1/agents/{name}` for `/v1/agents/x`). */
function templateOf(doc: Doc, path: string): string | undefined {
  const p = path.split('?')[0]!;
  const segs = p.split('/');
  return Object.keys(doc.paths).find((t) => {
    const ts = t.split('/');
    return ts.length === segs.length && ts.every((s, i) => (s.startsWith('{') ? segs[i] !== '' : s === segs[i]));
  });
}

/** A client whose responses are all checked against `doc`; `unchecked` for routes that must not exist. */
export class CheckedApi {
  private readonly cache = new Map<string, z.ZodType>();
  checked = 0;
  constructor(
    readonly target: Target,
    readonly doc: Doc,
  ) {}

  static async connect(target: Target): Promise<CheckedApi> {
    const r = await rawRequest(target, 'GET', '/v1/openapi.json');
    assert.equal(r.status, 200, r.text);
    return new CheckedApi(target, r.json as Doc);
  }

  check(method: string, path: string, r: ApiResponse): void {
    const tpl = templateOf(this.doc, path);
    if (tpl === undefined || this.doc.paths[tpl]?.[method.toLowerCase()] === undefined) {
      // Unknown routes must still answer the documented error body.
      assert.equal(r.status, 404, `${method} ${path} is not documented but answered ${r.status}`);
      this.checkSchema('Error', this.doc.components.schemas['Error'], r, `${method} ${path}`);
      return;
    }
    const op = this.doc.paths[tpl]![method.toLowerCase()]!;
    const resp = op.responses[String(r.status)];
    assert.ok(resp !== undefined, `${method} ${tpl}: status ${r.status} is not documented (${r.text.slice(0, 300)})`);
    const ct = String(r.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    const content = resp.content ?? {};
    assert.ok(ct in content, `${method} ${tpl} ${r.status}: content type ${ct} is not documented (${Object.keys(content).join(', ')})`);
    if (ct === 'application/json') this.checkSchema(`${method} ${tpl} ${r.status}`, content[ct]!.schema, r, `${method} ${path}`);
    this.checked += 1;
  }

  private checkSchema(cacheKey: string, schema: unknown, r: ApiResponse, what: string): void {
    let s = this.cache.get(cacheKey);
    if (s === undefined) {
      s = z.fromJSONSchema(inlineRefs(schema, this.doc) as Parameters<typeof z.fromJSONSchema>[0]);
      this.cache.set(cacheKey, s);
    }
    const res = s.safeParse(r.json);
    assert.ok(
      res.success,
      `${what} ${r.status}: body does not match the document: ${res.success ? '' : res.error.message}\n${r.text.slice(0, 500)}`,
    );
  }

  async call(method: string, path: string, o: RequestOptions = {}): Promise<ApiResponse> {
    const r = await rawRequest(this.target, method, path, o);
    this.check(method, path, r);
    return r;
  }
}

/** A multipart/form-data body with a `manifest` field and a `code` file. */
export function deployForm(manifest: string, code: Buffer): { body: Buffer; contentType: string } {
  const boundary = `aegis${Math.random().toString(16).slice(2)}`;
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n${manifest}\r\n`),
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="code"; filename="code.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n`,
    ),
    code,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, contentType: `multipart/form-data; boundary=${boundary}` };
}

export interface SseEvent {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: unknown;
}

/**
 * Reads a Server-Sent Events response as it comes; `onEvent` sees each event (return true to
 * stop reading early). Resolves with the events and the response status when the stream ends.
 */
export function readSse(
  t: Target,
  path: string,
  key: string | undefined,
  onEvent?: (e: SseEvent) => boolean | void,
): Promise<{ status: number; contentType: string; events: SseEvent[] }> {
  return new Promise((resolve, reject) => {
    const u = t.url !== undefined ? new URL(t.url) : undefined;
    const req = httpRequest(
      {
        method: 'GET',
        path,
        headers: key !== undefined ? { authorization: `Bearer ${key}` } : {},
        ...(t.socketPath !== undefined ? { socketPath: t.socketPath } : { host: u!.hostname, port: Number(u!.port) }),
      },
      (res) => {
        const events: SseEvent[] = [];
        let buf = '';
        const finish = (): void => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), events });
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (frame.startsWith(':')) continue;
            let event = 'message';
            let id: string | undefined;
            const data: string[] = [];
            for (const line of frame.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('id: ')) id = line.slice(4);
              else if (line.startsWith('data: ')) data.push(line.slice(6));
            }
            const text = data.join('\n');
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              /* keep the text */
            }
            const e = { event, id, data: parsed };
            events.push(e);
            if (onEvent?.(e) === true) {
              req.destroy();
              finish();
              return;
            }
          }
        });
        res.on('end', finish);
        res.on('error', reject);
      },
    );
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end();
  });
}

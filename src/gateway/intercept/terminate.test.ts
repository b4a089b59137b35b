import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { connect as h2connect } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../audit/event.js';
import { compileEgress } from '../../policy/net.js';
import type { NetRule } from '../../policy/types.js';
import type { InjectableSecret } from '../../secrets/inject.js';
import { makeServerPki } from '../../test-support/tls.js';
import type { Resolution, Resolver } from '../dns/upstream.js';
import { startHttpListener } from '../proxy/http.js';
import { Session } from '../session.js';
import { ExecutionCa } from './ca.js';
import { Interceptor } from './terminate.js';

const rate = { perSecond: 1000, burst: 1000 };
const any = { kind: 'any' } as const;
const loopback: Resolver = {
  resolve: (): Promise<Resolution> => Promise.resolve({ rcode: 'NOERROR', addresses: ['127.0.0.1'], chain: [] } as unknown as Resolution),
};

interface Seen {
  readonly host: string;
  readonly url: string;
  readonly authorization: string | null;
  readonly xKey: string | null;
  readonly body: string;
}

function upstreamServer(pki: { cert: string; key: string }, seen: Seen[]): HttpsServer {
  return createHttpsServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({
        host: req.headers.host ?? '',
        url: req.url ?? '',
        authorization: req.headers.authorization ?? null,
        xKey: (req.headers['x-key'] as string | undefined) ?? null,
        body,
      });
      const ok = req.headers.authorization === 'Bearer real-value-1' || (req.url ?? '').includes('key=real%20value%262');
      res.writeHead(ok ? 200 : 401, { 'content-type': 'text/plain' });
      res.end(ok ? 'welcome\n' : 'bad credential\n');
    });
  });
}

describe('TLS termination at the gateway (placeholders, HTTP rules, upstream verification)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-intercept-'));
  const seen: Seen[] = [];
  const events: AuditEventInput[] = [];
  let good: HttpsServer;
  let bad: HttpsServer;
  let proxy: Server;
  let ca: ExecutionCa;
  let goodPort = 0;
  let badPort = 0;
  let placeholders: { one: string; two: string };
  /** Secrets whose run version the store no longer accepts (rotated out past the overlap, expired, removed). */
  const retired = new Set<string>();

  before(async () => {
    mkdirSync(join(dir, 'good'));
    const pki = makeServerPki(join(dir, 'good'), 'api.example.com', [
      'DNS:api.example.com',
      'DNS:other.example.com',
      'DNS:rules.example.com',
    ]);
    const badDir = join(dir, 'bad');
    mkdirSync(badDir);
    const badPki = makeServerPki(badDir, 'bad.example.com', ['DNS:bad.example.com', 'DNS:wrongname.example.com']);
    good = upstreamServer(pki, seen).listen(0, '127.0.0.1');
    bad = upstreamServer(badPki, seen).listen(0, '127.0.0.1');
    await Promise.all([once(good, 'listening'), once(bad, 'listening')]);
    goodPort = (good.address() as AddressInfo).port;
    badPort = (bad.address() as AddressInfo).port;
    const rules: NetRule[] = [
      { kind: 'exact', host: 'api.example.com', ports: any, source: 'api.example.com:*' },
      { kind: 'exact', host: 'other.example.com', ports: any, source: 'other.example.com:*' },
      { kind: 'exact', host: 'bad.example.com', ports: any, source: 'bad.example.com:*' },
      {
        kind: 'exact',
        host: 'rules.example.com',
        ports: any,
        source: 'rules.example.com:*',
        http: { methods: ['GET'], paths: ['/ok/**'] },
      },
      { kind: 'cidr', family: 4, address: '127.0.0.1', prefix: 32, ports: any, source: '127.0.0.1:*' },
    ];
    const session = new Session({
      matcher: compileEgress({ rules, rateLimit: rate, byteQuota: null }),
      audit: { append: (e) => void events.push(e) },
      actor: { execution: 'x1' },
      resolver: loopback,
      rateLimit: rate,
      byteQuota: null,
    });
    placeholders = { one: `aegis-ph-${'1'.repeat(32)}`, two: `aegis-ph-${'2'.repeat(32)}` };
    const secrets: InjectableSecret[] = [
      {
        secret: 'one',
        version: 3,
        hosts: ['api.example.com'],
        header: 'authorization',
        placeholder: placeholders.one,
        value: 'real-value-1',
      },
      { secret: 'two', version: 1, hosts: ['*.example.com'], header: null, placeholder: placeholders.two, value: 'real value&2' },
    ];
    ca = await ExecutionCa.create('x1', Date.now());
    session.secrets = secrets;
    session.interceptor = new Interceptor(session, {
      ca,
      secrets,
      trustedCas: [pki.ca],
      tlsPorts: [goodPort, badPort],
      stillValid: (secret) => Promise.resolve(!retired.has(secret)),
      validityCacheMs: 0,
    });
    proxy = await startHttpListener(session, 'explicit', '127.0.0.1');
  });
  after(async () => {
    proxy.close();
    good.close();
    bad.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** One HTTPS request through the proxy's CONNECT, trusting only the execution's CA. */
  async function viaProxy(
    host: string,
    port: number,
    path: string,
    o: { method?: string; headers?: Record<string, string>; body?: string } = {},
  ): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
    const connectReq = httpRequest({
      host: '127.0.0.1',
      port: (proxy.address() as AddressInfo).port,
      method: 'CONNECT',
      path: `${host}:${port}`,
      headers: { host: `${host}:${port}` },
    });
    connectReq.end();
    const [res, socket] = (await once(connectReq, 'connect')) as [{ statusCode: number }, Socket];
    assert.equal(res.statusCode, 200);
    const tls = tlsConnect({ socket, servername: host, ca: ca.certPem, ALPNProtocols: ['http/1.1'] });
    await once(tls, 'secureConnect');
    const req = httpRequest({ host, port, path, method: o.method ?? 'GET', headers: o.headers ?? {}, createConnection: () => tls });
    req.end(o.body);
    const [r] = (await once(req, 'response')) as [IncomingMessage];
    let body = '';
    for await (const c of r) body += (c as Buffer).toString();
    tls.destroy();
    return { status: r.statusCode ?? 0, headers: r.headers, body };
  }

  it('swaps the placeholder in Authorization: Bearer for a bound host; the upstream gets the value, secret.use is logged without it', async () => {
    const r = await viaProxy('api.example.com', goodPort, '/v1/models', { headers: { authorization: `Bearer ${placeholders.one}` } });
    assert.equal(r.status, 200, r.body);
    assert.equal(seen.at(-1)!.authorization, 'Bearer real-value-1');
    const use = events.filter((e) => e.action === 'secret.use');
    assert.deepEqual(use.at(-1)!.payload, { secret: 'one', version: 3, host: 'api.example.com', header: 'authorization', method: 'GET' });
    assert.ok(!JSON.stringify(events).includes('real-value-1'), 'the value is never in an event');
    assert.ok(!JSON.stringify(events).includes(placeholders.one), 'the placeholder is never in an event');
  });

  it('swaps inside Basic credentials (decoded and re-encoded) and in the query string of a secret without a header', async () => {
    const basic = Buffer.from(`user:${placeholders.two}`).toString('base64');
    const r = await viaProxy('other.example.com', goodPort, `/q?key=${placeholders.two}`, { headers: { authorization: `Basic ${basic}` } });
    assert.equal(r.status, 200, r.body);
    const s = seen.at(-1)!;
    assert.equal(s.url, '/q?key=real%20value%262');
    assert.equal(Buffer.from(s.authorization!.slice('Basic '.length), 'base64').toString(), 'user:real value&2');
  });

  it('refuses a placeholder going to a host its secret is not bound to (403 credential_host_mismatch, audited); the host sees nothing', async () => {
    const before = seen.length;
    const cases: Array<{ path: string; headers: Record<string, string>; body?: string; method?: string }> = [
      { path: '/', headers: { authorization: `Bearer ${placeholders.one}` } },
      { path: `/x?leak=${placeholders.one}`, headers: {} },
      { path: '/upload', headers: { 'content-type': 'text/plain' }, body: `stolen=${placeholders.one}`, method: 'POST' },
    ];
    for (const o of cases) {
      const r = await viaProxy('other.example.com', goodPort, o.path, o);
      assert.equal(r.status, 403, r.body);
      assert.equal(r.headers['x-aegis-reason'], 'secrets.credential_host_mismatch');
    }
    assert.equal(seen.length, before, 'the unbound host received no request');
    const denied = events.filter((e) => e.action === 'secret.denied');
    assert.deepEqual(
      denied.slice(-3).map((e) => [e.reason, (e.payload as { where: string }).where]),
      [
        ['secrets.credential_host_mismatch', 'header authorization'],
        ['secrets.credential_host_mismatch', 'the query'],
        ['secrets.credential_host_mismatch', 'the body'],
      ],
    );
  });

  it("refuses the placeholder in a header other than the secret's (credential_misplaced) and an unknown placeholder", async () => {
    const a = await viaProxy('api.example.com', goodPort, '/', { headers: { 'x-key': placeholders.one } });
    assert.equal(a.headers['x-aegis-reason'], 'secrets.credential_misplaced');
    const b = await viaProxy('api.example.com', goodPort, '/', { headers: { authorization: `Bearer aegis-ph-${'f'.repeat(32)}` } });
    assert.equal(b.headers['x-aegis-reason'], 'secrets.credential_unknown');
  });

  it('enforces method/path rules on a terminated host, with reason codes', async () => {
    assert.equal(
      (await viaProxy('rules.example.com', goodPort, '/ok/a', { headers: { authorization: 'Bearer real-value-1' } })).status,
      200,
    );
    const post = await viaProxy('rules.example.com', goodPort, '/ok/a', { method: 'POST', body: 'x' });
    assert.deepEqual([post.status, post.headers['x-aegis-reason']], [403, 'net.denied.http_method']);
    const path = await viaProxy('rules.example.com', goodPort, '/other');
    assert.deepEqual([path.status, path.headers['x-aegis-reason']], [403, 'net.denied.http_path']);
  });

  it('refuses an upstream whose certificate does not verify (unknown CA)', async () => {
    const before = seen.length;
    const r = await viaProxy('bad.example.com', badPort, '/', { headers: { authorization: `Bearer ${placeholders.two}` } });
    assert.deepEqual([r.status, r.headers['x-aegis-reason']], [502, 'gateway.upstream_cert_invalid']);
    assert.equal(seen.length, before, 'no request reached the untrusted upstream');
  });

  it('stops swapping a version the store no longer accepts for this run (rotation overlap over, expiry): 403 credential_retired', async () => {
    retired.add('one');
    try {
      const before = seen.length;
      const r = await viaProxy('api.example.com', goodPort, '/v1/models', { headers: { authorization: `Bearer ${placeholders.one}` } });
      assert.deepEqual([r.status, r.headers['x-aegis-reason']], [403, 'secrets.credential_retired']);
      assert.equal(seen.length, before, 'nothing was sent');
      assert.equal(events.filter((e) => e.action === 'secret.denied').at(-1)!.reason, 'secrets.credential_retired');
    } finally {
      retired.delete('one');
    }
    const again = await viaProxy('api.example.com', goodPort, '/v1/models', { headers: { authorization: `Bearer ${placeholders.one}` } });
    assert.equal(again.status, 200);
  });

  it('HTTP/2 from the agent (ALPN h2): swapped for the bound host, refused for another, several streams on one connection', async () => {
    const connectReq = httpRequest({
      host: '127.0.0.1',
      port: (proxy.address() as AddressInfo).port,
      method: 'CONNECT',
      path: `api.example.com:${goodPort}`,
      headers: { host: `api.example.com:${goodPort}` },
    });
    connectReq.end();
    const [, socket] = (await once(connectReq, 'connect')) as [unknown, Socket];
    const tls = tlsConnect({ socket, servername: 'api.example.com', ca: ca.certPem, ALPNProtocols: ['h2', 'http/1.1'] });
    await once(tls, 'secureConnect');
    assert.equal(tls.alpnProtocol, 'h2');
    const client = h2connect(`https://api.example.com:${goodPort}`, { createConnection: () => tls });
    const get = async (headers: Record<string, string>): Promise<{ status: number; reason: unknown; body: string }> => {
      const s = client.request({ ':method': 'GET', ':path': '/v1/h2', ...headers });
      s.end();
      const [h] = (await once(s, 'response')) as [Record<string, unknown>];
      let body = '';
      for await (const c of s) body += (c as Buffer).toString();
      return { status: Number(h[':status']), reason: h['x-aegis-reason'], body };
    };
    const before = seen.length;
    const [a, b] = await Promise.all([
      get({ authorization: `Bearer ${placeholders.one}` }),
      get({ authorization: `Bearer ${placeholders.one}` }),
    ]);
    assert.deepEqual([a.status, b.status], [200, 200], a.body);
    assert.deepEqual(
      seen.slice(before).map((x) => x.authorization),
      ['Bearer real-value-1', 'Bearer real-value-1'],
    );
    const leak = await get({
      'x-key': placeholders.two,
      authorization: `Bearer ${placeholders.one}`,
      'x-other': `aegis-ph-${'9'.repeat(32)}`,
    });
    assert.deepEqual([leak.status, leak.reason], [403, 'secrets.credential_unknown']);
    client.close();
    tls.destroy();
  });

  it('audits unparseable bytes inside the terminated TLS and closes that connection', async () => {
    const connectReq = httpRequest({
      host: '127.0.0.1',
      port: (proxy.address() as AddressInfo).port,
      method: 'CONNECT',
      path: `api.example.com:${goodPort}`,
      headers: { host: `api.example.com:${goodPort}` },
    });
    connectReq.end();
    const [, socket] = (await once(connectReq, 'connect')) as [unknown, Socket];
    const tls = tlsConnect({ socket, servername: 'api.example.com', ca: ca.certPem, ALPNProtocols: ['http/1.1'] });
    await once(tls, 'secureConnect');
    tls.on('error', () => undefined);
    tls.write('NOT HTTP AT ALL\r\n\r\n');
    await once(tls, 'close');
    const e = events.filter((x) => x.action === 'http.request').at(-1)!;
    assert.deepEqual(
      [e.decision, e.reason, (e.payload as { url: string }).url],
      ['deny', 'gateway.malformed', `https://api.example.com:${goodPort}`],
    );
  });

  it('refuses a placeholder over plain HTTP (never sent in clear text)', async () => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: (proxy.address() as AddressInfo).port,
      path: `http://api.example.com:${goodPort}/`,
      headers: { host: `api.example.com:${goodPort}`, authorization: `Bearer ${placeholders.one}` },
    });
    req.end();
    const [r] = (await once(req, 'response')) as [IncomingMessage];
    r.resume();
    assert.deepEqual([r.statusCode, r.headers['x-aegis-reason']], [403, 'secrets.credential_cleartext']);
  });
});

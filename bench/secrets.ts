/**
 * Secrets broker benchmark (issue 12): what TLS termination at the gateway costs, against a
 * pass-through CONNECT tunnel to the same HTTPS server, through the same gateway code (proxy
 * listener, session, policy), all on loopback in this process's host namespace (no root, no
 * network namespace: the figure is the gateway's own cost, without veth or nftables).
 *
 *   npm run build && node dist/bench/secrets.js [--requests 2000] [--handshakes 200] [--rounds 3]
 *
 * Per path (tunnel: the agent's TLS goes to the server; terminated: the agent's TLS ends at the
 * gateway, which swaps a placeholder in Authorization and opens its own verified TLS upstream):
 * - latency of one small request on a kept-alive connection (p50, p99), and requests/s;
 * - new connections per second: CONNECT + TLS handshake + one request.
 * Rounds alternate the order of the paths; medians over rounds. Targets (2 cores): <= 2 ms added
 * at p50 for a terminated host, >= 80 % of the tunnelled throughput.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { ExecutionCa } from '../src/gateway/intercept/ca.js';
import { Interceptor } from '../src/gateway/intercept/terminate.js';
import { startHttpListener } from '../src/gateway/proxy/http.js';
import { Session } from '../src/gateway/session.js';
import type { Resolution } from '../src/gateway/dns/upstream.js';
import { compileEgress } from '../src/policy/net.js';
import type { NetRule } from '../src/policy/types.js';
import { makeServerPki } from '../src/test-support/tls.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const REQUESTS = arg('requests', 2000);
const HANDSHAKES = arg('handshakes', 200);
const ROUNDS = arg('rounds', 3);
const PH = `aegis-ph-${'5'.repeat(32)}`;
const KEY = 'sk-bench-0123456789';

const dir = mkdtempSync(join(tmpdir(), 'aegis-bench-secrets-'));
const pki = makeServerPki(dir, 'api.bench.example', ['DNS:api.bench.example', 'DNS:plain.bench.example']);
const server = createHttpsServer({ cert: pki.cert, key: pki.key, keepAliveTimeout: 60_000 }, (req, res) => {
  req.resume();
  const body = req.headers.authorization === `Bearer ${KEY}` ? 'ok' : 'no';
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) });
  res.end(body);
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const port = (server.address() as AddressInfo).port;
const any = { kind: 'any' } as const;
const rules: NetRule[] = [
  { kind: 'exact', host: 'api.bench.example', ports: any, source: 'api.bench.example:*' },
  { kind: 'exact', host: 'plain.bench.example', ports: any, source: 'plain.bench.example:*' },
  { kind: 'cidr', family: 4, address: '127.0.0.1', prefix: 32, ports: any, source: '127.0.0.1:*' },
];
const rate = { perSecond: 1_000_000, burst: 1_000_000 };
const session = new Session({
  matcher: compileEgress({ rules, rateLimit: rate, byteQuota: null }),
  audit: { append: () => undefined },
  actor: { execution: 'bench' },
  resolver: { resolve: () => Promise.resolve({ rcode: 'NOERROR', addresses: ['127.0.0.1'], names: [] } as unknown as Resolution) },
  rateLimit: rate,
  byteQuota: null,
});
const ca = await ExecutionCa.create('bench', Date.now());
const secrets = [{ secret: 'bench', version: 1, hosts: ['api.bench.example'], header: 'authorization', placeholder: PH, value: KEY }];
session.secrets = secrets;
session.interceptor = new Interceptor(session, { ca, secrets, trustedCas: [pki.ca], tlsPorts: [port] });
const proxy = await startHttpListener(session, 'explicit', '127.0.0.1');
const proxyPort = (proxy.address() as AddressInfo).port;

interface Path {
  readonly name: string;
  readonly host: string;
  readonly ca: string;
  readonly auth: string;
}
const PATHS: Path[] = [
  { name: 'tunnel', host: 'plain.bench.example', ca: pki.ca, auth: `Bearer ${KEY}` },
  { name: 'terminated', host: 'api.bench.example', ca: ca.certPem, auth: `Bearer ${PH}` },
];

async function open(p: Path): Promise<TLSSocket> {
  const req = httpRequest({
    host: '127.0.0.1',
    port: proxyPort,
    method: 'CONNECT',
    path: `${p.host}:${port}`,
    headers: { host: `${p.host}:${port}` },
  });
  req.end();
  const [res, sock] = (await once(req, 'connect')) as [{ statusCode: number }, Socket];
  if (res.statusCode !== 200) throw new Error(`CONNECT ${p.host}: ${res.statusCode}`);
  const tls = tlsConnect({ socket: sock, servername: p.host, ca: p.ca, ALPNProtocols: ['http/1.1'] });
  await once(tls, 'secureConnect');
  tls.setNoDelay(true);
  return tls;
}

/** One request on `tls`, resolved when the whole (small, content-length) response is read. */
function exchange(tls: TLSSocket, p: Path): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = /content-length: (\d+)/i.exec(buf.slice(0, end));
      if (m && buf.length >= end + 4 + Number(m[1])) {
        tls.off('data', onData);
        if (!buf.endsWith('ok')) return reject(new Error(`${p.name}: unexpected answer ${buf.slice(0, 80)}`));
        resolve();
      }
    };
    tls.on('data', onData);
    tls.write(`GET /v1/x HTTP/1.1\r\nHost: ${p.host}:${port}\r\nAuthorization: ${p.auth}\r\n\r\n`);
  });
}

const pct = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const median = (xs: number[]): number => pct(xs, 0.5);

async function keepAlive(p: Path): Promise<{ p50: number; p99: number; rps: number }> {
  const tls = await open(p);
  for (let i = 0; i < 50; i++) await exchange(tls, p); // warm-up
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < REQUESTS; i++) {
    const s = performance.now();
    await exchange(tls, p);
    lat.push(performance.now() - s);
  }
  const total = performance.now() - t0;
  tls.destroy();
  return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), rps: (REQUESTS / total) * 1000 };
}

async function handshakes(p: Path): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < HANDSHAKES; i++) {
    const tls = await open(p);
    await exchange(tls, p);
    tls.destroy();
  }
  return (HANDSHAKES / (performance.now() - t0)) * 1000;
}

const results: Record<string, { p50: number[]; p99: number[]; rps: number[]; hs: number[] }> = {};
for (const p of PATHS) results[p.name] = { p50: [], p99: [], rps: [], hs: [] };
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? PATHS : [...PATHS].reverse();
  for (const p of order) {
    const k = await keepAlive(p);
    const h = await handshakes(p);
    const x = results[p.name]!;
    x.p50.push(k.p50);
    x.p99.push(k.p99);
    x.rps.push(k.rps);
    x.hs.push(h);
  }
}
const f = (n: number, d = 3): string => n.toFixed(d);
console.log(`secrets bench: ${REQUESTS} keep-alive requests, ${HANDSHAKES} new connections per path, ${ROUNDS} rounds (medians)`);
console.log('path        p50 ms  p99 ms  req/s   new conn/s');
for (const p of PATHS) {
  const x = results[p.name]!;
  console.log(
    `${p.name.padEnd(11)} ${f(median(x.p50)).padStart(6)}  ${f(median(x.p99)).padStart(6)}  ${f(median(x.rps), 0).padStart(6)}  ${f(median(x.hs), 0).padStart(6)}`,
  );
}
const t = results.tunnel!;
const m = results.terminated!;
console.log(
  `terminated vs tunnel: +${f(median(m.p50) - median(t.p50))} ms at p50 (target <= 2 ms), +${f(median(m.p99) - median(t.p99))} ms at p99, ` +
    `${f((median(m.rps) / median(t.rps)) * 100, 0)} % of the tunnel's req/s (target >= 80 %), ${f((median(m.hs) / median(t.hs)) * 100, 0)} % of its new connections/s`,
);
proxy.close();
session.interceptor.close();
server.close();
rmSync(dir, { recursive: true, force: true });

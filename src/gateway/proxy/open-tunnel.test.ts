import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../audit/event.js';
import { parseAllowEntry } from '../../policy/host.js';
import { compileEgress } from '../../policy/net.js';
import type { NetRule } from '../../policy/types.js';
import type { Resolution, Resolver } from '../dns/upstream.js';
import { Session } from '../session.js';
import { startHttpListener } from './http.js';
import { startSocksListener } from './socks.js';
import { decideCaptured, originalPortFromConntrack } from './transparent-tcp.js';

const noDns: Resolver = { resolve: (): Promise<Resolution> => Promise.reject(new Error('no DNS in this test')) };
const rate = { perSecond: 100, burst: 100 };

function session(entries: readonly string[], byteQuota: number | null, events: AuditEventInput[]): Session {
  const rules: NetRule[] = entries.map((e) => {
    const r = parseAllowEntry(e);
    assert.ok(r.ok, e);
    return r.rule;
  });
  return new Session({
    matcher: compileEgress({ rules, rateLimit: rate, byteQuota }),
    audit: { append: (e) => void events.push(e) },
    actor: { execution: 't' },
    resolver: noDns,
    rateLimit: rate,
    byteQuota,
  });
}

/** Send `bytes` to 127.0.0.1:port and collect what comes back until the peer closes. */
async function exchange(port: number, bytes: Buffer): Promise<Buffer> {
  const s = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', () => undefined);
  s.write(bytes);
  await once(s, 'close');
  return Buffer.concat(chunks);
}

function socksConnect(port: number): Buffer {
  return Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 255]);
}

describe('the tunnel paths (CONNECT, SOCKS5), when the byte quota is used up', () => {
  let upstream: Server;
  let upstreamPort = 0;
  let upstreamConnections = 0;
  before(async () => {
    upstream = createServer((s) => {
      upstreamConnections++;
      s.end('hello from upstream\n');
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    upstreamPort = (upstream.address() as AddressInfo).port;
  });
  after(() => upstream.close());

  it('CONNECT is refused before the upstream is connected (regression: the quota check was missing on CONNECT)', async () => {
    const events: AuditEventInput[] = [];
    const s = session([`127.0.0.0/8:${upstreamPort}`], 10, events);
    assert.equal(s.charge(11), false); // the quota is used up
    const proxy = await startHttpListener(s, 'explicit', '127.0.0.1');
    try {
      const before = upstreamConnections;
      const out = (
        await exchange(
          (proxy.address() as AddressInfo).port,
          Buffer.from(`CONNECT 127.0.0.1:${upstreamPort} HTTP/1.1\r\nHost: 127.0.0.1:${upstreamPort}\r\n\r\n`),
        )
      ).toString('latin1');
      assert.match(out, /^HTTP\/1\.1 429 /);
      assert.match(out, /X-Aegis-Reason: gateway\.quota_exceeded/);
      assert.equal(upstreamConnections, before, 'the upstream was never connected');
      assert.ok(
        events.some(
          (e) =>
            e.action === 'net.connect' && e.decision === 'deny' && e.reason === 'gateway.quota_exceeded' && e.payload.mode === 'connect',
        ),
      );
    } finally {
      proxy.close();
    }
  });

  it('SOCKS5 is refused before the upstream is connected (regression: the quota check was missing on SOCKS5)', async () => {
    const events: AuditEventInput[] = [];
    const s = session([`127.0.0.0/8:${upstreamPort}`], 10, events);
    assert.equal(s.charge(11), false);
    const socks = await startSocksListener(s, '127.0.0.1');
    try {
      const before = upstreamConnections;
      const out = await exchange((socks.address() as AddressInfo).port, socksConnect(upstreamPort));
      // Method selection (05 00), then the reply: 05 02 = connection not allowed by ruleset.
      assert.deepEqual([...out.subarray(0, 4)], [0x05, 0x00, 0x05, 0x02]);
      assert.equal(upstreamConnections, before, 'the upstream was never connected');
      assert.ok(
        events.some(
          (e) =>
            e.action === 'net.connect' && e.decision === 'deny' && e.reason === 'gateway.quota_exceeded' && e.payload.mode === 'socks5',
        ),
      );
    } finally {
      socks.close();
    }
  });

  it('with quota left, the same requests reach the upstream (the check is the quota, not the path)', async () => {
    const events: AuditEventInput[] = [];
    const s = session([`127.0.0.0/8:${upstreamPort}`], 1_000_000, events);
    const socks = await startSocksListener(s, '127.0.0.1');
    try {
      const before = upstreamConnections;
      const out = await exchange((socks.address() as AddressInfo).port, socksConnect(upstreamPort));
      assert.deepEqual([...out.subarray(0, 4)], [0x05, 0x00, 0x05, 0x00]);
      assert.match(out.subarray(12).toString('latin1'), /hello from upstream/);
      assert.equal(upstreamConnections, before + 1);
    } finally {
      socks.close();
    }
  });
});

describe('upstream failures are errors, not denials', () => {
  it('CONNECT to an allowed port where nothing listens: 502, audited with decision error', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const events: AuditEventInput[] = [];
    const s = session([`127.0.0.0/8:${port}`], null, events);
    const proxy = await startHttpListener(s, 'explicit', '127.0.0.1');
    try {
      const out = (
        await exchange((proxy.address() as AddressInfo).port, Buffer.from(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\n\r\n`))
      ).toString('latin1');
      assert.match(out, /^HTTP\/1\.1 502 /);
      assert.match(out, /X-Aegis-Decision: error/);
      const e = events.find((x) => x.action === 'net.connect');
      assert.equal(e?.decision, 'error');
      assert.equal(e?.reason, 'gateway.upstream_failed');
      assert.ok(!events.some((x) => x.decision === 'deny'), 'no denial is logged');
    } finally {
      proxy.close();
    }
  });
});

describe('generic TCP capture: deciding on the original destination', () => {
  const events: AuditEventInput[] = [];
  it('decides on the name the gateway answered for the address, with the port', () => {
    const s = session(['db.internal:5432', 'api.example.com'], null, events);
    s.noteAnswer('db.internal', ['198.51.100.40']);
    assert.deepEqual(decideCaptured(s, '198.51.100.40', 5432), {
      host: 'db.internal',
      decision: { allow: true, reason: 'net.allowed.exact', rule: 'db.internal:5432' },
    });
    const other = decideCaptured(s, '198.51.100.40', 5433);
    assert.equal(other.host, 'db.internal');
    assert.equal(other.decision.allow, false);
    assert.equal(other.decision.allow ? '' : other.decision.reason, 'net.denied.port');
  });
  it('an address the gateway never answered is decided as an address (denied unless a CIDR rule lists it)', () => {
    const s = session(['db.internal:5432', '198.51.100.0/28:22'], null, events);
    const d = decideCaptured(s, '198.51.100.40', 5432);
    assert.deepEqual([d.host, d.decision.allow ? '' : d.decision.reason], ['198.51.100.40', 'net.denied.ip_literal']);
    assert.equal(decideCaptured(s, '198.51.100.7', 22).decision.allow, true);
  });
  it('any allowed name of a shared address wins; a denied name does not hide it', () => {
    const s = session(['db.internal:5432'], null, events);
    s.noteAnswer('db.internal', ['198.51.100.40']);
    s.noteAnswer('cdn.example.net', ['198.51.100.40']);
    assert.equal(decideCaptured(s, '198.51.100.40', 5432).host, 'db.internal');
  });
});

describe('generic TCP capture, any-port listener: the original port from /proc/net/nf_conntrack', () => {
  // Lines in the kernel's format (as read on this host, kernel 6.18): original tuple, then reply.
  const text = [
    'ipv4     2 tcp      6 18 TIME_WAIT src=10.201.0.2 dst=198.51.100.10 sport=47908 dport=80 src=10.201.0.1 dst=10.201.0.2 sport=44351 dport=47908 [ASSURED] mark=0 zone=0 use=2',
    'ipv4     2 tcp      6 431999 ESTABLISHED src=10.201.0.6 dst=198.51.100.20 sport=40000 dport=6000 src=10.201.0.5 dst=198.51.100.20 sport=41234 dport=40000 [ASSURED] mark=0 zone=0 use=2',
    'ipv4     2 tcp      6 431999 ESTABLISHED src=10.201.0.2 dst=198.51.100.20 sport=40000 dport=9002 src=10.201.0.1 dst=198.51.100.20 sport=41234 dport=40000 [ASSURED] mark=0 zone=0 use=2',
    'ipv4     2 udp      17 20 src=10.201.0.2 dst=198.51.100.20 sport=40000 dport=7 src=10.201.0.1 dst=198.51.100.20 sport=41234 dport=40000 mark=0 zone=0 use=2',
  ].join('\n');
  const c = { gateway: '10.201.0.1', listenerPort: 41234, address: '198.51.100.20', sourcePort: 40000, sandbox: '10.201.0.2' };
  it('finds the entry whose reply direction is the accepted connection, for this sandbox', () => {
    assert.equal(originalPortFromConntrack(text, c), 9002);
  });
  it('another sandbox, another source port or no entry: null (the connection is reset)', () => {
    assert.equal(originalPortFromConntrack(text, { ...c, sandbox: '10.201.0.9' }), null);
    assert.equal(originalPortFromConntrack(text, { ...c, sourcePort: 40001 }), null);
    assert.equal(originalPortFromConntrack('', c), null);
  });
});

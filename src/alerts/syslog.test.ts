/**
 * The syslog sink against real receivers on loopback (UDP, TCP, TLS with a throw-away CA), and
 * the message format and framing it sends.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { makeLoopbackPki, type TestPki } from '../test-support/tls.js';
import type { AlertRecord } from './deliver.js';
import { octetFrame, STREAM_MAX_BYTES, SyslogSink, syslogAlert, UDP_MAX_BYTES } from './syslog.js';

const FAST = { baseDelayMs: 5, maxDelayMs: 20 };
const record = (id: string, over: Partial<AlertRecord> = {}): AlertRecord => ({
  id,
  time: '2026-11-30T05:00:00.000Z',
  rule: 'test-rule',
  title: 'Test rule',
  level: 'critical',
  kind: 'detection',
  summary: 'metadata "169.254.169.254" ]',
  actor: { execution: 'x1', agent: 'probe' },
  eventIds: ['e1'],
  suppressed: 0,
  ...over,
});

/** Splits an octet-counted stream (RFC 6587 §3.4.1) into messages; throws on a malformed frame. */
function unframe(stream: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < stream.length) {
    const sp = stream.indexOf(0x20, at);
    const lenText = stream.subarray(at, sp).toString('ascii');
    assert.match(lenText, /^[1-9]\d*$/, `MSG-LEN at byte ${at}`);
    const len = Number(lenText);
    assert.ok(sp + 1 + len <= stream.length, 'the frame is complete');
    out.push(stream.subarray(sp + 1, sp + 1 + len).toString('utf8'));
    at = sp + 1 + len;
  }
  return out;
}

/** Waits until `check` holds (events from servers arrive asynchronously); bounded. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), what);
}

describe('syslog message and framing', () => {
  it('facility 13 (log audit), severity from the level, structured data escaped, the record as MSG', () => {
    const r = record('id-1');
    const m = syslogAlert(r, 'host-1', UDP_MAX_BYTES);
    const expect = (level: AlertRecord['level'], sev: number) =>
      assert.ok(syslogAlert(record('i', { level }), 'h', UDP_MAX_BYTES).startsWith(`<${13 * 8 + sev}>1 `), level);
    expect('critical', 2);
    expect('high', 3);
    expect('medium', 4);
    expect('low', 5);
    expect('informational', 6);
    assert.ok(
      m.startsWith(
        '<106>1 2026-11-30T05:00:00.000Z host-1 aegis - alert.raised [aegis@32473 id="id-1" rule="test-rule" level="critical" agent="probe" execution="x1"] ',
      ),
      m,
    );
    assert.deepEqual(JSON.parse(m.slice(m.indexOf('] ') + 2)), r);
  });
  it('is bounded: a long summary has its MSG cut on a character boundary, never the header', () => {
    const long = record('id-2', { summary: 'é'.repeat(5000) });
    for (const max of [UDP_MAX_BYTES, STREAM_MAX_BYTES]) {
      const m = syslogAlert(long, 'host-1', max);
      assert.ok(Buffer.byteLength(m) <= max && Buffer.byteLength(m) > max - 4, `${Buffer.byteLength(m)} of ${max}`);
      assert.ok(!m.includes('\uFFFD'), 'no broken UTF-8 sequence');
      assert.ok(m.startsWith('<106>1 2026-11-30T05:00:00.000Z host-1 aegis - alert.raised [aegis@32473 id="id-2"'));
    }
  });
  it('octet counting counts bytes, not characters (RFC 6587 §3.4.1)', () => {
    const f = octetFrame('<106>1 é');
    assert.equal(f.toString('utf8'), `${Buffer.byteLength('<106>1 é')} <106>1 é`);
    assert.deepEqual(unframe(Buffer.concat([f, octetFrame('second')])), ['<106>1 é', 'second']);
  });
});

describe('syslog delivery (real receivers on loopback)', () => {
  let dir = '';
  let pki: TestPki;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-syslog-'));
    pki = makeLoopbackPki(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('udp: one datagram per alert, an RFC 5424 message', async () => {
    const rx = dgram.createSocket('udp4');
    const got: string[] = [];
    rx.on('message', (m) => got.push(m.toString('utf8')));
    await new Promise<void>((r) => rx.bind(0, '127.0.0.1', r));
    const sink = new SyslogSink({ protocol: 'udp', host: '127.0.0.1', port: rx.address().port, hostname: 'host-1', ...FAST });
    try {
      sink.send(record('u1'));
      sink.send(record('u2', { level: 'low' }));
      assert.equal(await sink.flush(5000), 0);
      await until(() => got.length === 2, 'two datagrams');
      assert.deepEqual(
        got.map((m) => m.slice(0, 6)),
        ['<106>1', '<109>1'],
      );
      assert.deepEqual(
        got.map((m) => (JSON.parse(m.slice(m.indexOf('] ') + 2)) as AlertRecord).id),
        ['u1', 'u2'],
      );
      assert.deepEqual(sink.stats, { delivered: 2, retried: 0, failed: 0, dropped: 0 });
    } finally {
      sink.close();
      rx.close();
    }
  });

  it('tcp: octet-counted frames on one connection; a connection the receiver closed is reopened', async () => {
    const streams: Buffer[][] = [];
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => {
      const chunks: Buffer[] = [];
      streams.push(chunks);
      sockets.push(s);
      s.on('data', (c) => chunks.push(c));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const sink = new SyslogSink({ protocol: 'tcp', host: '127.0.0.1', port, hostname: 'host-1', ...FAST });
    const messages = (): string[] => streams.flatMap((c) => unframe(Buffer.concat(c)));
    try {
      sink.send(record('t1'));
      sink.send(record('t2'));
      await sink.flush(5000);
      await until(() => messages().length === 2, 'two frames');
      assert.equal(streams.length, 1, 'one connection');
      // The receiver drops the connection; the next alert reconnects.
      for (const s of sockets) s.destroy();
      await new Promise((r) => setTimeout(r, 50));
      sink.send(record('t3'));
      await sink.flush(5000);
      await until(() => messages().length === 3, 'the third frame, on a new connection');
      assert.equal(streams.length, 2);
      assert.deepEqual(
        messages().map((m) => (JSON.parse(m.slice(m.indexOf('] ') + 2)) as AlertRecord).id),
        ['t1', 't2', 't3'],
      );
      assert.equal(sink.stats.delivered, 3);
      assert.equal(sink.stats.failed + sink.stats.dropped, 0);
    } finally {
      sink.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('tcp: a receiver that is not there is retried with backoff, then counted as failed (regression: flush once let the process exit while a retry waited)', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const sink = new SyslogSink({ protocol: 'tcp', host: '127.0.0.1', port, hostname: 'h', ...FAST, maxAttempts: 3 });
    try {
      sink.send(record('n1'));
      assert.equal(await sink.flush(5000), 0);
      assert.deepEqual(sink.stats, { delivered: 0, retried: 2, failed: 1, dropped: 0 });
    } finally {
      sink.close();
    }
  });

  it('tls: framed messages over TLS verified against the configured CA; without the CA nothing is sent', async () => {
    const chunks: Buffer[] = [];
    const server = tls.createServer({ cert: pki.cert, key: pki.key }, (s) => s.on('data', (c: Buffer) => chunks.push(c)));
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const trusted = new SyslogSink({ protocol: 'tls', host: '127.0.0.1', port, hostname: 'host-1', ca: pki.ca, ...FAST });
    const untrusting = new SyslogSink({ protocol: 'tls', host: '127.0.0.1', port, hostname: 'host-1', ...FAST, maxAttempts: 2 });
    try {
      trusted.send(record('s1'));
      untrusting.send(record('s2'));
      await Promise.all([trusted.flush(5000), untrusting.flush(5000)]);
      await until(() => chunks.length > 0 && unframe(Buffer.concat(chunks)).length === 1, 'one frame');
      const [m] = unframe(Buffer.concat(chunks));
      assert.ok(m!.startsWith('<106>1 2026-11-30T05:00:00.000Z host-1 aegis - alert.raised [aegis@32473 id="s1"'), m);
      assert.deepEqual(trusted.stats, { delivered: 1, retried: 0, failed: 0, dropped: 0 });
      assert.deepEqual(untrusting.stats, { delivered: 0, retried: 1, failed: 1, dropped: 0 });
    } finally {
      trusted.close();
      untrusting.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

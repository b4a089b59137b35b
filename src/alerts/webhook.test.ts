/**
 * The webhook sink against real HTTP(S) servers on loopback: signatures a receiver can check,
 * retries with backoff, bounded waits, TLS verification, the secret file's mode, and an
 * AlertingSink whose append is never held up by a receiver that does not answer.
 */
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { hasCode } from '../test-support/errors.js';
import { makeLoopbackPki, type TestPki } from '../test-support/tls.js';
import { alertRecord, type AlertRecord } from './deliver.js';
import { AlertEngine } from './engine.js';
import { AlertError } from './errors.js';
import { linkRules } from './rule.js';
import { parseRules } from './rule-file.js';
import { AlertingSink } from './sink.js';
import { readWebhookSecret, signWebhook, WebhookSink } from './webhook.js';

const SECRET = Buffer.from('0123456789abcdef-test-secret');
const FAST = { baseDelayMs: 5, maxDelayMs: 20 };

const record = (id: string): AlertRecord => ({
  id,
  time: '2026-11-30T05:00:00.000Z',
  rule: 'test-rule',
  title: 'Test rule',
  level: 'high',
  kind: 'detection',
  summary: 'Test rule: net.connect deny "quoted" ]',
  actor: { execution: 'x1', agent: 'probe' },
  eventIds: ['e1'],
  suppressed: 0,
});

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A receiver answering each request with the next status of `statuses` (the last one repeats); `null` never answers. */
function receiver(statuses: Array<number | null>, tlsOpts?: { cert: string; key: string }) {
  const got: Received[] = [];
  const hung: http.ServerResponse[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const s = statuses.length > 1 ? statuses.shift()! : statuses[0]!;
      if (s === null) hung.push(res);
      else res.writeHead(s).end();
    });
  };
  const server = tlsOpts ? https.createServer(tlsOpts, handler) : http.createServer(handler);
  return {
    got,
    server,
    async listen(): Promise<string> {
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return `${tlsOpts ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    },
    async close(): Promise<void> {
      for (const r of hung) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** What a receiver does (docs/alerts.md): HMAC over "<timestamp>.<raw body>", compared in constant time. */
function receiverAccepts(r: Received, secret: Buffer): boolean {
  const ts = r.headers['x-aegis-timestamp'];
  const sig = r.headers['x-aegis-signature'];
  if (typeof ts !== 'string' || typeof sig !== 'string' || !sig.startsWith('sha256=')) return false;
  const want = createHmac('sha256', secret).update(ts).update('.').update(r.body).digest();
  const have = Buffer.from(sig.slice('sha256='.length), 'hex');
  return have.length === want.length && timingSafeEqual(have, want);
}

describe('webhook signature', () => {
  it('is sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>, computed independently with node:crypto', () => {
    const body = JSON.stringify(record('01900000-0000-7000-8000-000000000001'));
    const independent = createHmac('sha256', SECRET)
      .update(Buffer.from(`1764478800.${body}`, 'utf8'))
      .digest('hex');
    assert.equal(signWebhook(SECRET, '1764478800', body), `sha256=${independent}`);
    assert.notEqual(signWebhook(SECRET, '1764478801', body), signWebhook(SECRET, '1764478800', body), 'the timestamp is signed');
    assert.notEqual(signWebhook(Buffer.from('another-secret-of-16'), '1764478800', body), `sha256=${independent}`);
  });
});

describe('webhook delivery (real servers on loopback)', () => {
  let dir = '';
  let pki: TestPki;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-webhook-'));
    pki = makeLoopbackPki(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a receiver failing twice with 500 then accepting: delivered once, 2 retries, every attempt validly signed', async () => {
    const rx = receiver([500, 500, 200]);
    const url = await rx.listen();
    const sink = new WebhookSink({ url, secret: SECRET, ...FAST, now: () => Date.UTC(2026, 10, 30, 5, 0, 0) });
    try {
      sink.send(record('alert-1'));
      assert.equal(await sink.flush(10_000), 0);
      assert.deepEqual(sink.stats, { delivered: 1, retried: 2, failed: 0, dropped: 0 });
      assert.equal(rx.got.length, 3);
      for (const r of rx.got) {
        assert.ok(receiverAccepts(r, SECRET), 'signature checks out');
        assert.ok(!receiverAccepts(r, Buffer.from('wrong-secret-wrong-secret')), 'and only with the right secret');
        assert.equal(r.headers['x-aegis-timestamp'], String(Date.UTC(2026, 10, 30, 5, 0, 0) / 1000));
        assert.equal(r.headers['content-type'], 'application/json');
        assert.deepEqual(JSON.parse(r.body), record('alert-1'));
      }
      const tampered = { ...rx.got[0]!, body: rx.got[0]!.body.replace('high', 'low') };
      assert.ok(!receiverAccepts(tampered, SECRET), 'a changed body fails the check');
    } finally {
      sink.close();
      await rx.close();
    }
  });

  it('a receiver refusing with 400 is a permanent failure: no retry', async () => {
    const rx = receiver([400]);
    const sink = new WebhookSink({ url: await rx.listen(), secret: SECRET, ...FAST });
    try {
      sink.send(record('alert-1'));
      await sink.flush(10_000);
      assert.deepEqual(sink.stats, { delivered: 0, retried: 0, failed: 1, dropped: 0 });
      assert.equal(rx.got.length, 1);
    } finally {
      sink.close();
      await rx.close();
    }
  });

  it('a receiver that never answers: attempts time out, bounded, counted as failed; the append path is not held', async () => {
    const rx = receiver([null]);
    const url = await rx.listen();
    const sink = new WebhookSink({ url, secret: SECRET, ...FAST, timeoutMs: 150, maxAttempts: 3 });
    const engine = new AlertEngine(
      linkRules(parseRules('title: Start\nid: test-start\nlevel: low\ndetection:\n  s: { action: run.start }\n  condition: s\n', 'r.yml')),
    );
    const logged: AuditEventInput[] = [];
    const alerting = new AlertingSink({ append: (e) => void logged.push(e) }, engine, (a, id) => sink.send(alertRecord(a, id)));
    try {
      const r = alerting.append({ actor: { execution: 'x1' }, action: 'run.start', decision: 'info', payload: {} });
      assert.equal(r, undefined, 'append returned synchronously');
      assert.deepEqual(
        logged.map((e) => e.action),
        ['run.start', 'alert.raised'],
        'the event and its alert are in the log before any delivery attempt finished',
      );
      assert.equal(sink.stats.delivered + sink.stats.failed, 0);
      assert.equal(await sink.flush(20_000), 0);
      assert.deepEqual(sink.stats, { delivered: 0, retried: 2, failed: 1, dropped: 0 });
      assert.equal(rx.got.length, 3);
      assert.equal(JSON.parse(rx.got[0]!.body).id, logged[1]!.id, 'the body names the alert.raised event');
    } finally {
      sink.close();
      await rx.close();
    }
  });

  it('the queue is bounded: beyond maxQueue the oldest alerts are dropped and counted; close() counts what is left as failed', async () => {
    const rx = receiver([null]);
    const sink = new WebhookSink({ url: await rx.listen(), secret: SECRET, ...FAST, timeoutMs: 60_000, maxQueue: 2 });
    try {
      for (let i = 0; i < 6; i++) sink.send(record(`a${i}`));
      // One in flight, two waiting, three dropped.
      assert.equal(sink.stats.dropped, 3);
      assert.equal(await sink.flush(50), 3, 'flush waits a bounded time and says what is left');
      sink.close();
      assert.deepEqual(sink.stats, { delivered: 0, retried: 0, failed: 3, dropped: 3 });
    } finally {
      sink.close();
      await rx.close();
    }
  });

  it('https: verified against the configured CA; without it the certificate is refused', async () => {
    const rx = receiver([200], { cert: pki.cert, key: pki.key });
    const url = await rx.listen();
    const trusted = new WebhookSink({ url, secret: SECRET, ca: pki.ca, ...FAST });
    const untrusting = new WebhookSink({ url, secret: SECRET, ...FAST, maxAttempts: 2 });
    try {
      trusted.send(record('a1'));
      untrusting.send(record('a2'));
      await Promise.all([trusted.flush(10_000), untrusting.flush(10_000)]);
      assert.deepEqual(trusted.stats, { delivered: 1, retried: 0, failed: 0, dropped: 0 });
      assert.deepEqual(untrusting.stats, { delivered: 0, retried: 1, failed: 1, dropped: 0 });
      assert.deepEqual(
        rx.got.map((r) => (JSON.parse(r.body) as AlertRecord).id),
        ['a1'],
      );
    } finally {
      trusted.close();
      untrusting.close();
      await rx.close();
    }
  });

  it('the secret file must not be readable by group or others, nor empty-ish', () => {
    const f = join(dir, 'hook.secret');
    writeFileSync(f, `${SECRET.toString()}\n`, { mode: 0o600 });
    chmodSync(f, 0o600);
    assert.deepEqual(readWebhookSecret(f), SECRET, 'the trailing newline is not part of it');
    chmodSync(f, 0o640);
    assert.throws(() => readWebhookSecret(f), hasCode(AlertError, 'alerts.sink_invalid'));
    chmodSync(f, 0o604);
    assert.throws(() => readWebhookSecret(f), hasCode(AlertError, 'alerts.sink_invalid'));
    writeFileSync(f, 'short\n', { mode: 0o600 });
    chmodSync(f, 0o600);
    assert.throws(() => readWebhookSecret(f), hasCode(AlertError, 'alerts.sink_invalid'));
    assert.throws(() => readWebhookSecret(join(dir, 'missing')), hasCode(AlertError, 'alerts.sink_invalid'));
  });
});

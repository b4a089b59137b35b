import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditError } from './errors.js';
import { FileSink, NoSink, WebhookSink, readPublished, sinkFromSpec } from './publish.js';

describe('checkpoint sinks', () => {
  it('parses AEGIS_AUDIT_PUBLISH, defaulting to the file sink', () => {
    assert.ok(sinkFromSpec(undefined, '/d') instanceof FileSink);
    assert.equal((sinkFromSpec('file:/x/y', '/d') as FileSink).dir, '/x/y');
    assert.ok(sinkFromSpec('https://example.org/cp', '/d') instanceof WebhookSink);
    assert.ok(sinkFromSpec('none', '/d') instanceof NoSink);
    assert.throws(
      () => sinkFromSpec('syslog', '/d'),
      (e: unknown) => e instanceof AuditError && e.code === 'audit.config_invalid',
    );
  });

  it('the file sink appends notes and pins the first key only', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-pub-'));
    const sink = new FileSink(dir);
    await sink.pinKey('first+00000000+AA');
    await sink.pinKey('second+00000000+AA');
    await sink.publish('a\n\n\u2014 k sig\n');
    await sink.publish('b\n\n\u2014 k sig\n');
    assert.deepEqual(await readPublished(dir), { notes: ['a\n\n\u2014 k sig\n', 'b\n\n\u2014 k sig\n'], pinnedKey: 'first+00000000+AA' });
    await rm(dir, { recursive: true });
  });

  it('the webhook sink POSTs the note as text/plain, and reports a failing receiver', async () => {
    const got: Array<{ type: string | undefined; body: string }> = [];
    let status = 204;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        got.push({ type: req.headers['content-type'], body });
        res.statusCode = status;
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const sink = new WebhookSink(`http://127.0.0.1:${port}/checkpoints`);
      await sink.publish('origin\n1\nroot\n\n\u2014 k sig\n');
      assert.deepEqual(got, [{ type: 'text/plain; charset=utf-8', body: 'origin\n1\nroot\n\n\u2014 k sig\n' }]);
      status = 500;
      await assert.rejects(sink.publish('x\n'), (e: unknown) => e instanceof AuditError && e.code === 'audit.publish_failed');
    } finally {
      server.close();
    }
  });
});

describe('readPublished, when the pinned key cannot be read', () => {
  it('fails (audit.store_io) instead of falling back to trusting the store key', async () => {
    const { mkdir } = await import('node:fs/promises');
    const dir = await mkdtemp(join(tmpdir(), 'aegis-pin-'));
    try {
      await mkdir(join(dir, 'log.pub')); // EISDIR: unreadable, but present
      await assert.rejects(readPublished(dir), (e: unknown) => e instanceof AuditError && e.code === 'audit.store_io');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('treats a missing pin as no pin', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-pin-'));
    try {
      assert.deepEqual(await readPublished(dir), { notes: [] });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

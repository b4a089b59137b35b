import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify from 'fastify';
import { hasCode } from '../test-support/errors.js';
import { rawRequest } from '../test-support/api.js';
import { makeLoopbackPki } from '../test-support/tls.js';
import { ServerError } from './errors.js';
import { peerCredentials } from './peercred.js';
import { isLoopback, listen, parseListen } from './transport.js';

function app(): ReturnType<typeof Fastify> {
  const a = Fastify();
  a.get('/x', async (req) => ({ remote: req.raw.socket.remoteAddress ?? null }));
  a.get('/hang', (_req, reply) => {
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
    reply.raw.write(': open\n\n');
  });
  return a;
}

describe('transport', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-transport-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parses HOST:PORT and refuses anything else', () => {
    assert.deepEqual(parseListen('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
    for (const bad of ['8080', 'example.com:80', '127.0.0.1:99999', '1.2.3:80', 'http://127.0.0.1:80'])
      assert.throws(() => parseListen(bad), hasCode(ServerError, 'server.config_invalid'), bad);
    assert.ok(isLoopback('127.0.0.2') && isLoopback('::1') && !isLoopback('0.0.0.0') && !isLoopback('10.0.0.1'));
  });

  it('refuses plaintext on a non-loopback address unless --insecure', async () => {
    await assert.rejects(listen(app(), { listen: '0.0.0.0:0' }), hasCode(ServerError, 'server.config_invalid'));
    const l = await listen(app(), { listen: '0.0.0.0:0', insecure: true });
    assert.match(l.url ?? '', /^http:\/\/0\.0\.0\.0:\d+$/);
    await l.close();
  });

  it('close() ends a connection a client holds open (an event stream) after the grace period', async () => {
    const l = await listen(app(), { listen: '127.0.0.1:0' });
    const held = rawRequest({ url: l.url! }, 'GET', '/hang');
    await new Promise((r) => setTimeout(r, 100));
    await l.close(200);
    await assert.rejects(held, 'the held connection is closed');
    await assert.rejects(rawRequest({ url: l.url! }, 'GET', '/x'), 'no new connection is accepted');
  });

  it('serves TLS with the configured certificate', async () => {
    const pki = makeLoopbackPki(dir);
    const l = await listen(app(), { listen: '127.0.0.1:0', tls: { cert: pki.cert, key: pki.key } });
    try {
      assert.match(l.url ?? '', /^https:\/\//);
      const r = await rawRequest({ url: l.url!, ca: pki.ca }, 'GET', '/x');
      assert.equal(r.status, 200);
      await assert.rejects(rawRequest({ url: l.url! }, 'GET', '/x'), 'an unknown CA is refused by the client');
    } finally {
      await l.close();
    }
  });

  it('creates the socket 0660, replaces a stale one, refuses to take over a live one', async () => {
    const path = join(dir, 'sock', 'aegis.sock');
    await (await import('node:fs/promises')).mkdir(join(dir, 'sock'), { recursive: true });
    // Another process listening on the path (then SIGKILLed: its socket file stays, stale).
    const other = spawn(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`,
    ]);
    await new Promise<void>((r) => other.stdout.once('data', () => r()));
    await assert.rejects(listen(app(), { socket: path }), hasCode(ServerError, 'server.config_invalid'), 'a live server is not taken over');
    other.kill('SIGKILL');
    await new Promise((r) => other.once('exit', r));
    assert.ok((await stat(path)).isSocket(), 'a stale socket file is left');
    const l = await listen(app(), { socket: path });
    try {
      const st = await stat(path);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o660);
      const r = await rawRequest({ socketPath: path }, 'GET', '/x');
      assert.deepEqual(r.json, { remote: null });
    } finally {
      await l.close();
    }
    await assert.rejects(stat(path), 'the socket is removed on close');
  });

  it('peer credentials come from the kernel: this process, its uid and gid', async () => {
    const path = join(dir, 'peer.sock');
    const seen = new Promise<Awaited<ReturnType<typeof peerCredentials>>>((resolve) => {
      const srv = createServer((s) => {
        void peerCredentials(s).then((p) => {
          resolve(p);
          s.destroy();
          srv.close();
        });
      });
      srv.listen(path, () => connect(path).on('error', () => undefined));
    });
    const p = await seen;
    assert.ok(p !== undefined);
    assert.equal(p.pid, process.pid);
    assert.equal(p.uid, process.getuid!());
    assert.ok(p.gids.includes(process.getgid!()));
  });
});

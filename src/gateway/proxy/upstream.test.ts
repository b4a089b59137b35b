import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connectTo, LARGE_READ_BYTES } from './upstream.js';

/**
 * A loopback server that sends `banner` at once, then `body` when the client writes "go": in
 * one write, or in `piece`-byte writes 2 ms apart (reads of medium size).
 */
function server(banner: Buffer, body: Buffer, piece = 0): Promise<Server> {
  const s = createServer((c: Socket) => {
    c.write(banner);
    c.once('data', () => {
      if (piece === 0) return void c.end(body);
      let at = 0;
      const next = (): void => {
        if (at >= body.length) return void c.end();
        c.write(body.subarray(at, (at += piece)));
        setTimeout(next, 2);
      };
      next();
    });
    c.on('error', () => c.destroy());
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Read everything from `srv` through an Upstream with a slow sink; returns the bytes and how many chunks were large. */
async function readAll(srv: Server, writeMs = 1): Promise<{ got: Buffer; large: number }> {
  const up = await connectTo('127.0.0.1', (srv.address() as { port: number }).port);
  await new Promise((r) => setTimeout(r, 50)); // the banner arrives while nobody listens
  const chunks: Buffer[] = [];
  let large = 0;
  let pending = 0;
  const ended = new Promise<void>((resolve) => up.socket.once('end', resolve));
  up.attach((chunk, done) => {
    // A slow writer: up to three chunks in flight, each "written" (copied) a little later,
    // while reading goes on; only then is its buffer released. A buffer reused too early
    // would be overwritten before it is copied, and the hash below would differ.
    if (chunk.length > 64 * 1024) large++;
    if (++pending >= 3) up.socket.pause();
    setTimeout(() => {
      chunks.push(Buffer.from(chunk));
      done();
      if (--pending < 3) up.socket.resume();
    }, writeMs);
  });
  up.socket.resume();
  up.socket.write('go');
  await ended;
  while (pending > 0) await new Promise((r) => setTimeout(r, 5));
  const got = Buffer.concat(chunks);
  up.socket.destroy();
  return { got, large };
}

describe('Upstream (own read buffers, pooled)', () => {
  const banner = Buffer.from('220 upstream speaks first\r\n');
  const body = randomBytes(12 * 1024 * 1024 + 777); // many large reads, and a short last one
  let srv: Server;
  before(async () => {
    srv = await server(banner, body);
  });
  after(() => srv.close());

  it('holds what arrives before attach(), then delivers every byte in order, although buffers are reused', async () => {
    const { got, large } = await readAll(srv);
    assert.equal(got.subarray(0, banner.length).toString(), banner.toString());
    assert.equal(got.length, banner.length + body.length);
    assert.equal(sha(got.subarray(banner.length)), sha(body));
    assert.ok(large > 0, 'a bulk transfer switches to the large buffers');
    assert.ok(large <= Math.ceil(body.length / LARGE_READ_BYTES) * 4, `${large} large reads`);
  });

  it('reads of medium size (between the copy threshold and a full buffer) are not overwritten either', async () => {
    const medium = await server(banner, body.subarray(0, 40 * 20_000), 20_000);
    try {
      const { got } = await readAll(medium, 6); // "writes" slower than the pieces arrive
      assert.equal(sha(got.subarray(banner.length)), sha(body.subarray(0, 40 * 20_000)));
    } finally {
      medium.close();
    }
  });

  it('a small chunk handed to the sink is a copy: reading on does not change it', async () => {
    const up = await connectTo('127.0.0.1', (srv.address() as { port: number }).port);
    const first: Buffer[] = [];
    const ended = new Promise<void>((resolve) => up.socket.once('end', resolve));
    up.attach((chunk, done) => {
      first.push(chunk); // kept without copying, as a slow writer would
      done();
    });
    up.socket.resume();
    up.socket.write('go');
    await ended;
    assert.equal(first[0]!.subarray(0, banner.length).toString(), banner.toString());
    up.socket.destroy();
  });
});

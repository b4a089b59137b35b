import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { callbackSink, fdSink, pump, pumpInput } from './stdio.js';

const dir = mkdtempSync(join(tmpdir(), 'aegis-stdio-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function chunks(n: number, size: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => Buffer.alloc(size, i & 0xff));
}

function fifo(name: string): string {
  const p = join(dir, name);
  const r = spawnSync('mkfifo', ['-m', '600', p]);
  assert.equal(r.status, 0, 'mkfifo');
  return p;
}

describe('pump to a file descriptor', () => {
  it('appends to a file opened for append, after what it held, and resolves once everything is written', async () => {
    const file = join(dir, 'log');
    writeFileSync(file, 'old\n');
    const fd = openSync(file, 'a');
    const data = chunks(50, 10_000);
    const p = pump(Readable.from(data), fdSink(fd));
    await p.done;
    closeSync(fd);
    assert.equal(p.error(), null);
    assert.deepEqual(readFileSync(file), Buffer.concat([Buffer.from('old\n'), ...data]));
  });

  it('keeps at most one chunk in flight: the source is paused while the destination is busy', async () => {
    const src = new PassThrough();
    let inFlight = 0;
    let maxInFlight = 0;
    const got: Buffer[] = [];
    const p = pump(src, (chunk, done) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      setImmediate(() => {
        inFlight--;
        got.push(chunk);
        done(null);
      });
    });
    const data = chunks(20, 1000);
    for (const c of data) src.write(c);
    src.end();
    await p.done;
    assert.equal(maxInFlight, 1);
    assert.deepEqual(Buffer.concat(got), Buffer.concat(data));
  });

  it('retries EAGAIN on a non-blocking pipe until a slow reader has taken everything (no loss)', async () => {
    const path = fifo('slow');
    const rfd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const wfd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    const data = chunks(8, 256 * 1024); // 2 MiB: far more than the pipe holds
    const p = pump(Readable.from(data), fdSink(wfd));
    const got: Buffer[] = [];
    let finished = false;
    void p.done.then(() => (finished = true));
    const buf = Buffer.alloc(65536);
    const total = data.reduce((n, c) => n + c.length, 0);
    let n = 0;
    while (n < total) {
      await new Promise((r) => setTimeout(r, 2));
      try {
        const k = readSync(rfd, buf, 0, buf.length, null);
        got.push(Buffer.from(buf.subarray(0, k)));
        n += k;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
    }
    await p.done;
    assert.ok(finished);
    closeSync(wfd);
    closeSync(rfd);
    assert.equal(p.error(), null);
    assert.deepEqual(Buffer.concat(got), Buffer.concat(data));
  });

  it('stops quietly on EPIPE (the reader went away) and closes the source', async () => {
    const path = fifo('gone');
    const rfd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const wfd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    closeSync(rfd);
    const src = new PassThrough();
    const p = pump(src, fdSink(wfd));
    src.write(Buffer.from('nobody reads this'));
    await p.done;
    closeSync(wfd);
    assert.equal(p.error()?.code, 'EPIPE');
    assert.ok(src.destroyed, 'the sandbox end is closed, so the agent gets EPIPE too');
  });

  it('settle() loses nothing behind a destination slower than the idle bound', async () => {
    // Regression: idle time counted from the last chunk read, so after one slow write the
    // source was closed before its next chunk came in (data a paused socket still held).
    // The source delivers each chunk 100 ms after it is asked (a socket read after resume),
    // the destination takes 300 ms per chunk, the idle bound is 200 ms.
    const queue = ['one', 'two', 'three'];
    const src = new Readable({
      highWaterMark: 0, // like a socket: nothing is read ahead while paused
      read() {
        setTimeout(() => this.push(queue.shift() ?? null), 100);
      },
    });
    const got: string[] = [];
    const p = pump(src, (chunk, done) => {
      setTimeout(() => {
        got.push(chunk.toString());
        done(null);
      }, 300);
    });
    p.settle(200);
    await p.done;
    assert.equal(got.join(''), 'onetwothree');
  });

  it('settle() closes a source that never ends once it has been idle', async () => {
    const src = new PassThrough();
    const got: string[] = [];
    const p = pump(
      src,
      callbackSink((c) => got.push(c.toString())),
    );
    src.write('last words');
    p.settle(20);
    await p.done;
    assert.deepEqual(got, ['last words']);
    assert.ok(src.destroyed);
  });
});

describe('pumpInput', () => {
  it('gives an empty stdin (EOF at once) when there is no source', async () => {
    const dst = new PassThrough();
    pumpInput(null, dst);
    const got: Buffer[] = [];
    for await (const c of dst) got.push(c as Buffer);
    assert.equal(Buffer.concat(got).length, 0);
  });

  it('copies the source and passes EOF on', async () => {
    const dst = new PassThrough();
    pumpInput(Readable.from([Buffer.from('line 1\n'), Buffer.from('line 2\n')]), dst);
    const got: Buffer[] = [];
    for await (const c of dst) got.push(c as Buffer);
    assert.equal(Buffer.concat(got).toString(), 'line 1\nline 2\n');
  });

  it('stop() detaches the source (left paused) and closes the sandbox end', () => {
    const src = new PassThrough();
    const dst = new PassThrough();
    const input = pumpInput(src, dst);
    input.stop();
    assert.ok(dst.destroyed);
    assert.equal(src.isPaused(), true);
    assert.equal(src.listenerCount('data'), 0);
  });
});

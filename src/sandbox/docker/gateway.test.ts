import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { demuxAttach, gatewayOptions, GATEWAY_NANO_CPUS } from './gateway.js';

/** One frame of the engine's multiplexed attach stream. */
function attachFrame(type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

describe('attach stream demultiplexer', () => {
  it('splits stdout and stderr across chunk boundaries', () => {
    const source = new PassThrough();
    const out = new PassThrough();
    const err = new PassThrough();
    demuxAttach(source, out, err);
    const bytes = Buffer.concat([
      attachFrame(1, Buffer.from('hello ')),
      attachFrame(2, Buffer.from('oops')),
      attachFrame(1, Buffer.from('world')),
    ]);
    for (let i = 0; i < bytes.length; i += 5) source.write(bytes.subarray(i, i + 5));
    assert.equal(String(out.read()), 'hello world');
    assert.equal(String(err.read()), 'oops');
  });
  it('a malformed header ends the stream (fail secure)', async () => {
    const source = new PassThrough();
    const out = new PassThrough();
    demuxAttach(source, out, new PassThrough());
    const closed = new Promise<Error | undefined>((resolve) => source.once('error', resolve));
    const bad = attachFrame(1, Buffer.from('x'));
    bad.writeUInt8(7, 2);
    source.write(bad);
    assert.match(String(await closed), /malformed/);
    assert.equal(out.readableLength, 0);
  });
  it('pauses the engine stream while stdout is not taken: a bounded amount is buffered (regression: demuxStream queued everything)', async (t) => {
    const TOTAL = 64 * 1024 * 1024;
    const BOUND = 4 * 1024 * 1024;
    const frame = attachFrame(1, Buffer.alloc(32 * 1024, 0x62));
    // A real socket stands for the engine: it sends 64 MiB of stdout frames as fast as they are read.
    const server = createServer((s) => {
      let sent = 0;
      const more = (): void => {
        while (sent < TOTAL) {
          sent += frame.length - 8;
          if (!s.write(frame)) return void s.once('drain', more);
        }
        s.end();
      };
      s.on('error', () => undefined);
      more();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const source = connect((server.address() as AddressInfo).port, '127.0.0.1');
    t.after(() => {
      source.destroy();
      server.close();
    });
    const out = new PassThrough();
    demuxAttach(source, out, new PassThrough());
    const buffered = (): number => out.writableLength + out.readableLength + source.readableLength;
    let most = 0;
    for (let i = 0; i < 60 && most <= BOUND; i++) {
      await new Promise((r) => setTimeout(r, 25));
      most = Math.max(most, buffered());
    }
    assert.ok(most > 0, 'nothing was carried');
    assert.ok(most <= BOUND, `${most} bytes buffered for an output nobody reads`);
    let got = 0;
    await new Promise<void>((resolve) => {
      out.on('data', (b: Buffer) => void (got += b.length));
      source.once('end', resolve);
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(got, TOTAL);
  });
});

describe('gateway container options', () => {
  it('bounds the gateway container CPU, memory and pids (regression: no CPU limit)', () => {
    const o = gatewayOptions({
      id: 'run-1',
      image: 'aegis-image:x',
      agentUid: 101000,
      address: '10.201.0.2/30',
      gateway: '10.201.0.1',
      inner: 'table inet aegis {}',
      owner: { pid: 1, startTime: '1' },
    });
    assert.equal(o.HostConfig?.NanoCpus, GATEWAY_NANO_CPUS);
    assert.ok(GATEWAY_NANO_CPUS > 0 && GATEWAY_NANO_CPUS <= 1_000_000_000);
    assert.equal(o.HostConfig?.Memory, 256 * 1024 * 1024);
    assert.equal(o.HostConfig?.PidsLimit, 64);
  });
});

import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import {
  encodeFrame,
  FRAME,
  FrameReader,
  MAX_FLOWS,
  MAX_PAYLOAD,
  MAX_REPLAYS,
  originalDestination,
  parseDestination,
  refusedAttempts,
  relayRuleset,
  runDialer,
  type Frame,
} from './relay.js';

// Real lines of /proc/net/nf_conntrack, read in a gateway container on this host (kernel 6.18)
// after the agent (10.201.0.2) dialled 93.184.216.34:443 and 8.8.8.8:53, and 127.0.0.1:15001 directly.
const CONNTRACK = [
  'ipv4     2 tcp      6 432000 ESTABLISHED src=10.201.0.2 dst=93.184.216.34 sport=40030 dport=443 src=127.0.0.1 dst=10.201.0.2 sport=15001 dport=40030 [ASSURED] mark=0 zone=0 use=2',
  'ipv4     2 tcp      6 432000 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=42168 dport=15001 src=127.0.0.1 dst=127.0.0.1 sport=15001 dport=42168 [ASSURED] mark=0 zone=0 use=2',
  'ipv4     2 udp      17 30 src=10.201.0.2 dst=8.8.8.8 sport=58588 dport=53 [UNREPLIED] src=127.0.0.1 dst=10.201.0.2 sport=15001 dport=58588 mark=0 zone=0 use=2',
].join('\n');

// `nft -j list set inet aegis blocked_dst4` in the gateway image (no /etc/protocols: numbers) and on the host (names).
const SET_IN_IMAGE =
  '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "blocked_dst4", "table": "aegis", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 10, "size": 1024, "elem": [{"elem": {"val": {"concat": ["198.51.100.66", 6, 22]}, "counter": {"packets": 1, "bytes": 60}}}], "stmt": [{"counter": null}]}}]}';
const SET_ON_HOST = SET_IN_IMAGE.replace('"198.51.100.66", 6, 22', '"198.51.100.66", "tcp", 22');

describe('relay frames', () => {
  it('round-trips frames split at any byte', () => {
    const bytes = Buffer.concat([
      encodeFrame(FRAME.openTcp, 7, Buffer.from('{"a":"1.2.3.4","p":80}')),
      encodeFrame(FRAME.data, 7, Buffer.from('hello')),
      encodeFrame(FRAME.end, 7),
    ]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const r = new FrameReader();
      const frames = [...r.push(bytes.subarray(0, cut)), ...r.push(bytes.subarray(cut))];
      assert.deepEqual(
        frames.map((f) => [f.type, f.id, f.payload.toString()]),
        [
          [FRAME.openTcp, 7, '{"a":"1.2.3.4","p":80}'],
          [FRAME.data, 7, 'hello'],
          [FRAME.end, 7, ''],
        ],
      );
    }
  });
  it('when a frame has an unknown type or an oversized payload: throws (hostile stream)', () => {
    const bad = encodeFrame(FRAME.data, 1);
    bad.writeUInt8(99, 0);
    assert.throws(() => new FrameReader().push(bad), /unknown frame type 99/);
    const big = encodeFrame(FRAME.data, 1);
    big.writeUInt32BE(MAX_PAYLOAD + 1, 5);
    assert.throws(() => new FrameReader().push(big), /frame of/);
  });
  it('a destination is an IPv4 address and a port, nothing else', () => {
    assert.deepEqual(parseDestination(Buffer.from('{"a":"10.201.0.1","p":3128}')), { a: '10.201.0.1', p: 3128 });
    for (const bad of [
      '{"a":"attacker.com","p":80}',
      '{"a":"::1","p":80}',
      '{"a":"1.2.3.4","p":0}',
      '{"a":"1.2.3.4","p":70000}',
      'not json',
    ])
      assert.equal(parseDestination(Buffer.from(bad)), null, bad);
  });
});

describe('original destination from conntrack', () => {
  it('finds the address and port the agent dialled (TCP and UDP)', () => {
    const l = { localAddress: '127.0.0.1', localPort: 15001, remoteAddress: '10.201.0.2' };
    assert.deepEqual(originalDestination(CONNTRACK, 'tcp', { ...l, remotePort: 40030 }), { a: '93.184.216.34', p: 443 });
    assert.deepEqual(originalDestination(CONNTRACK, 'udp', { ...l, remotePort: 58588 }), { a: '8.8.8.8', p: 53 });
    assert.equal(originalDestination(CONNTRACK, 'udp', { ...l, remotePort: 40030 }), null, 'the protocol must match');
  });
  it('when the relay was dialled directly (no redirect): null, refused', () => {
    assert.equal(
      originalDestination(CONNTRACK, 'tcp', { localAddress: '127.0.0.1', localPort: 15001, remoteAddress: '127.0.0.1', remotePort: 42168 }),
      null,
    );
  });
});

describe('refused attempts', () => {
  it('reads blocked_dst4 with protocols by number (the image) or by name (the host)', () => {
    for (const text of [SET_IN_IMAGE, SET_ON_HOST])
      assert.deepEqual(refusedAttempts(text), [{ t: 'tcp', a: '198.51.100.66', p: 22, n: 1 }]);
  });
  it('when the text is not nft JSON: none', () => {
    assert.deepEqual(refusedAttempts('{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["x", "tcp", 22]}}}]}}]}'), []);
    assert.deepEqual(refusedAttempts('garbage'), []);
  });
});

describe('relay ruleset', () => {
  const inner = 'table inet aegis {\n  chain output {\n    type filter hook output priority filter; policy drop;\n    jump blocked\n  }\n}';
  it("moves the sandbox table's output chain before nat, and lets the agent out only redirected or on loopback", () => {
    const r = relayRuleset(101000, '10.201.0.2', inner);
    assert.match(r, /type filter hook output priority -150; policy drop;/);
    assert.doesNotMatch(r, /priority filter;/);
    assert.match(r, /meta skuid 101000 ip daddr != \{ 127\.0\.0\.0\/8, 10\.201\.0\.2 \} meta l4proto tcp redirect to :15001;/);
    assert.match(r, /meta skuid 101000 ct status dnat accept;\n.*meta skuid 101000 oif "lo" accept;\n.*meta skuid 101000 counter drop;/);
  });
  it('when the sandbox table has no output chain: throws (fail secure)', () => {
    assert.throws(() => relayRuleset(101000, '10.201.0.2', 'table inet aegis { }'), /no output chain/);
  });
});

describe('dialer', () => {
  it('opens the announced flow, carries bytes both ways and half-closes', async () => {
    const server = createServer({ allowHalfOpen: true }, (s) => {
      let got = '';
      s.on('data', (b: Buffer) => void (got += b.toString()));
      s.on('end', () => s.end(`echo:${got}`));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const input = new PassThrough();
    const output = new PassThrough();
    const reader = new FrameReader();
    const frames: Frame[] = [];
    const closed = new Promise<void>((resolve) =>
      output.on('data', (b: Buffer) => {
        frames.push(...reader.push(b));
        if (frames.some((f) => f.type === FRAME.close)) resolve();
      }),
    );
    const done = runDialer({ input, output });
    input.write(encodeFrame(FRAME.openTcp, 3, Buffer.from(JSON.stringify({ a: '127.0.0.1', p: port }))));
    input.write(encodeFrame(FRAME.data, 3, Buffer.from('ping')));
    input.write(encodeFrame(FRAME.end, 3));
    await closed;
    input.end();
    await done;
    server.close();
    assert.equal(Buffer.concat(frames.filter((f) => f.type === FRAME.data && f.id === 3).map((f) => f.payload)).toString(), 'echo:ping');
    assert.deepEqual(
      frames.filter((f) => f.type !== FRAME.data).map((f) => [f.type, f.id]),
      [
        [FRAME.end, 3],
        [FRAME.close, 3],
      ],
    );
  });
  it('when the destination refuses: the flow is closed (the agent gets a reset)', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const input = new PassThrough();
    const output = new PassThrough();
    const reader = new FrameReader();
    const closed = new Promise<Frame>((resolve) =>
      output.on('data', (b: Buffer) => {
        const f = reader.push(b).find((x) => x.type === FRAME.close);
        if (f) resolve(f);
      }),
    );
    const done = runDialer({ input, output });
    input.write(encodeFrame(FRAME.openTcp, 9, Buffer.from(JSON.stringify({ a: '127.0.0.1', p: port }))));
    assert.equal((await closed).id, 9);
    input.end();
    await done;
  });
  it('when the agent has MAX_FLOWS flows open: a new one is closed at once (regression: unbounded sockets on the host)', async () => {
    const server = createServer(() => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const input = new PassThrough();
    const output = new PassThrough();
    const reader = new FrameReader();
    const closed: number[] = [];
    output.on('data', (b: Buffer) =>
      closed.push(
        ...reader
          .push(b)
          .filter((f) => f.type === FRAME.close)
          .map((f) => f.id),
      ),
    );
    const done = runDialer({ input, output });
    const open = Buffer.from(JSON.stringify({ a: '127.0.0.1', p: 9 }));
    for (let id = 1; id <= MAX_FLOWS; id++) input.write(encodeFrame(FRAME.openUdp, id, open));
    input.write(encodeFrame(FRAME.openTcp, MAX_FLOWS + 1, Buffer.from(JSON.stringify({ a: '127.0.0.1', p: port }))));
    for (let i = 0; i < 100 && !closed.includes(MAX_FLOWS + 1); i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(closed, [MAX_FLOWS + 1]);
    input.end();
    await done;
    server.close();
  });
  it('a flow whose frames the other end does not take is paused: the dialer buffers a bounded amount (regression: 64 MiB queued in memory)', async (t) => {
    const TOTAL = 64 * 1024 * 1024;
    const BOUND = 4 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    // A real upstream that sends 64 MiB as fast as the dialer reads it.
    const server = createServer((s) => {
      let sent = 0;
      const more = (): void => {
        while (sent < TOTAL) {
          sent += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', more);
        }
        s.end();
      };
      s.on('error', () => undefined);
      more();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const input = new PassThrough();
    // The frame output is never read while we look (the agent does not read its download).
    const output = new PassThrough();
    const buffered = (): number => output.writableLength + output.readableLength;
    const done = runDialer({ input, output });
    t.after(() => {
      input.end();
      server.close();
    });
    input.write(encodeFrame(FRAME.openTcp, 5, Buffer.from(JSON.stringify({ a: '127.0.0.1', p: port }))));
    let most = 0;
    for (let i = 0; i < 60 && most <= BOUND; i++) {
      await new Promise((r) => setTimeout(r, 25));
      most = Math.max(most, buffered());
    }
    assert.ok(most > 0, 'the flow carried nothing');
    assert.ok(most <= BOUND, `the dialer buffered ${most} bytes for a flow nobody reads`);
    // Once read, the flow resumes and every byte arrives.
    const reader = new FrameReader();
    let got = 0;
    await new Promise<void>((resolve) =>
      output.on('data', (b: Buffer) => {
        for (const f of reader.push(b)) {
          if (f.type === FRAME.data && f.id === 5) got += f.payload.length;
          if (f.type === FRAME.end && f.id === 5) resolve();
        }
      }),
    );
    assert.equal(got, TOTAL);
    input.end();
    await done;
  });
  it('keeps at most MAX_REPLAYS replays in flight: the excess is dropped and counted (regression: unbounded replays)', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const reader = new FrameReader();
    const flushed = new Promise<void>((resolve) =>
      output.on('data', (b: Buffer) => {
        if (reader.push(b).some((f) => f.type === FRAME.flush)) resolve();
      }),
    );
    const done = runDialer({ input, output });
    const frames = 6;
    const replay = encodeFrame(FRAME.replay, 0, Buffer.from(JSON.stringify({ t: 'udp', a: '127.0.0.1', p: 9, n: 16 })));
    // One chunk: every attempt is asked for before any can end.
    input.write(Buffer.concat([...Array.from({ length: frames }, () => replay), encodeFrame(FRAME.flush, 0)]));
    await flushed;
    input.end();
    assert.deepEqual(await done, { replaysDropped: frames * 16 - MAX_REPLAYS });
  });
  it('answers a flush once the replays before it were made', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const reader = new FrameReader();
    const flushed = new Promise<void>((resolve) =>
      output.on('data', (b: Buffer) => {
        if (reader.push(b).some((f) => f.type === FRAME.flush)) resolve();
      }),
    );
    const done = runDialer({ input, output });
    input.write(encodeFrame(FRAME.replay, 0, Buffer.from(JSON.stringify({ t: 'udp', a: '127.0.0.1', p: 9, n: 2 }))));
    input.write(encodeFrame(FRAME.flush, 0));
    await flushed;
    input.end();
    await done;
  });
});

/**
 * The gateway relay of the Docker backend's `gateway-container` network mode: two ends of one
 * pipe, joined by a byte stream that needs nothing but the engine's API (the gateway
 * container's attached stdin/stdout), so it works wherever the engine runs (a local engine, or
 * Docker Desktop's VM).
 *
 * - `relay` runs as the gateway container's init (root, NET_ADMIN only, no network but its own
 *   namespace). It makes that namespace (a veth pair whose far end leads nowhere, a default
 *   route) and nftables rules that send every TCP and UDP flow of the agent's uid (`meta skuid`:
 *   the agent joins this namespace with `NetworkMode: container:<gateway>` and holds no
 *   capability, so it cannot change them) to its one listener, and drop everything else the
 *   agent sends (ICMP, IPv6, other protocols) except on loopback. For each flow it reads the
 *   original destination from the namespace's connection table and opens it at the other end.
 * - `dial` runs on AEGIS's host inside the run's sandbox network namespace (the very namespace
 *   crun's agent gets, made by src/gateway), as the agent's uid, with no capability. It opens
 *   each flow exactly as the agent asked: so the gateway's nftables, listeners, decisions, DNS
 *   interception, audit events and blocked-packet counters apply unchanged. ONE gateway: the
 *   relay decides nothing.
 *
 * This file imports only `node:*` modules and src/host/exec.js: it is copied into the gateway
 * image (engine.ts, `gatewayRootfs`) with relay-main.js.
 *
 * Frames (both directions): type (1 byte), flow id (u32 BE), payload length (u32 BE), payload.
 */
import { readFileSync } from 'node:fs';
import { createServer, isIP, isIPv4, Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Readable, Writable } from 'node:stream';

export const FRAME = {
  /** relay -> dial: the gateway container's namespace is set up and listening (no flow). */
  ready: 1,
  /** relay -> dial: a TCP flow to the payload's `{"a": address, "p": port}`. */
  openTcp: 2,
  /** relay -> dial: a UDP flow (the agent's source address and port) to the payload's destination. */
  openUdp: 3,
  /** either way: bytes of a TCP flow, or one datagram of a UDP flow. */
  data: 4,
  /** either way: the sender's half of a TCP flow is closed (FIN). */
  end: 5,
  /** either way: the flow is gone (reset, error, or closed both ways). */
  close: 6,
  /**
   * relay -> dial: attempts the gateway container's copy of the sandbox table refused, to be made
   * again in the sandbox namespace (refused and counted there too: `net.blocked`), payload
   * `{"t": "tcp"|"udp", "a": address, "p": port, "n": count}`.
   */
  replay: 7,
  /** AEGIS -> relay: replay what is counted now; relay -> dial: done; dial -> AEGIS: replayed. */
  flush: 8,
} as const;

const HEADER = 9;
/** No frame is larger (a TCP chunk is split; a datagram is at most 64 KiB). */
export const MAX_PAYLOAD = 256 * 1024;
/** The relay's listener (TCP and UDP) on the gateway container's loopback. */
export const RELAY_PORT = 15001;
/** A UDP flow without traffic for this long is closed at both ends. */
const UDP_IDLE_MS = 60_000;
/**
 * Open flows at most, per run (the dialer refuses more: closed at once). An agent under crun is
 * bounded by its own file-descriptor limit; the dialer's sockets are the agent's made on its
 * behalf, so they are bounded too.
 */
export const MAX_FLOWS = 1024;
/**
 * Replayed attempts in flight at most in the dialer (each a socket for up to 2 s); more are
 * dropped and counted (the attempt was refused and counted in the gateway container already).
 */
export const MAX_REPLAYS = 64;
/** Pause the input when one socket has this much unsent (bounded memory at both ends). */
const HIGH_WATER = 1 << 20;

export interface Frame {
  readonly type: number;
  readonly id: number;
  readonly payload: Buffer;
}

export function encodeFrame(type: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(HEADER);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(id >>> 0, 1);
  h.writeUInt32BE(payload.length, 5);
  return Buffer.concat([h, payload]);
}

/** Splits a byte stream into frames. Hostile input: an unknown type or an oversized payload throws. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Frame[] = [];
    while (this.buf.length >= HEADER) {
      const type = this.buf.readUInt8(0);
      const len = this.buf.readUInt32BE(5);
      if (type < FRAME.ready || type > FRAME.flush) throw new Error(`relay: unknown frame type ${type}`);
      if (len > MAX_PAYLOAD) throw new Error(`relay: frame of ${len} bytes`);
      if (this.buf.length < HEADER + len) break;
      out.push({ type, id: this.buf.readUInt32BE(1), payload: this.buf.subarray(HEADER, HEADER + len) });
      this.buf = this.buf.subarray(HEADER + len);
    }
    return out;
  }
}

export interface Destination {
  readonly a: string;
  readonly p: number;
}

/** The destination of an open frame, or null (hostile input: only an IPv4 address and a port). */
export function parseDestination(payload: Buffer): Destination | null {
  try {
    const v = JSON.parse(payload.toString('utf8')) as { a?: unknown; p?: unknown };
    return typeof v.a === 'string' && isIPv4(v.a) && Number.isInteger(v.p) && (v.p as number) >= 1 && (v.p as number) <= 65535
      ? { a: v.a, p: v.p as number }
      : null;
  } catch {
    return null;
  }
}

/**
 * The original destination of a flow redirected to the relay (pure): in `/proc/net/nf_conntrack`
 * text, the IPv4 entry of `proto` whose reply direction is `local -> remote` (the relay's
 * listener to the agent's socket) and whose original destination was rewritten (a connection
 * made to the relay directly has none: null, refused).
 */
export function originalDestination(
  text: string,
  proto: 'tcp' | 'udp',
  c: { localAddress: string; localPort: number; remoteAddress: string; remotePort: number },
): Destination | null {
  const reply = ` src=${c.localAddress} dst=${c.remoteAddress} sport=${c.localPort} dport=${c.remotePort} `;
  for (const line of text.split('\n')) {
    if (!line.startsWith('ipv4 ') || !line.includes(` ${proto} `) || !line.includes(reply)) continue;
    const m = / src=([0-9.]+) dst=([0-9.]+) sport=([0-9]+) dport=([0-9]+) /.exec(line);
    if (!m || m[1] !== c.remoteAddress || Number(m[3]) !== c.remotePort) continue;
    const port = Number(m[4]);
    if (m[2] === c.localAddress && port === c.localPort) return null;
    return isIPv4(m[2]!) && port >= 1 && port <= 65535 ? { a: m[2]!, p: port } : null;
  }
  return null;
}

/**
 * The gateway container's nftables ruleset (pure). `sandbox` is the container's own address.
 * `inner` is the sandbox namespace's own table (`inet aegis`, plan.ts), loaded first: its output
 * chain (moved before nat) decides with the agent's original destination, so what it refuses is
 * refused here at once as under crun (a reset, an ICMP error) and counted in its sets; what it
 * lets through is then redirected to the relay (nat, -100) and leaves only so (filter, 200).
 */
export function relayRuleset(agentUid: number, sandbox: string, inner = '', port: number = RELAY_PORT): string {
  // Every nat chain of a hook runs in the NAT core's slot (-100), whatever its own priority: the
  // sandbox table's output chain is moved before it, to see the destination the agent dialled.
  const hook = 'type filter hook output priority filter;';
  if (inner !== '' && !inner.includes(hook)) throw new Error('relay: the sandbox table has no output chain');
  return [
    inner.replace(hook, 'type filter hook output priority -150;'),
    'table inet aegis_relay {',
    '  chain nat_out {',
    '    type nat hook output priority -100; policy accept;',
    `    meta skuid ${agentUid} ip daddr != { 127.0.0.0/8, ${sandbox} } meta l4proto tcp redirect to :${port};`,
    `    meta skuid ${agentUid} ip daddr != { 127.0.0.0/8, ${sandbox} } meta l4proto udp redirect to :${port};`,
    '  }',
    // The agent's packets leave only redirected or on loopback; everything else is dropped.
    '  chain out {',
    '    type filter hook output priority 200; policy accept;',
    `    meta skuid ${agentUid} ct status dnat accept;`,
    `    meta skuid ${agentUid} oif "lo" accept;`,
    `    meta skuid ${agentUid} counter drop;`,
    '  }',
    '}',
  ].join('\n');
}

/** What a frame's bytes come from: a TCP socket of one flow (paused while the output is full). */
interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

/**
 * Writes frames to `out`. SECURITY (memory bound, per flow): when `out` is full (its write
 * returns false), the flow whose frame did not fit (`source`, that flow's socket) is paused until
 * `out` drains: what a peer does not read stays in the kernel's socket buffers and the sender's,
 * not in this process (a paused socket reads at most its stream's high-water mark more). The
 * control stream is never paused for it (another flow's frames, a close, a flush still pass).
 */
function frameWriter(out: Writable): (type: number, id: number, payload?: Buffer, source?: Pausable) => void {
  const paused = new Set<Pausable>();
  let waiting = false;
  const drained = (): void => {
    waiting = false;
    for (const s of paused) s.resume();
    paused.clear();
  };
  return (type, id, payload, source) => {
    let ok = true;
    if (payload !== undefined && payload.length > MAX_PAYLOAD) {
      for (let i = 0; i < payload.length; i += MAX_PAYLOAD)
        ok = out.write(encodeFrame(type, id, payload.subarray(i, i + MAX_PAYLOAD))) && ok;
    } else ok = out.write(encodeFrame(type, id, payload));
    if (!ok && source !== undefined) {
      source.pause();
      paused.add(source);
      if (!waiting) {
        waiting = true;
        out.once('drain', drained);
      }
    }
  };
}

/**
 * A datagram is dropped (UDP is lossy) rather than queued when `out` already holds this much:
 * a UDP socket cannot be paused.
 */
function outputFull(out: Writable): boolean {
  return out.writableLength > HIGH_WATER;
}

/**
 * Pauses `input` (the frames towards the sockets) while `sock` has more than HIGH_WATER unsent;
 * resumed when it drains or is gone (a socket closed while full never drains).
 */
function backpressure(sock: Socket, input: Readable): void {
  if (sock.writableLength > HIGH_WATER && !input.isPaused()) {
    input.pause();
    const resume = (): void => {
      sock.off('drain', resume);
      sock.off('close', resume);
      input.resume();
    };
    sock.once('drain', resume);
    sock.once('close', resume);
  }
}

export interface RelayOptions {
  readonly agentUid: number;
  /** The container's address (`a.b.c.d/len`) and its default gateway (the same as the sandbox namespace's). */
  readonly address: string;
  readonly gateway: string;
  /** The sandbox namespace's IPv6 address (`addr/len`), when it has one. */
  readonly address6?: string;
  /** The sandbox namespace's `inet aegis` table (nft list output), copied into the container. */
  readonly inner: string;
  readonly input: Readable;
  readonly output: Writable;
  /** Runs a command to completion and returns its stdout (nft -j list set). */
  readonly read?: (argv: readonly string[]) => Promise<string>;
  /** Runs a command to completion (ip, nft); rejects or returns a non-zero code on failure. */
  readonly run: (argv: readonly string[], input?: string) => Promise<number | null>;
  readonly conntrack?: () => string;
}

/** The gateway container's side: sets up the namespace, then relays until `input` ends. */
export async function runRelay(o: RelayOptions): Promise<void> {
  const sandbox = o.address.split('/')[0]!;
  const ip = (...args: string[]): readonly string[] => ['/usr/sbin/ip', ...args];
  // The rules first, then the links (as in the sandbox namespace: no packet leaves unfiltered).
  // The far end of the pair leads nowhere: the agent's only way out is the relay. The IPv6
  // address (the sandbox namespace's) is there only so that an IPv6 attempt leaves a packet for
  // the sandbox table to refuse and count, as under crun.
  const steps: (readonly string[])[] = [
    ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'aegis-void'),
    ['/usr/sbin/nft', '-f', '-'],
    ip('addr', 'add', o.address, 'dev', 'eth0'),
    ...(o.address6 !== undefined ? [ip('addr', 'add', o.address6, 'dev', 'eth0', 'nodad')] : []),
    ip('link', 'set', 'lo', 'up'),
    ip('link', 'set', 'eth0', 'up'),
    ip('link', 'set', 'aegis-void', 'up'),
    ip('route', 'add', 'default', 'via', o.gateway, 'dev', 'eth0', 'onlink'),
    ...(o.address6 !== undefined ? [ip('route', 'add', '::/0', 'dev', 'eth0')] : []),
  ];
  for (const s of steps) {
    const input = s[0] === '/usr/sbin/nft' ? relayRuleset(o.agentUid, sandbox, o.inner) : undefined;
    if ((await o.run(s, input)) !== 0) throw new Error(`relay: ${s.join(' ')} failed`);
  }
  const conntrack = o.conntrack ?? (() => readFileSync('/proc/net/nf_conntrack', 'utf8'));
  const send = frameWriter(o.output);
  const tcp = new Map<number, Socket>();
  const udp = new Map<number, { address: string; port: number; timer: NodeJS.Timeout }>();
  const udpByPeer = new Map<string, number>();
  let next = 1;
  let flushRequests = (): void => send(FRAME.flush, 0);

  const server = createServer({ allowHalfOpen: true }, (s) => {
    const dst = originalDestination(conntrack(), 'tcp', {
      localAddress: s.localAddress ?? '',
      localPort: s.localPort ?? 0,
      remoteAddress: s.remoteAddress ?? '',
      remotePort: s.remotePort ?? 0,
    });
    if (dst === null) return void s.resetAndDestroy();
    const id = next++;
    tcp.set(id, s);
    send(FRAME.openTcp, id, Buffer.from(JSON.stringify(dst)));
    s.on('data', (b: Buffer) => send(FRAME.data, id, b, s));
    s.on('end', () => send(FRAME.end, id));
    s.on('error', () => undefined);
    s.on('close', () => {
      if (tcp.delete(id)) send(FRAME.close, id);
    });
  });
  const dgram = createSocket('udp4');
  const closeUdp = (id: number, tell: boolean): void => {
    const f = udp.get(id);
    if (f === undefined) return;
    clearTimeout(f.timer);
    udp.delete(id);
    udpByPeer.delete(`${f.address}:${f.port}`);
    if (tell) send(FRAME.close, id);
  };
  const touch = (id: number): void => {
    const f = udp.get(id);
    if (f === undefined) return;
    clearTimeout(f.timer);
    f.timer = setTimeout(() => closeUdp(id, true), UDP_IDLE_MS);
  };
  dgram.on('message', (msg, rinfo) => {
    if (outputFull(o.output)) return;
    const key = `${rinfo.address}:${rinfo.port}`;
    let id = udpByPeer.get(key);
    if (id === undefined) {
      const dst = originalDestination(conntrack(), 'udp', {
        localAddress: '127.0.0.1',
        localPort: RELAY_PORT,
        remoteAddress: rinfo.address,
        remotePort: rinfo.port,
      });
      if (dst === null) return;
      id = next++;
      udp.set(id, { address: rinfo.address, port: rinfo.port, timer: setTimeout(() => undefined, 0) });
      udpByPeer.set(key, id);
      send(FRAME.openUdp, id, Buffer.from(JSON.stringify(dst)));
    }
    touch(id);
    send(FRAME.data, id, msg);
  });

  const reader = new FrameReader();
  o.input.on('data', (chunk: Buffer) => {
    for (const f of reader.push(chunk)) {
      if (f.type === FRAME.flush) {
        flushRequests();
        continue;
      }
      const s = tcp.get(f.id);
      if (s !== undefined) {
        if (f.type === FRAME.data) {
          s.write(f.payload);
          backpressure(s, o.input);
        } else if (f.type === FRAME.end) s.end();
        else if (f.type === FRAME.close) {
          tcp.delete(f.id);
          closeSocket(s);
        }
        continue;
      }
      const u = udp.get(f.id);
      if (u === undefined) continue;
      if (f.type === FRAME.data) {
        touch(f.id);
        dgram.send(f.payload, u.port, u.address);
      } else if (f.type === FRAME.close) closeUdp(f.id, false);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(RELAY_PORT, '127.0.0.1', () => {
      dgram.once('error', reject);
      dgram.bind(RELAY_PORT, '127.0.0.1', () => resolve());
    });
  });
  // Refused attempts, replayed in the sandbox namespace (polled, and on AEGIS's flush request).
  const seen = new Map<string, number>();
  const replay = async (): Promise<void> => {
    if (o.read === undefined) return;
    const list = (set: string): Promise<string> => o.read!(['/usr/sbin/nft', '-j', 'list', 'set', 'inet', 'aegis', set]).catch(() => '');
    for (const r of [...refusedAttempts(await list('blocked_dst4')), ...refusedAttempts(await list('blocked_dst6'))]) {
      const key = `${r.t} ${r.a} ${r.p}`;
      const n = r.n - (seen.get(key) ?? 0);
      seen.set(key, r.n);
      if (n > 0) send(FRAME.replay, 0, Buffer.from(JSON.stringify({ ...r, n: Math.min(n, 16) })));
    }
  };
  let polling = Promise.resolve();
  const poll = setInterval(() => void (polling = polling.then(replay)), 500);
  flushRequests = () => void (polling = polling.then(replay).then(() => send(FRAME.flush, 0)));
  send(FRAME.ready, 0);
  await new Promise<void>((resolve) => {
    o.input.once('end', resolve);
    o.input.once('close', resolve);
  });
  clearInterval(poll);
  server.close();
  dgram.close();
  for (const s of tcp.values()) s.destroy();
  for (const id of [...udp.keys()]) closeUdp(id, false);
}

export interface DialOptions {
  readonly input: Readable;
  readonly output: Writable;
  /** Called once the relay said it is ready. */
  readonly onReady?: () => void;
}

export interface DialStats {
  /** Replayed attempts dropped because MAX_REPLAYS were in flight. */
  readonly replaysDropped: number;
}

/**
 * The host's side, in the sandbox network namespace as the agent's uid: opens each flow the
 * relay announces, exactly to the address and port the agent dialled, until `input` ends.
 */
export async function runDialer(o: DialOptions): Promise<DialStats> {
  const send = frameWriter(o.output);
  const tcp = new Map<number, Socket>();
  const udp = new Map<number, UdpSocket>();
  const reader = new FrameReader();
  // A count, not a list: what is kept per replay ends with it.
  let replaysInFlight = 0;
  let replaysDropped = 0;
  const whenIdle: (() => void)[] = [];
  const replayDone = (): void => {
    if (--replaysInFlight === 0) for (const w of whenIdle.splice(0)) w();
  };
  const closeTcp = (id: number): void => {
    const s = tcp.get(id);
    if (s === undefined) return;
    tcp.delete(id);
    closeSocket(s);
  };
  o.input.on('data', (chunk: Buffer) => {
    let frames: Frame[];
    try {
      frames = reader.push(chunk);
    } catch {
      // Fail secure: a stream that is not frames ends every flow.
      for (const id of [...tcp.keys()]) closeTcp(id);
      for (const s of udp.values()) s.close();
      udp.clear();
      o.input.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type === FRAME.ready) {
        o.onReady?.();
      } else if (f.type === FRAME.replay) {
        const r = parseReplay(f.payload);
        for (let i = 0; r !== null && i < r.n; i++) {
          if (replaysInFlight >= MAX_REPLAYS) {
            replaysDropped++;
            continue;
          }
          replaysInFlight++;
          void replayAttempt(r).then(replayDone);
        }
      } else if (f.type === FRAME.flush) {
        if (replaysInFlight === 0) send(FRAME.flush, 0);
        else whenIdle.push(() => send(FRAME.flush, 0));
      } else if (f.type === FRAME.openTcp) {
        const dst = parseDestination(f.payload);
        if (dst === null || tcp.has(f.id) || tcp.size + udp.size >= MAX_FLOWS) {
          send(FRAME.close, f.id);
          continue;
        }
        const s = new Socket({ allowHalfOpen: true });
        tcp.set(f.id, s);
        s.on('data', (b: Buffer) => send(FRAME.data, f.id, b, s));
        s.on('end', () => send(FRAME.end, f.id));
        s.on('error', () => undefined);
        s.on('close', () => {
          if (tcp.delete(f.id)) send(FRAME.close, f.id);
        });
        s.connect(dst.p, dst.a);
      } else if (f.type === FRAME.openUdp) {
        const dst = parseDestination(f.payload);
        if (dst === null || udp.has(f.id) || tcp.size + udp.size >= MAX_FLOWS) {
          send(FRAME.close, f.id);
          continue;
        }
        const s = createSocket('udp4');
        udp.set(f.id, s);
        s.on('message', (msg) => void (outputFull(o.output) || send(FRAME.data, f.id, msg)));
        s.on('error', () => undefined);
        s.connect(dst.p, dst.a);
      } else if (f.type === FRAME.data) {
        const s = tcp.get(f.id);
        if (s !== undefined) {
          s.write(f.payload);
          backpressure(s, o.input);
        } else {
          const u = udp.get(f.id);
          // A datagram sent before connect() completed is queued by sending to the address itself.
          if (u !== undefined) sendUdp(u, f.payload);
        }
      } else if (f.type === FRAME.end) {
        tcp.get(f.id)?.end();
      } else if (f.type === FRAME.close) {
        closeTcp(f.id);
        const u = udp.get(f.id);
        if (u !== undefined) {
          udp.delete(f.id);
          u.close();
        }
      }
    }
  });
  await new Promise<void>((resolve) => {
    o.input.once('end', resolve);
    o.input.once('close', resolve);
  });
  for (const id of [...tcp.keys()]) closeTcp(id);
  for (const s of udp.values()) s.close();
  return { replaysDropped };
}

export interface RefusedAttempt {
  readonly t: 'tcp' | 'udp';
  readonly a: string;
  readonly p: number;
  readonly n: number;
}

/** The TCP/UDP destinations of `blocked_dst4`/`blocked_dst6` with their packet counts, from `nft -j list set` (pure; bad input: none). */
export function refusedAttempts(json: string): RefusedAttempt[] {
  const out: RefusedAttempt[] = [];
  try {
    const v = JSON.parse(json) as { nftables?: { set?: { elem?: unknown[] } }[] };
    for (const item of v.nftables ?? [])
      for (const e of item.set?.elem ?? []) {
        const el = (e as { elem?: { val?: { concat?: unknown[] }; counter?: { packets?: unknown } } }).elem;
        const [a, proto, p] = el?.val?.concat ?? [];
        // By name, or by number where nft has no /etc/protocols (the gateway image).
        const t = proto === 6 ? 'tcp' : proto === 17 ? 'udp' : proto;
        const n = el?.counter?.packets;
        if (typeof a === 'string' && isIP(a) !== 0 && (t === 'tcp' || t === 'udp') && Number.isInteger(p) && Number.isInteger(n))
          out.push({ t, a, p: p as number, n: n as number });
      }
  } catch {
    return [];
  }
  return out;
}

function parseReplay(payload: Buffer): RefusedAttempt | null {
  try {
    const v = JSON.parse(payload.toString('utf8')) as { t?: unknown; a?: unknown; p?: unknown; n?: unknown };
    const [r] = refusedAttempts(
      JSON.stringify({ nftables: [{ set: { elem: [{ elem: { val: { concat: [v.a, v.t, v.p] }, counter: { packets: v.n } } }] } }] }),
    );
    return r !== undefined && r.p >= 1 && r.p <= 65535 && r.n >= 1 && r.n <= 16 ? r : null;
  } catch {
    return null;
  }
}

/** One attempt to `r`'s destination from the sandbox namespace (refused there: a reset or an ICMP error). */
function replayAttempt(r: RefusedAttempt): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, 2000);
    if (r.t === 'tcp') {
      const s = new Socket();
      s.once('error', () => (s.destroy(), done()));
      s.once('connect', () => (s.destroy(), done()));
      s.connect(r.p, r.a);
    } else {
      const s = createSocket(isIPv4(r.a) ? 'udp4' : 'udp6');
      s.once('error', () => (s.close(), done()));
      s.send(Buffer.alloc(1), r.p, r.a, () => (s.close(), done()));
    }
  });
}

/** The other end is gone: after a clean end both ways what is queued is still delivered; otherwise a reset. */
function closeSocket(s: Socket): void {
  if (s.writableEnded) s.destroySoon();
  else s.resetAndDestroy();
}

/** Sends on a UDP socket once it is connected (connect() is asynchronous in Node). */
function sendUdp(s: UdpSocket, payload: Buffer): void {
  try {
    s.remoteAddress();
    s.send(payload, () => undefined);
  } catch {
    s.once('connect', () => s.send(payload, () => undefined));
  }
}

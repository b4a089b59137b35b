/**
 * Opening the gateway's own connection to an allowed destination. The agent never chooses
 * the address: names are resolved here, through the configured upstream resolver, and every
 * address is checked against the DNS-rebinding guard before the gateway connects.
 */
import { connect, type Socket } from 'node:net';
import { classifyHost } from '../../policy/host.js';
import { gatewayDeny, upstreamFailed, verdictOf, type Verdict } from '../audit/events.js';
import type { Session } from '../session.js';

const CONNECT_TIMEOUT_MS = 10_000;

export type Target = { readonly ok: true; readonly address: string } | { readonly ok: false; readonly verdict: Verdict };

/** The address to connect to for an already-allowed `host`, or the reason there is none. */
export async function resolveTarget(session: Session, host: string): Promise<Target> {
  // The same classification the policy decided on: an address in any spelling (`2130706433`,
  // `[::ffff:a.b.c.d]`) is connected to as the address it is, never sent to DNS as a name.
  const cls = classifyHost(host);
  if (cls.kind === 'invalid') return { ok: false, verdict: gatewayDeny('gateway.malformed', cls.why) };
  if (cls.kind === 'ip') {
    // Only reachable when a CIDR rule allowed this literal; the guard still applies.
    const d = session.matcher.decideResolvedAddress(cls.ip.address);
    return d.allow ? { ok: true, address: cls.ip.address } : { ok: false, verdict: verdictOf(d) };
  }
  host = cls.name;
  let addresses: readonly string[];
  try {
    const res = await session.resolver.resolve(host, 'A');
    addresses = res.addresses;
  } catch (err) {
    return { ok: false, verdict: upstreamFailed(err instanceof Error ? err.message : String(err)) };
  }
  if (addresses.length === 0) return { ok: false, verdict: upstreamFailed(`${host} has no IPv4 address`) };
  for (const a of addresses) {
    const d = session.matcher.decideResolvedAddress(a);
    if (!d.allow) return { ok: false, verdict: verdictOf(d) };
  }
  return { ok: true, address: addresses[0]! };
}

/**
 * How the gateway reads an upstream (the bulk direction of a download). Node's default is a new
 * 64 KiB Buffer per read(2); for 100 MB that is ~1600 fresh buffers for the allocator and GC,
 * which cost about half the gateway's CPU (measured: 150 -> 70 ms per 100 MB). Instead each
 * upstream reads into buffers of its own (`onread`):
 * - a small buffer (SMALL_READ_BYTES) while reads are small: a small read is copied out and
 *   the buffer read into again, so an idle or chatty connection holds 64 KiB, as before;
 * - once a read fills it, large buffers (LARGE_READ_BYTES) from a pool shared by all
 *   connections: a full read is handed on without a copy, and the buffer goes back to the pool
 *   when the agent's socket has taken the bytes. Memory: 64 KiB per connection, plus the large
 *   buffers in flight (backpressure pauses the upstream once TUNNEL_QUEUE_BYTES are queued
 *   towards the agent, so at most that plus one read per downloading connection) and at most
 *   POOL_MAX idle ones.
 * Large reads are 1 MiB (issue 18): the gateway's CPU per 100 MB fell from 66-77 ms to 52-56 ms
 * (fewer read/write system calls and wake-ups; same bench, run alternately, docs/gateway.md).
 */
export const SMALL_READ_BYTES = 64 * 1024;
export const LARGE_READ_BYTES = 1024 * 1024;
/** Reads smaller than this are copied out, so their buffer is read into again. */
const COPY_BELOW = 16 * 1024;
/** Idle large buffers kept for the next downloads (8 MiB at most). */
const POOL_MAX = 8;
const pool: Buffer[] = [];

/** Where an upstream's bytes go: `done` must be called once `chunk` is no longer needed (written). */
export type UpstreamSink = (chunk: Buffer, done: () => void) => void;

/**
 * The gateway's connection to an upstream. Its bytes go to the sink given to `attach()`; what
 * arrives before (a server that speaks first) is held, and reading paused, until then.
 */
export class Upstream {
  readonly socket: Socket;
  private small: Buffer | null = null;
  /** The buffer the next read goes into. */
  private next: Buffer | null = null;
  private sink: UpstreamSink | null = null;
  private held: Array<[Buffer, () => void]> = [];

  constructor(address: string, port: number) {
    this.socket = connect({
      host: address,
      port,
      noDelay: true,
      onread: { buffer: () => this.nextBuffer(), callback: (n: number, b: Uint8Array) => this.onRead(n, b as Buffer) },
    });
  }

  private nextBuffer(): Buffer {
    this.next ??= this.small ??= Buffer.allocUnsafe(SMALL_READ_BYTES);
    return this.next;
  }

  private onRead(n: number, b: Buffer): boolean {
    let chunk: Buffer;
    let done = noop;
    if (n < COPY_BELOW) {
      chunk = Buffer.from(b.subarray(0, n)); // copied: `b` is read into again
      if (b !== this.small) {
        releaseLarge(b);
        this.next = null; // back to the small buffer
      }
    } else {
      chunk = b.subarray(0, n); // handed on whole
      if (b === this.small)
        this.small = null; // the next small one is new
      else done = () => releaseLarge(b);
      // A full read means more is waiting: read large from now on.
      this.next = n === b.length || b.length === LARGE_READ_BYTES ? (pool.pop() ?? Buffer.allocUnsafe(LARGE_READ_BYTES)) : null;
    }
    if (this.sink) {
      this.sink(chunk, done);
    } else {
      this.held.push([chunk, done]);
      this.socket.pause();
    }
    return true;
  }

  /** Send the upstream's bytes to `sink` from now on (held bytes first). Reading stays paused; the caller resumes. */
  attach(sink: UpstreamSink): void {
    this.sink = sink;
    const held = this.held;
    this.held = [];
    for (const [c, done] of held) sink(c, done);
  }
}

function releaseLarge(b: Buffer): void {
  if (pool.length < POOL_MAX) pool.push(b);
}

const noop = (): void => undefined;

/** Connect to `address:port`; rejects on error or timeout. */
export function connectTo(address: string, port: number): Promise<Upstream> {
  return new Promise((resolve, reject) => {
    const u = new Upstream(address, port);
    const s = u.socket;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${address}:${port} timed out`));
    }, CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      s.off('error', onError);
      resolve(u);
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    s.once('error', onError);
  });
}

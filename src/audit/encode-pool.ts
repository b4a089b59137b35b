/**
 * Runs encodeBatch in worker threads, so that encryption and hashing of one batch overlap
 * validation of new events and the write + fsync of the previous batch on the main thread.
 * A batch is split across the workers. With `inline` (tests with injected randomness) it runs
 * on the calling thread instead.
 */
import { randomFillSync } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type ArenaKeys, type BatchArena, type EncodedBatch, encodeArena } from './entry-batch.js';
import { AuditError } from './errors.js';
import type { RandomFill } from './event-id.js';

/** A message to encode-worker.ts. */
export interface Request {
  readonly id: number;
  readonly buf: Uint8Array;
  readonly ends: Uint32Array;
  readonly count: number;
  readonly start: number;
  readonly origin: string;
  readonly general: string;
  readonly bySubject: Array<[number, string]>;
  readonly keys: Array<[string, Uint8Array]>;
}

type Reply = { id: number; error?: string; count: number; buf: Uint8Array; bounds: Uint32Array; hashes: Uint8Array };
type Waiter = { resolve(r: EncodedBatch): void; reject(e: unknown): void };

/** Below this many events a batch is not worth splitting across workers. */
const MIN_SPLIT = 512;
/**
 * Below this many events a batch is encoded on the calling thread: a worker round trip costs more
 * latency than encoding a few events (about 10 µs each), and at low load latency is what matters.
 */
const MIN_WORKER = 64;

class EncodeWorker {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly waiting = new Map<number, Waiter>();

  /** Encodes events [from, to) of the arena as entries start, start+1, ... */
  encode(arena: BatchArena, from: number, to: number, start: number, origin: string, k: ArenaKeys): Promise<EncodedBatch> {
    const w = this.ensure();
    const id = this.nextId++;
    return new Promise<EncodedBatch>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.ref();
      // Bytes, not an object graph: one copy of the arena's part, which the worker reads in place.
      const part = arena.slice(from, to);
      const bySubject: Array<[number, string]> = [];
      if (k.bySubject !== undefined) for (const [i, keyId] of k.bySubject) if (i >= from && i < to) bySubject.push([i - from, keyId]);
      const msg: Request = {
        id,
        buf: part.buf,
        ends: part.ends,
        count: part.count,
        start,
        origin,
        general: k.general,
        bySubject,
        keys: [...k.keys],
      };
      w.postMessage(msg, [part.buf.buffer as ArrayBuffer, part.ends.buffer as ArrayBuffer]);
    });
  }

  /** Starts the thread now rather than on the first batch. */
  warm(): void {
    this.ensure();
  }

  private ensure(): Worker {
    if (this.worker !== undefined) return this.worker;
    // No inherited Node options: some are invalid in workers (--input-type, V8 heap flags) and
    // would make the worker fail to start (regression: `node --input-type=module -e` writers).
    const w = new Worker(new URL('./encode-worker.js', import.meta.url), { execArgv: [] });
    w.on('message', (m: Reply) => {
      const p = this.waiting.get(m.id);
      if (p === undefined) return;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) w.unref();
      if (m.error !== undefined) p.reject(new AuditError('audit.store_io', `entry encoder failed: ${m.error}`));
      else p.resolve({ count: m.count, buf: m.buf, bounds: m.bounds, hashes: m.hashes });
    });
    const fail = (err: unknown): void => {
      for (const p of this.waiting.values()) p.reject(new AuditError('audit.store_io', 'entry encoder thread died', { cause: err }));
      this.waiting.clear();
      this.worker = undefined;
    };
    w.on('error', fail);
    w.on('exit', (code) => {
      if (this.waiting.size > 0) fail(new Error(`exit ${code}`));
      this.worker = undefined;
    });
    w.unref();
    this.worker = w;
    return w;
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w !== undefined) await w.terminate();
  }
}

/** Concatenates encoded parts (in order) into one batch. */
function join(parts: readonly EncodedBatch[]): EncodedBatch {
  if (parts.length === 1) return parts[0] as EncodedBatch;
  const count = parts.reduce((s, p) => s + p.count, 0);
  const buf = Buffer.concat(parts.map((p) => p.buf));
  const hashes = Buffer.concat(parts.map((p) => p.hashes));
  const bounds = new Uint32Array(2 * count);
  let i = 0;
  let base = 0;
  for (const p of parts) {
    for (let k = 0; k < 2 * p.count; k++) bounds[i++] = base + (p.bounds[k] as number);
    base += p.buf.length;
  }
  return { count, buf, bounds, hashes };
}

export class EncodePool {
  private readonly workers: EncodeWorker[];

  constructor(
    private readonly inline: { random: RandomFill } | undefined,
    // At most 2 encoder threads, 2 also on 2 cores: encoding is about 60% of the CPU per event and
    // the main thread's share leaves room, so two threads keep both cores busy under load where one
    // was the bottleneck (issue 18, docs/audit.md); a batch is split between them.
    workers = Math.min(2, Math.max(1, availableParallelism())),
  ) {
    this.workers = inline === undefined ? Array.from({ length: Math.max(1, workers) }, () => new EncodeWorker()) : [];
  }

  private fallback = false;
  private allWarm = false;

  /** Starts the encoder threads ahead of the first batch (they do not keep the process alive). */
  /**
   * Starts the first encoder thread ahead of the first batch; the others start with the first
   * batch that goes to a thread (load), so that a process appending a few events (every
   * `aegis run`) boots one thread, as before there were two.
   */
  warm(all = false): void {
    try {
      for (const w of all ? this.workers : this.workers.slice(0, 1)) w.warm();
    } catch {
      this.fallback = true;
    }
  }

  /** Encodes the arena's events as entries start, start+1, ... */
  async encode(arena: BatchArena, start: number, origin: string, k: ArenaKeys): Promise<EncodedBatch> {
    const n = arena.count;
    if (this.inline !== undefined || this.fallback || n < MIN_WORKER) {
      const nonces = new Uint8Array(12 * n);
      (this.inline?.random ?? ((b: Uint8Array) => void randomFillSync(b)))(nonces);
      return encodeArena(arena.view(), start, origin, k, nonces);
    }
    if (!this.allWarm) {
      this.allWarm = true;
      this.warm(true);
    }
    const parts = n < MIN_SPLIT ? 1 : this.workers.length;
    const per = Math.ceil(n / parts);
    try {
      const encoded = await Promise.all(
        Array.from({ length: parts }, (_, w) => {
          const from = Math.min(n, w * per);
          const to = Math.min(n, from + per);
          return (this.workers[w] as EncodeWorker).encode(arena, from, to, start + from, origin, k);
        }),
      );
      return join(encoded);
    } catch (err) {
      if (err instanceof AuditError) throw err;
      // The worker could not start (restricted environment): encode on this thread from now on.
      process.emitWarning(`audit: encoder thread unavailable, encoding inline: ${err instanceof Error ? err.message : String(err)}`);
      this.fallback = true;
      return this.encode(arena, start, origin, k);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

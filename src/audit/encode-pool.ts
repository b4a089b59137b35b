/**
 * Runs encodeBatch in worker threads, so that encryption and hashing of one batch overlap
 * validation of new events and the write + fsync of the previous batch on the main thread.
 * A batch is split across the workers. With `inline` (tests with injected randomness) it runs
 * on the calling thread instead.
 */
import { randomFillSync } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type BatchItem, type EncodedBatch, encodeBatch } from './entry-batch.js';
import { AuditError } from './errors.js';
import type { RandomFill } from './event-id.js';

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

  encode(items: BatchItem[], start: number, origin: string, keys: Map<string, Uint8Array>): Promise<EncodedBatch> {
    const w = this.ensure();
    const id = this.nextId++;
    return new Promise<EncodedBatch>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.ref();
      // One string instead of an object graph: far cheaper to copy to the worker. The parts are
      // JSON text (JSON.stringify escapes U+0000) and key ids, so NUL cannot occur inside them.
      const parts: string[] = new Array<string>(4 * items.length);
      for (let i = 0; i < items.length; i++) {
        const it = items[i] as BatchItem;
        parts[4 * i] = it.pre;
        parts[4 * i + 1] = it.post;
        parts[4 * i + 2] = it.secret;
        parts[4 * i + 3] = it.keyId;
      }
      w.postMessage({ id, packed: parts.join('\0'), count: items.length, start, origin, keys: [...keys] });
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
    // One core stays with the main thread (validation, I/O); at most 2 encoder threads.
    workers = Math.max(1, Math.min(2, availableParallelism() - 1)),
  ) {
    this.workers = inline === undefined ? Array.from({ length: Math.max(1, workers) }, () => new EncodeWorker()) : [];
  }

  private fallback = false;

  /** Starts the encoder threads ahead of the first batch (they do not keep the process alive). */
  warm(): void {
    try {
      for (const w of this.workers) w.warm();
    } catch {
      this.fallback = true;
    }
  }

  async encode(items: BatchItem[], start: number, origin: string, keys: Map<string, Uint8Array>): Promise<EncodedBatch> {
    if (this.inline !== undefined || this.fallback || items.length < MIN_WORKER) {
      const nonces = new Uint8Array(12 * items.length);
      (this.inline?.random ?? ((b: Uint8Array) => void randomFillSync(b)))(nonces);
      return encodeBatch(items, start, origin, keys, nonces);
    }
    const k = items.length < MIN_SPLIT ? 1 : this.workers.length;
    const per = Math.ceil(items.length / k);
    try {
      const parts = await Promise.all(
        Array.from({ length: k }, (_, w) =>
          (this.workers[w] as EncodeWorker).encode(items.slice(w * per, (w + 1) * per), start + w * per, origin, keys),
        ),
      );
      return join(parts);
    } catch (err) {
      if (err instanceof AuditError) throw err;
      // The worker could not start (restricted environment): encode on this thread from now on.
      process.emitWarning(`audit: encoder thread unavailable, encoding inline: ${err instanceof Error ? err.message : String(err)}`);
      this.fallback = true;
      return this.encode(items, start, origin, keys);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

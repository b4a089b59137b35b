/**
 * Runs encodeBatch in worker threads, so that encryption and hashing of one batch overlap
 * validation of new events and the write + fsync of the previous batch on the main thread.
 * A batch is split across the workers. With `inline` (tests with injected randomness) it runs
 * on the calling thread instead.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type BatchItem, type EncodedBatch, encodeBatch } from './entry-batch.js';
import { AuditError } from './errors.js';
import type { RandomFill } from './event-id.js';

type Reply = { id: number; error?: string; count: number; buf: Uint8Array; bounds: Uint32Array; hashes: Uint8Array };
type Waiter = { resolve(r: EncodedBatch): void; reject(e: unknown): void };

/** Below this many events a batch is not worth splitting. */
const MIN_SPLIT = 512;

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
      let packed = '';
      for (const it of items) packed += `${it.pre}\0${it.post}\0${it.secret}\0${it.keyId}\0`;
      w.postMessage({ id, packed, count: items.length, start, origin, keys: [...keys] });
    });
  }

  private ensure(): Worker {
    if (this.worker !== undefined) return this.worker;
    // The worker inherits the parent's Node options, except those only valid for an entry script
    // (a parent started as `node --input-type=module -e ...` would make the worker fail).
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type') && a !== '-e' && a !== '--eval');
    const w = new Worker(new URL('./encode-worker.js', import.meta.url), { execArgv });
    w.on('message', (m: Reply) => {
      const p = this.waiting.get(m.id);
      if (p === undefined) return;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) w.unref();
      if (m.error !== undefined) p.reject(new AuditError('store-io', `entry encoder failed: ${m.error}`));
      else p.resolve({ count: m.count, buf: m.buf, bounds: m.bounds, hashes: m.hashes });
    });
    const fail = (err: unknown): void => {
      for (const p of this.waiting.values()) p.reject(new AuditError('store-io', 'entry encoder thread died', { cause: err }));
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

  async encode(items: BatchItem[], start: number, origin: string, keys: Map<string, Uint8Array>): Promise<EncodedBatch> {
    if (this.inline !== undefined) {
      const nonces = new Uint8Array(12 * items.length);
      this.inline.random(nonces);
      return encodeBatch(items, start, origin, keys, nonces);
    }
    const k = items.length < MIN_SPLIT ? 1 : this.workers.length;
    const per = Math.ceil(items.length / k);
    const parts = await Promise.all(
      Array.from({ length: k }, (_, w) => (this.workers[w] as EncodeWorker).encode(items.slice(w * per, (w + 1) * per), start + w * per, origin, keys)),
    );
    return join(parts);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

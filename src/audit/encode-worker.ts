/** Worker thread running encodeBatch (see encode-pool.ts). */
import { randomFillSync } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { type BatchItem, encodeBatch } from './entry-batch.js';

interface Request {
  readonly id: number;
  readonly packed: string;
  readonly count: number;
  readonly start: number;
  readonly origin: string;
  readonly keys: Array<[string, Uint8Array]>;
}

parentPort?.on('message', (m: Request) => {
  try {
    const parts = m.packed.split('\0');
    const items: BatchItem[] = new Array<BatchItem>(m.count);
    for (let i = 0; i < m.count; i++) {
      items[i] = {
        pre: parts[4 * i] as string,
        post: parts[4 * i + 1] as string,
        secret: parts[4 * i + 2] as string,
        keyId: parts[4 * i + 3] as string,
      };
    }
    const nonces = randomFillSync(new Uint8Array(12 * m.count));
    const r = encodeBatch(items, m.start, m.origin, new Map(m.keys), nonces);
    // Copy into transferable buffers (allocUnsafe may hand out a slice of a shared pool).
    const buf = new Uint8Array(r.buf);
    parentPort?.postMessage({ id: m.id, count: r.count, buf, bounds: r.bounds, hashes: r.hashes }, [
      buf.buffer as ArrayBuffer,
      r.bounds.buffer as ArrayBuffer,
      r.hashes.buffer as ArrayBuffer,
    ]);
  } catch (err) {
    parentPort?.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
  }
});

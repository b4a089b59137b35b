/** Worker thread running encodeArena (see encode-pool.ts). */
import { randomFillSync } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { Request } from './encode-pool.js';
import { encodeArena } from './entry-batch.js';

parentPort?.on('message', (m: Request) => {
  try {
    const nonces = randomFillSync(new Uint8Array(12 * m.count));
    const r = encodeArena(
      { count: m.count, buf: m.buf, ends: m.ends },
      m.start,
      m.origin,
      { general: m.general, bySubject: m.bySubject.length > 0 ? new Map(m.bySubject) : undefined, keys: new Map(m.keys) },
      nonces,
    );
    // allocUnsafe of a batch-sized buffer is never a slice of Node's shared pool: transfer it whole.
    const buf = r.buf.byteOffset === 0 && r.buf.byteLength === r.buf.buffer.byteLength ? r.buf : new Uint8Array(r.buf);
    parentPort?.postMessage({ id: m.id, count: r.count, buf, bounds: r.bounds, hashes: r.hashes }, [
      buf.buffer as ArrayBuffer,
      r.bounds.buffer as ArrayBuffer,
      r.hashes.buffer as ArrayBuffer,
    ]);
  } catch (err) {
    parentPort?.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
  }
});

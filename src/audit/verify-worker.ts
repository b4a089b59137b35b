/** Worker thread running analyzeChunk for full verification (see verify-pool.ts). */
import { parentPort } from 'node:worker_threads';
import { analyzeChunk } from './entry-analysis.js';

parentPort?.on('message', (m: { id: number; buf: Uint8Array; bounds: Uint32Array }) => {
  const r = analyzeChunk(m.buf, m.bounds);
  parentPort?.postMessage({ id: m.id, ...r }, [r.hashes.buffer as ArrayBuffer, r.indices.buffer as ArrayBuffer]);
});

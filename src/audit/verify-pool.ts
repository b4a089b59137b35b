/**
 * Runs analyzeChunk in a worker thread so that full verification hashes and parses entries on
 * one core while the main thread reads the store and builds the tree on the other.
 */
import { Worker } from 'node:worker_threads';
import { type ChunkAnalysis, analyzeChunk } from './entry-analysis.js';

export type ChunkAnalyzer = (buf: Uint8Array, bounds: Uint32Array) => Promise<ChunkAnalysis>;

export function inlineAnalyzer(): ChunkAnalyzer {
  return (buf, bounds) => Promise.resolve(analyzeChunk(buf, bounds));
}

/** A worker-backed analyzer; call `close()` when done. Falls back to inline if it cannot start. */
export function workerAnalyzer(): { analyze: ChunkAnalyzer; close(): Promise<void> } {
  let worker: Worker | undefined;
  try {
    worker = new Worker(new URL('./verify-worker.js', import.meta.url), { execArgv: [] });
  } catch {
    return { analyze: inlineAnalyzer(), close: async () => undefined };
  }
  const w = worker;
  let next = 0;
  const waiting = new Map<number, { resolve(r: ChunkAnalysis): void; reject(e: unknown): void }>();
  const failAll = (err: unknown): void => {
    for (const p of waiting.values()) p.reject(err);
    waiting.clear();
  };
  w.on('message', (m: ChunkAnalysis & { id: number }) => {
    const p = waiting.get(m.id);
    waiting.delete(m.id);
    p?.resolve({ hashes: m.hashes, indices: m.indices, errors: m.errors });
  });
  w.on('error', failAll);
  w.on('exit', (code) => failAll(new Error(`verification worker exited with ${code}`)));
  return {
    analyze: (buf, bounds) =>
      new Promise<ChunkAnalysis>((resolve, reject) => {
        const id = next++;
        waiting.set(id, { resolve, reject });
        w.postMessage({ id, buf, bounds }, [buf.buffer as ArrayBuffer]);
      }),
    close: async () => {
      w.removeAllListeners('exit');
      await w.terminate();
    },
  };
}

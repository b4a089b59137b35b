/**
 * Per-entry work of full verification, on a chunk of entries: recompute each leaf hash and read
 * the index recorded in the entry. Pure; runs inline or in a worker (verify-pool.ts).
 */
import { parseEntryIndex } from './entry.js';
import { hashLeafFast } from './merkle/hash.js';

export interface ChunkAnalysis {
  /** 32 bytes per entry. */
  readonly hashes: Uint8Array;
  /** The recorded index per entry, or -1 when the entry is malformed (see errors). */
  readonly indices: Float64Array;
  /** Parse errors of malformed entries, by position in the chunk. */
  readonly errors: Array<[number, string]>;
}

/** `buf` holds the entries back to back; entry i is buf[bounds[i], bounds[i + 1]). */
export function analyzeChunk(buf: Uint8Array, bounds: Uint32Array): ChunkAnalysis {
  const n = bounds.length - 1;
  const hashes = new Uint8Array(32 * n);
  const indices = new Float64Array(n);
  const errors: Array<[number, string]> = [];
  for (let i = 0; i < n; i++) {
    const entry = buf.subarray(bounds[i], bounds[i + 1]);
    hashes.set(hashLeafFast(entry), 32 * i);
    try {
      indices[i] = parseEntryIndex(entry);
    } catch (err) {
      indices[i] = -1;
      errors.push([i, err instanceof Error ? err.message : String(err)]);
    }
  }
  return { hashes, indices, errors };
}

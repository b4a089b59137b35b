/**
 * Full verification of a log: recompute every leaf hash from the stored entry bytes, rebuild the
 * tree, and check every stored checkpoint, every published checkpoint and any checkpoint the
 * caller brings (e.g. one saved earlier) against it: signature, origin, size within the log,
 * root equal to the recomputed root at that size, and consistency with the previous one.
 * The first problem is reported with the position it concerns. Stored data is hostile input.
 */
import { type Checkpoint, openCheckpoint } from './checkpoint/checkpoint.js';
import type { NoteVerifier } from './checkpoint/note.js';
import type { ChunkAnalysis } from './entry-analysis.js';
import { type ChunkAnalyzer, inlineAnalyzer } from './verify-pool.js';
import { AuditError } from './errors.js';
import { bytesEqual, MerkleTree, verifyConsistency } from './merkle/index.js';
import type { AuditStore, StoredRecord } from './store/types.js';

export interface VerifyInput {
  readonly store: AuditStore;
  readonly verifier: NoteVerifier;
  readonly origin: string;
  /** Checkpoints published to the external sink, in order. */
  readonly published?: readonly string[];
  /** Further checkpoints to check (label used in messages, e.g. the file name). */
  readonly extra?: ReadonlyArray<{ readonly label: string; readonly note: string }>;
  /** Where leaf hashes and recorded indices are computed (default: inline). */
  readonly analyze?: ChunkAnalyzer;
}

/** Entries per analysis chunk; two chunks are in flight so reading overlaps analysis. */
const CHUNK = 8192;

export type VerifyResult =
  | { readonly ok: true; readonly size: number; readonly root: Uint8Array; readonly checkpoints: number; readonly warnings: string[] }
  | { readonly ok: false; readonly problem: string; readonly warnings: string[] };

class Problem extends Error {}

export async function verifyLog(input: VerifyInput): Promise<VerifyResult> {
  const warnings: string[] = [];
  const tree = new MerkleTree();
  try {
    const analyze = input.analyze ?? inlineAnalyzer();
    // Records are gathered in chunks; each chunk's hashes and indices are computed (possibly in a
    // worker) while the next chunk is read, then checked in order, so the first problem found is
    // still the one at the lowest position.
    type Pending = { stored: Uint8Array; count: number; result: Promise<ChunkAnalysis> };
    const check = (p: Pending, r: ChunkAnalysis): void => {
      const errs = new Map(r.errors);
      for (let i = 0; i < p.count; i++) {
        const pos = tree.size;
        const h = r.hashes.subarray(32 * i, 32 * i + 32);
        if (!bytesEqual(h, p.stored.subarray(32 * i, 32 * i + 32)))
          throw new Problem(`entry ${pos}: its bytes do not match its stored leaf hash (entry modified)`);
        const index = r.indices[i] as number;
        if (index < 0) throw new Problem(`entry ${pos}: malformed (${errs.get(i) ?? 'unparsable'})`);
        if (index !== pos) throw new Problem(`entry ${pos}: it records index ${index} (entries deleted, inserted or reordered)`);
        tree.append(h);
      }
    };
    let inFlight: Pending | undefined;
    let entries: Uint8Array[] = [];
    let stored: Uint8Array[] = [];
    const submit = async (): Promise<void> => {
      if (entries.length === 0) return;
      const bounds = new Uint32Array(entries.length + 1);
      let total = 0;
      entries.forEach((e, i) => {
        bounds[i] = total;
        total += e.length;
      });
      bounds[entries.length] = total;
      const buf = new Uint8Array(total);
      entries.forEach((e, i) => buf.set(e, bounds[i] as number));
      const p: Pending = { stored: Buffer.concat(stored), count: entries.length, result: analyze(buf, bounds) };
      p.result.catch(() => undefined);
      entries = [];
      stored = [];
      if (inFlight !== undefined) check(inFlight, await inFlight.result);
      inFlight = p;
    };
    let tail: StoredRecord | undefined;
    for await (const rec of input.store.readEntries(0)) {
      if (rec.error !== undefined) {
        tail = rec;
        break;
      }
      entries.push(rec.entry);
      stored.push(rec.leafHash);
      if (entries.length >= CHUNK) await submit();
    }
    await submit();
    if (inFlight !== undefined) check(inFlight, await inFlight.result);
    if (tail?.error !== undefined) {
      const pos = tree.size;
      if (tail.error.startsWith('incomplete record')) warnings.push(`entry ${pos}: ${tail.error}; ignored (never acknowledged)`);
      else throw new Problem(`entry ${pos}: ${tail.error}`);
    }
    let count = 0;
    const checkCp = (label: string, note: string, prev: Checkpoint | undefined): Checkpoint => {
      let cp: Checkpoint;
      try {
        cp = openCheckpoint(note, input.verifier, input.origin);
      } catch (err) {
        const code = err instanceof AuditError ? err.code : 'error';
        throw new Problem(`${label}: ${code}: ${err instanceof Error ? err.message : String(err)}`);
      }
      if (prev !== undefined && cp.size < prev.size)
        throw new Problem(`${label}: size ${cp.size} is smaller than the previous checkpoint's ${prev.size} (rolled back)`);
      if (cp.size > tree.size)
        throw new Problem(
          `${label}: size ${cp.size} but the log holds ${tree.size} entries (entries ${tree.size}..${cp.size - 1} missing: truncated or rolled back)`,
        );
      if (!bytesEqual(tree.root(cp.size), cp.root)) {
        const from = prev !== undefined && bytesEqual(tree.root(prev.size), prev.root) ? prev.size : 0;
        throw new Problem(
          `${label}: root for size ${cp.size} does not match the stored entries (an entry in ${from}..${cp.size - 1} was changed)`,
        );
      }
      if (prev !== undefined && prev.size > 0 && cp.size > 0) {
        verifyConsistency(prev.size, cp.size, tree.consistencyProof(prev.size, cp.size), prev.root, cp.root);
      }
      count++;
      return cp;
    };
    let prev: Checkpoint | undefined;
    for (const [k, note] of (await input.store.readCheckpoints()).entries()) prev = checkCp(`checkpoint ${k}`, note, prev);
    let prevPub: Checkpoint | undefined;
    for (const [k, note] of (input.published ?? []).entries()) prevPub = checkCp(`published checkpoint ${k}`, note, prevPub);
    for (const e of input.extra ?? []) checkCp(e.label, e.note, undefined);
    return { ok: true, size: tree.size, root: tree.root(), checkpoints: count, warnings };
  } catch (err) {
    if (err instanceof Problem) return { ok: false, problem: err.message, warnings };
    if (err instanceof AuditError) return { ok: false, problem: `${err.code}: ${err.message}`, warnings };
    throw err;
  }
}

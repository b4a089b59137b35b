/**
 * Full verification of a log: recompute every leaf hash from the stored entry bytes, rebuild the
 * tree, and check every stored checkpoint, every published checkpoint and any checkpoint the
 * caller brings (e.g. one saved earlier) against it: signature, origin, size within the log,
 * root equal to the recomputed root at that size, and consistency with the previous one.
 * The first problem is reported with the position it concerns. Stored data is hostile input.
 */
import { type Checkpoint, openCheckpoint } from './checkpoint/checkpoint.js';
import type { NoteVerifier } from './checkpoint/note.js';
import { parseEntryIndex } from './entry.js';
import { AuditError } from './errors.js';
import { hashLeafFast } from './merkle/hash.js';
import { bytesEqual, MerkleTree, verifyConsistency } from './merkle/index.js';
import type { AuditStore } from './store/types.js';

export interface VerifyInput {
  readonly store: AuditStore;
  readonly verifier: NoteVerifier;
  readonly origin: string;
  /** Checkpoints published to the external sink, in order. */
  readonly published?: readonly string[];
  /** Further checkpoints to check (label used in messages, e.g. the file name). */
  readonly extra?: ReadonlyArray<{ readonly label: string; readonly note: string }>;
}

export type VerifyResult =
  | { readonly ok: true; readonly size: number; readonly root: Uint8Array; readonly checkpoints: number; readonly warnings: string[] }
  | { readonly ok: false; readonly problem: string; readonly warnings: string[] };

class Problem extends Error {}

export async function verifyLog(input: VerifyInput): Promise<VerifyResult> {
  const warnings: string[] = [];
  const tree = new MerkleTree();
  try {
    for await (const rec of input.store.readEntries(0)) {
      const pos = tree.size;
      if (rec.error !== undefined) {
        if (rec.error.startsWith('incomplete record')) {
          warnings.push(`entry ${pos}: ${rec.error}; ignored (never acknowledged)`);
          break;
        }
        throw new Problem(`entry ${pos}: ${rec.error}`);
      }
      const h = hashLeafFast(rec.entry);
      if (!bytesEqual(h, rec.leafHash)) throw new Problem(`entry ${pos}: its bytes do not match its stored leaf hash (entry modified)`);
      let index: number;
      try {
        index = parseEntryIndex(rec.entry);
      } catch (err) {
        throw new Problem(`entry ${pos}: malformed (${err instanceof Error ? err.message : String(err)})`);
      }
      if (index !== pos) throw new Problem(`entry ${pos}: it records index ${index} (entries deleted, inserted or reordered)`);
      tree.append(h);
    }
    let count = 0;
    const check = (label: string, note: string, prev: Checkpoint | undefined): Checkpoint => {
      let cp: Checkpoint;
      try {
        cp = openCheckpoint(note, input.verifier, input.origin);
      } catch (err) {
        const code = err instanceof AuditError ? err.code : 'error';
        throw new Problem(`${label}: ${code}: ${err instanceof Error ? err.message : String(err)}`);
      }
      if (prev !== undefined && cp.size < prev.size) throw new Problem(`${label}: size ${cp.size} is smaller than the previous checkpoint's ${prev.size} (rolled back)`);
      if (cp.size > tree.size) throw new Problem(`${label}: size ${cp.size} but the log holds ${tree.size} entries (entries ${tree.size}..${cp.size - 1} missing: truncated or rolled back)`);
      if (!bytesEqual(tree.root(cp.size), cp.root)) {
        const from = prev !== undefined && bytesEqual(tree.root(prev.size), prev.root) ? prev.size : 0;
        throw new Problem(`${label}: root for size ${cp.size} does not match the stored entries (an entry in ${from}..${cp.size - 1} was changed)`);
      }
      if (prev !== undefined && prev.size > 0 && cp.size > 0) {
        verifyConsistency(prev.size, cp.size, tree.consistencyProof(prev.size, cp.size), prev.root, cp.root);
      }
      count++;
      return cp;
    };
    let prev: Checkpoint | undefined;
    for (const [k, note] of (await input.store.readCheckpoints()).entries()) prev = check(`checkpoint ${k}`, note, prev);
    let prevPub: Checkpoint | undefined;
    for (const [k, note] of (input.published ?? []).entries()) prevPub = check(`published checkpoint ${k}`, note, prevPub);
    for (const e of input.extra ?? []) check(e.label, e.note, undefined);
    return { ok: true, size: tree.size, root: tree.root(), checkpoints: count, warnings };
  } catch (err) {
    if (err instanceof Problem) return { ok: false, problem: err.message, warnings };
    if (err instanceof AuditError) return { ok: false, problem: `${err.code}: ${err.message}`, warnings };
    throw err;
  }
}

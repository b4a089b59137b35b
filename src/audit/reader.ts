/**
 * Read-only access to the audit log: entries (decrypted where their key still exists), RFC 6962
 * proofs, roots and the latest signed checkpoint. The `aegis audit` read commands (and the server)
 * use this, never the writer.
 *
 * ARCHITECTURE NOTE: a reader changes nothing. It opens the store read-only, holds no lock, does
 * not apply retention, creates no data or signing key, signs and publishes no checkpoint, saves no
 * frontier and repairs no torn tail; it works on a read-only copy of $AEGIS_HOME and beside
 * running writers. It still refuses a store that disagrees with its stored or published
 * checkpoints (audit.store_corrupt), exactly as a writer would on open.
 */
import type { NoteVerifier } from './checkpoint/note.js';
import { parseEntry, parseSecretPart } from './entry.js';
import { type MasterKeys, decryptPayload, payloadAad } from './envelope.js';
import type { AuditEvent } from './event.js';
import { KeyRing } from './key-ring.js';
import { LogTree } from './log-tree.js';
import type { AuditStore } from './store/types.js';

export type DecryptedEntry =
  | { readonly index: number; readonly event: AuditEvent; readonly keyDestroyed?: undefined }
  | { readonly index: number; readonly event: Omit<AuditEvent, 'payload'> & { payload: null }; readonly keyDestroyed: true };

export type ReadRecord = { index: number; entry: Uint8Array; decoded?: DecryptedEntry; error?: string };

/** Decrypts a stored entry (index = its position in the store). */
export async function decryptEntry(keys: KeyRing, origin: string, index: number, entry: Uint8Array): Promise<DecryptedEntry> {
  const p = parseEntry(entry);
  const head = {
    v: 1 as const,
    id: p.id,
    time: p.time,
    actor: p.actor,
    action: p.action,
    decision: p.decision,
    ...(p.reason !== undefined ? { reason: p.reason } : {}),
  };
  const key = await keys.unwrap(p.enc.keyId);
  if (key === undefined) return { index, event: { ...head, payload: null }, keyDestroyed: true };
  const secret = parseSecretPart(decryptPayload(key, p.enc.nonce, p.enc.ciphertext, payloadAad(origin, index)));
  const event: AuditEvent = { ...head, ...(secret.subject !== undefined ? { subject: secret.subject } : {}), payload: secret.payload };
  return { index, event };
}

/**
 * Stored entries from `from` on, decrypted where their key still exists. Damaged entries are
 * reported as `error` (run `aegis audit verify` for the full check).
 */
export async function* readEntries(store: AuditStore, keys: KeyRing, origin: string, from: number): AsyncIterable<ReadRecord> {
  for await (const r of store.readEntries(from)) {
    if (r.error !== undefined) {
      yield { index: r.index, entry: new Uint8Array(0), error: r.error };
      return;
    }
    try {
      yield { index: r.index, entry: r.entry, decoded: await decryptEntry(keys, origin, r.index, r.entry) };
    } catch (err) {
      yield { index: r.index, entry: r.entry, error: err instanceof Error ? err.message : String(err) };
    }
  }
}

/** RFC 6962 proofs over a LogTree (reads the store's leaf hashes when it was restored). */
export async function inclusionProof(
  t: LogTree,
  index: number,
  size: number,
): Promise<{ leafHash: Uint8Array; proof: Uint8Array[]; root: Uint8Array }> {
  const full = await t.fullTree();
  return { leafHash: full.leafHash(index), proof: full.inclusionProof(index, size), root: full.root(size) };
}

export async function consistencyProof(
  t: LogTree,
  size1: number,
  size2: number,
): Promise<{ root1: Uint8Array; root2: Uint8Array; proof: Uint8Array[] }> {
  const full = await t.fullTree();
  return { root1: full.root(size1), root2: full.root(size2), proof: full.consistencyProof(size1, size2) };
}

export interface AuditReaderOptions {
  /** A store opened read-only (openStore(..., { readOnly: true })); closed by close(). */
  readonly store: AuditStore;
  readonly verifier: NoteVerifier;
  /** Checkpoint origin line. */
  readonly origin: string;
  readonly masterKeys: MasterKeys;
  /** Checkpoints already published (file sinks): a store behind them is refused. */
  readonly published?: readonly string[];
}

export class AuditReader {
  private constructor(
    private readonly store: AuditStore,
    private readonly origin_: string,
    private readonly tree: LogTree,
    private readonly keys: KeyRing,
  ) {}

  /** Loads and checks the tree exactly as a writer does on open, without writing anything. */
  static async open(o: AuditReaderOptions): Promise<AuditReader> {
    const tree = await LogTree.open({ store: o.store, verifier: o.verifier, origin: o.origin }, o.published ?? []);
    return new AuditReader(o.store, o.origin, tree, new KeyRing({ store: o.store, masterKeys: o.masterKeys }));
  }

  get size(): number {
    return this.tree.size;
  }

  get origin(): string {
    return this.origin_;
  }

  /** Latest stored checkpoint note, if any (checked against the tree when the reader opened). */
  async latestCheckpoint(): Promise<string | undefined> {
    return (await this.store.readCheckpoints()).at(-1);
  }

  read(from = 0): AsyncIterable<ReadRecord> {
    return readEntries(this.store, this.keys, this.origin_, from);
  }

  decrypt(index: number, entry: Uint8Array): Promise<DecryptedEntry> {
    return decryptEntry(this.keys, this.origin_, index, entry);
  }

  inclusionProof(index: number, size: number = this.tree.size): Promise<{ leafHash: Uint8Array; proof: Uint8Array[]; root: Uint8Array }> {
    return inclusionProof(this.tree, index, size);
  }

  consistencyProof(size1: number, size2: number = this.tree.size): Promise<{ root1: Uint8Array; root2: Uint8Array; proof: Uint8Array[] }> {
    return consistencyProof(this.tree, size1, size2);
  }

  root(size: number = this.tree.size): Promise<Uint8Array> {
    return this.tree.root(size);
  }

  /** Catches up with entries and checkpoints writers stored since open. */
  async refresh(): Promise<void> {
    if (this.tree.broken !== undefined) throw this.tree.broken;
    await this.tree.catchUp();
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

/**
 * The one interface every audit store implements (embedded files, PostgreSQL). Every
 * implementation runs the same conformance suite (conformance.ts).
 *
 * Contract:
 * - Entries are numbered 0, 1, 2, ... without gaps. `append(start, ...)` is atomic and durable
 *   when it resolves (the caller acknowledges events only then), and fails with
 *   AuditError('audit.conflict') without writing anything if the store does not hold exactly `start`
 *   entries (another writer appended first): the caller catches up and retries.
 * - Checkpoints are stored in order; `appendCheckpoint` refuses (audit.checkpoint_inconsistent) a
 *   checkpoint smaller than the latest stored one. Consistency of roots is the caller's job.
 * - Stored data is untrusted: readers report damage as values (`StoredRecord.error`), they do
 *   not throw on it, so verification can name the position.
 * - Keys: wrapped data keys by id; `deleteKey` destroys the stored copy (crypto-shredding).
 * - Frontier: the latest tree frontier a writer saved (opaque bytes, merkle/frontier.ts) and the
 *   entry count it is for. Untrusted like everything stored: the log uses it only once it hashes
 *   to a signed checkpoint's root. Writers overwrite it; losing it only costs a full rebuild.
 *   After `readFrontier`, `readLeafHashes(size)` must not need to read the entries before `size`.
 */
export interface NewEntry {
  readonly leafHash: Uint8Array;
  readonly entry: Uint8Array;
}

/**
 * New entries laid out flat, without an object per entry (appending is the hot path).
 * Entry i is buf[bounds[2i], bounds[2i+1]); its leaf hash is hashes[32i, 32i+32).
 */
export interface EntryBatch {
  readonly count: number;
  readonly hashes: Uint8Array;
  readonly buf: Uint8Array;
  readonly bounds: Uint32Array;
}

/** Packs entries into an EntryBatch. */
export function entryBatch(entries: readonly NewEntry[]): EntryBatch {
  const buf = Buffer.concat(entries.map((e) => e.entry));
  const hashes = Buffer.concat(entries.map((e) => e.leafHash));
  const bounds = new Uint32Array(2 * entries.length);
  let off = 0;
  entries.forEach((e, i) => {
    bounds[2 * i] = off;
    off += e.entry.length;
    bounds[2 * i + 1] = off;
  });
  return { count: entries.length, hashes, buf, bounds };
}

export function batchEntry(b: EntryBatch, i: number): Uint8Array {
  return b.buf.subarray(b.bounds[2 * i], b.bounds[2 * i + 1]);
}

export function batchLeafHash(b: EntryBatch, i: number): Uint8Array {
  return b.hashes.subarray(32 * i, 32 * i + 32);
}

export type StoredRecord =
  | { readonly index: number; readonly leafHash: Uint8Array; readonly entry: Uint8Array; readonly error?: undefined }
  | { readonly index: number; readonly error: string };

export interface AuditStore {
  /** Human-readable location for messages (path or URL without password). */
  readonly location: string;
  /** Current entry count and the stored leaf hashes of entries [from, count), concatenated. */
  readLeafHashes(from: number): Promise<{ size: number; hashes: Uint8Array }>;
  /** Entries [from, to) in order; stops after the first unreadable record. */
  readEntries(from: number, to?: number): AsyncIterable<StoredRecord>;
  append(start: number, batch: EntryBatch): Promise<void>;
  appendCheckpoint(size: number, note: string): Promise<void>;
  /** Every stored checkpoint note in order (possibly damaged text: verify parses it). */
  readCheckpoints(): Promise<string[]>;
  putKey(id: string, wrapped: Uint8Array): Promise<void>;
  getKey(id: string): Promise<Uint8Array | undefined>;
  listKeyIds(): Promise<string[]>;
  /** Destroys a key; destroying an absent key is not an error. */
  deleteKey(id: string): Promise<void>;
  /** Replaces the saved frontier (for the first `size` entries). Need not be durable. */
  writeFrontier(size: number, frontier: Uint8Array): Promise<void>;
  /** The saved frontier, or undefined when there is none or it is unreadable (torn). */
  readFrontier(): Promise<Uint8Array | undefined>;
  close(): Promise<void>;
}

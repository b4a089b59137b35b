/**
 * Embedded audit store: plain files in one directory, no server.
 *
 *   entries.dat       8-byte magic "AEGAUD1\n", then records: u32 BE length || 32-byte leaf hash || entry
 *   checkpoints.jsonl one {"size":n,"note":"<signed note>"} per line
 *   keys/<key id>     wrapped data keys, one file each (0600)
 *   frontier.dat      the latest saved tree frontier, with where its last entry is in entries.dat:
 *                     "AEGFST1\n" || u64 BE size || u64 BE start of record size-1 || u64 BE end of it
 *                     || its 32-byte leaf hash || frontier bytes || SHA-256(all before)
 *                     (replaced by rename; a torn or damaged file reads as absent)
 *   writer.lock       held during each entry write (see file-lock.ts)
 *   checkpoints.lock  held during each checkpoint write
 *
 * Durability: a batch is written with one write() on a descriptor opened with O_DSYNC (the write
 * returns once the data is on disk, as write + fdatasync, in one system call and one trip through
 * libuv's thread pool) before `append` resolves, all
 * under the writer lock. After kill -9 the only possible damage is an incomplete or torn record
 * at the tail that was never acknowledged; the next writer, holding the lock (so the writer that
 * produced it is gone), truncates it. Readers never repair: they stop at an incomplete tail.
 */
import { constants, fstatSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rename, stat, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AuditError } from '../errors.js';
import { bytesEqual, hashLeaf } from '../merkle/hash.js';
import { withFileLock } from './file-lock.js';
import type { AuditStore, EntryBatch, StoredRecord } from './types.js';

const MAGIC = Buffer.from('AEGAUD1\n', 'ascii');
const HEADER = 4 + 32;
/** Largest entry accepted on read; anything bigger is damage, not data. */
const MAX_ENTRY = 16 << 20;
const CHUNK = 8 << 20;
const KEY_ID_FILE_RE = /^[A-Za-z0-9._-]{1,128}$/u;
const FRONTIER_MAGIC = Buffer.from('AEGFST1\n', 'ascii');
const FRONTIER_HEAD = FRONTIER_MAGIC.length + 3 * 8 + 32;
/** Entry counts whose byte positions a handle remembers (for saving a frontier of that size). */
const POSITIONS_KEPT = 256;

/** Where the record of entry count-1 lies: [last, end). */
type Position = { last: number; end: number; leafHash: Uint8Array };

type Scanned = { offset: number; leafHash: Uint8Array; entry: Uint8Array };
type ScanEnd = { offset: number; problem?: string; complete: boolean };

/**
 * Reads records from `offset` to end of file, calling `onRecord`; returns where it stopped and
 * why. `complete` is false when the file ends inside a record (an interrupted write).
 */
async function scan(fh: FileHandle, offset: number, onRecord: (r: Scanned) => boolean | void): Promise<ScanEnd> {
  const size = (await fh.stat()).size;
  let buf = Buffer.alloc(0);
  let bufStart = offset;
  let pos = offset;
  while (pos < size) {
    // Make sure the header and then the whole record are in `buf`.
    const rel = pos - bufStart;
    const need = async (n: number): Promise<boolean> => {
      if (buf.length - (pos - bufStart) >= n) return true;
      const keep = buf.subarray(pos - bufStart);
      const want = Math.max(n, CHUNK);
      const next = Buffer.alloc(Math.min(want, size - pos));
      keep.copy(next);
      const { bytesRead } = await fh.read(next, keep.length, next.length - keep.length, pos + keep.length);
      buf = next.subarray(0, keep.length + bytesRead);
      bufStart = pos;
      return buf.length >= n;
    };
    void rel;
    if (!(await need(HEADER))) return { offset: pos, complete: false };
    const r = pos - bufStart;
    const len = buf.readUInt32BE(r);
    if (len === 0 || len > MAX_ENTRY) return { offset: pos, complete: true, problem: `record length ${len} is invalid` };
    if (pos + HEADER + len > size) return { offset: pos, complete: false };
    if (!(await need(HEADER + len))) return { offset: pos, complete: false };
    const s = pos - bufStart;
    const leafHash = buf.subarray(s + 4, s + HEADER);
    const entry = buf.subarray(s + HEADER, s + HEADER + len);
    if (onRecord({ offset: pos, leafHash, entry }) === false) return { offset: pos, complete: true };
    pos += HEADER + len;
  }
  return { offset: pos, complete: true };
}

/** Writes `data` to a temporary file next to `path` (0600), fsyncs it and renames it over `path`. */
async function replaceFile(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.write(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export class FileStore implements AuditStore {
  readonly location: string;
  private count = 0;
  private end = MAGIC.length;
  /**
   * Serialize this process's writes, so that only other processes contend for the lock files.
   * Entries and checkpoints have separate locks: signing a checkpoint never delays an append.
   */
  private chains: Record<'entries' | 'checkpoints', Promise<unknown>> = { entries: Promise.resolve(), checkpoints: Promise.resolve() };
  /** Size of checkpoints.jsonl when last read, and the size of its latest checkpoint. */
  private cpCache: { bytes: number; last: number } | undefined;
  /** Recent entry counts this handle reached, and where their last record is. */
  private readonly positions = new Map<number, Position>();
  /** Records read by readLeafHashes since open (tests and benchmarks: what opening costs). */
  leafHashesScanned = 0;

  private constructor(
    private readonly dir: string,
    private readonly fh: FileHandle,
    private readonly readOnly: boolean,
  ) {
    this.location = dir;
  }

  /**
   * Opens (creating when absent) the store in `dir`. `readOnly`: opens an existing store for
   * reading only (O_RDONLY; creates, locks and repairs nothing; every write fails with
   * 'audit.read_only'), so that it works on a read-only copy and beside writers.
   */
  static async open(dir: string, opts: { readonly readOnly?: boolean } = {}): Promise<FileStore> {
    const readOnly = opts.readOnly === true;
    if (!readOnly) await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
    const path = join(dir, 'entries.dat');
    let fh: FileHandle;
    try {
      fh = await open(path, readOnly ? constants.O_RDONLY : constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC, 0o600);
    } catch (cause) {
      throw new AuditError('audit.store_io', `cannot open ${path}`, { cause });
    }
    const store = new FileStore(dir, fh, readOnly);
    // A new store's magic is written by its first writer; until then it reads as empty.
    if (readOnly && (await fh.stat()).size === 0) return store;
    if ((await fh.stat()).size === 0) {
      await withFileLock(store.lockPath, async () => {
        if ((await fh.stat()).size === 0) {
          await fh.write(MAGIC, 0, MAGIC.length, 0);
          await fh.datasync();
        }
      });
    }
    const magic = Buffer.alloc(MAGIC.length);
    await fh.read(magic, 0, MAGIC.length, 0);
    if (!magic.equals(MAGIC)) {
      await fh.close();
      throw new AuditError('audit.store_corrupt', `${path} is not an AEGIS audit log (bad magic)`);
    }
    return store;
  }

  private writable(what: string): void {
    if (this.readOnly) throw new AuditError('audit.read_only', `${this.location} is open read-only: cannot ${what}`);
  }

  private get lockPath(): string {
    return join(this.dir, 'writer.lock');
  }

  private locked<T>(which: 'entries' | 'checkpoints', fn: () => Promise<T>): Promise<T> {
    const lock = which === 'entries' ? this.lockPath : join(this.dir, 'checkpoints.lock');
    const run = this.chains[which].then(() => withFileLock(lock, fn));
    this.chains[which] = run.catch(() => undefined);
    return run;
  }

  async readLeafHashes(from: number): Promise<{ size: number; hashes: Uint8Array }> {
    // Catch up from what this handle already knows (or a remembered position); rescan from the
    // start if asked for less.
    const known = from === this.count ? undefined : this.positions.get(from);
    if (known !== undefined) {
      this.count = from;
      this.end = known.end;
    } else if (from < this.count) {
      this.count = 0;
      this.end = MAGIC.length;
    }
    const parts: Uint8Array[] = [];
    let index = this.count;
    let last: Scanned | undefined;
    const end = await scan(this.fh, this.end, (r) => {
      if (index >= from) parts.push(Buffer.from(r.leafHash));
      index++;
      last = r;
    });
    this.leafHashesScanned += index - this.count;
    if (end.problem !== undefined) throw new AuditError('audit.store_corrupt', `entry ${index} in ${this.location}: ${end.problem}`);
    if (last !== undefined) this.remember(index, last.offset, end.offset, last.leafHash);
    this.count = index;
    this.end = end.offset;
    return { size: this.count, hashes: Buffer.concat(parts) };
  }

  private remember(count: number, last: number, end: number, leafHash: Uint8Array): void {
    this.positions.set(count, { last, end, leafHash: Buffer.from(leafHash) });
    if (this.positions.size > POSITIONS_KEPT) this.positions.delete(this.positions.keys().next().value as number);
  }

  async *readEntries(from: number, to?: number): AsyncIterable<StoredRecord> {
    const records: StoredRecord[] = [];
    let index = 0;
    // Stream in chunks: scan fills `records`, we yield them when it returns a batch.
    let offset = MAGIC.length;
    for (;;) {
      records.length = 0;
      const end = await scan(this.fh, offset, (r) => {
        if (to !== undefined && index >= to) return false;
        // Copies: the scan buffer is reused. One slice of the chunk holds both.
        if (index >= from) {
          const copy = Buffer.from(r.entry.buffer, r.entry.byteOffset - 32, r.entry.length + 32);
          const own = Buffer.allocUnsafe(copy.length);
          copy.copy(own);
          records.push({ index, leafHash: own.subarray(0, 32), entry: own.subarray(32) });
        }
        index++;
        offset = r.offset + HEADER + r.entry.length;
        return records.length < 4096;
      });
      yield* records;
      if (to !== undefined && index >= to) return;
      if (records.length >= 4096 && end.problem === undefined) continue;
      if (end.problem !== undefined) {
        yield { index, error: `unreadable record at byte ${end.offset}: ${end.problem}` };
      } else if (!end.complete) {
        yield { index, error: `incomplete record at byte ${end.offset} (interrupted write at the tail)` };
      }
      return;
    }
  }

  async append(start: number, batch: EntryBatch): Promise<void> {
    this.writable('append entries');
    if (batch.count === 0) return;
    // One buffer of records: u32 length || leaf hash || entry, built without per-entry objects.
    const src = Buffer.from(batch.buf.buffer, batch.buf.byteOffset, batch.buf.length);
    const hashes = Buffer.from(batch.hashes.buffer, batch.hashes.byteOffset, batch.hashes.length);
    let total = 0;
    for (let i = 0; i < batch.count; i++) total += HEADER + ((batch.bounds[2 * i + 1] as number) - (batch.bounds[2 * i] as number));
    const data = Buffer.allocUnsafe(total);
    let off = 0;
    for (let i = 0; i < batch.count; i++) {
      const s0 = batch.bounds[2 * i] as number;
      const s1 = batch.bounds[2 * i + 1] as number;
      data.writeUInt32BE(s1 - s0, off);
      hashes.copy(data, off + 4, 32 * i, 32 * i + 32);
      src.copy(data, off + HEADER, s0, s1);
      off += HEADER + s1 - s0;
    }
    await this.locked('entries', async () => {
      const onDisk = await this.repairTail();
      if (onDisk !== start || this.count !== start) throw new AuditError('audit.conflict', `store holds ${onDisk} entries, not ${start}`);
      try {
        let off = 0;
        while (off < data.length) {
          // O_DSYNC: durable when write() returns (see the top of this file).
          const { bytesWritten } = await this.fh.write(data, off, data.length - off, this.end + off);
          off += bytesWritten;
        }
      } catch (cause) {
        throw new AuditError('audit.store_io', `cannot write ${this.location}`, { cause });
      }
      this.end += data.length;
      this.count += batch.count;
      const lastLen = (batch.bounds[2 * batch.count - 1] as number) - (batch.bounds[2 * batch.count - 2] as number);
      this.remember(this.count, this.end - HEADER - lastLen, this.end, hashes.subarray(32 * (batch.count - 1), 32 * batch.count));
    });
  }

  /**
   * Under the writer lock: counts the entries on disk, truncating an incomplete or torn record at
   * the tail (its writer is dead: it would hold the lock). Does not change what this handle has
   * reported (count, end): new records of other writers are read by readLeafHashes.
   */
  private async repairTail(): Promise<number> {
    const size = fstatSync(this.fh.fd).size; // a microsecond: not worth a trip through the thread pool
    if (size === this.end) return this.count;
    if (size < this.end)
      throw new AuditError('audit.store_corrupt', `${this.location} shrank under the writer (${size} < ${this.end} bytes)`);
    let index = this.count;
    let goodEnd = this.end;
    await scan(this.fh, this.end, (r) => {
      if (!bytesEqual(hashLeaf(r.entry), r.leafHash)) return false;
      index++;
      goodEnd = r.offset + HEADER + r.entry.length;
      return undefined;
    });
    if (goodEnd < size) {
      // Whatever follows the last good record was never acknowledged.
      process.emitWarning(`audit: truncating ${size - goodEnd} bytes of interrupted write at the tail of ${this.location}`);
      await this.fh.truncate(goodEnd);
      await this.fh.datasync();
    }
    return index;
  }

  async appendCheckpoint(size: number, note: string): Promise<void> {
    this.writable('store a checkpoint');
    await this.locked('checkpoints', async () => {
      const path = join(this.dir, 'checkpoints.jsonl');
      let bytes = await stat(path).then(
        (st) => st.size,
        () => 0,
      );
      let last = this.cpCache !== undefined && this.cpCache.bytes === bytes ? this.cpCache.last : undefined;
      if (last === undefined) {
        // A line cut by a crash (no final newline) was never acknowledged: drop it before appending.
        const buf = await readFile(path).catch(() => Buffer.alloc(0));
        const cut = buf.lastIndexOf(0x0a) + 1;
        if (cut < buf.length) await truncate(path, cut);
        bytes = cut;
        last = (await this.readCheckpointRecords()).at(-1)?.size ?? -1;
      }
      if (last > size) {
        throw new AuditError('audit.checkpoint_inconsistent', `latest stored checkpoint has size ${last} > ${size}`);
      }
      const line = `${JSON.stringify({ size, note })}\n`;
      const fh = await open(path, 'a', 0o600);
      try {
        await fh.write(line);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      this.cpCache = { bytes: bytes + Buffer.byteLength(line), last: size };
    });
  }

  private async readCheckpointRecords(): Promise<Array<{ size: number; note: string }>> {
    let text: string;
    try {
      text = await readFile(join(this.dir, 'checkpoints.jsonl'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new AuditError('audit.store_io', 'cannot read checkpoints', { cause: err });
    }
    const lines = text.split('\n');
    lines.pop(); // the part after the last newline: empty, or a torn unacknowledged write
    return lines.map((line) => {
      try {
        const v = JSON.parse(line) as { size?: unknown; note?: unknown };
        if (typeof v.size === 'number' && typeof v.note === 'string') return { size: v.size, note: v.note };
      } catch {
        /* damaged line: verification reports it */
      }
      return { size: -1, note: line };
    });
  }

  async readCheckpoints(): Promise<string[]> {
    return (await this.readCheckpointRecords()).map((r) => r.note);
  }

  private keyPath(id: string): string {
    if (!KEY_ID_FILE_RE.test(id) || id.startsWith('.')) throw new AuditError('audit.key_invalid', `invalid key id ${JSON.stringify(id)}`);
    return join(this.dir, 'keys', id);
  }

  async putKey(id: string, wrapped: Uint8Array): Promise<void> {
    this.writable('store a key');
    await replaceFile(this.keyPath(id), wrapped);
    await this.syncDir(join(this.dir, 'keys'));
  }

  async getKey(id: string): Promise<Uint8Array | undefined> {
    try {
      return new Uint8Array(await readFile(this.keyPath(id)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async listKeyIds(): Promise<string[]> {
    return (await readdir(join(this.dir, 'keys'))).filter((n) => !n.endsWith('.tmp')).sort();
  }

  async deleteKey(id: string): Promise<void> {
    this.writable('delete a key');
    const path = this.keyPath(id);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      // Overwrite before unlinking (best effort: see LIMITATIONS in docs/audit.md).
      const { size } = await fh.stat();
      await fh.write(Buffer.alloc(size), 0, size, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await unlink(path);
    await this.syncDir(join(this.dir, 'keys'));
  }

  /**
   * Saves the frontier with the position of entry size-1 when this handle knows it (it wrote or
   * read that far recently); otherwise without one (the next reader then scans from the start).
   * Written to a temporary file, fsync'd and renamed over frontier.dat.
   */
  async writeFrontier(size: number, frontier: Uint8Array): Promise<void> {
    this.writable('save the frontier');
    const pos = size === 0 ? undefined : this.positions.get(size);
    const head = Buffer.alloc(FRONTIER_HEAD);
    FRONTIER_MAGIC.copy(head);
    let o = FRONTIER_MAGIC.length;
    for (const v of [size, pos?.last ?? 0, pos?.end ?? 0]) o = head.writeBigUInt64BE(BigInt(v), o);
    if (pos !== undefined) head.set(pos.leafHash, o);
    const body = Buffer.concat([head, frontier]);
    const data = Buffer.concat([body, createHash('sha256').update(body).digest()]);
    const path = join(this.dir, 'frontier.dat');
    try {
      await replaceFile(path, data);
    } catch (cause) {
      throw new AuditError('audit.store_io', `cannot write ${path}`, { cause });
    }
  }

  /**
   * Reads frontier.dat (hostile input: anything but a complete record reads as absent). When its
   * position checks out (a complete record at that place whose entry hashes to the leaf hash
   * saved with it), this handle continues reading leaf hashes from there.
   */
  async readFrontier(): Promise<Uint8Array | undefined> {
    let data: Buffer;
    try {
      data = await readFile(join(this.dir, 'frontier.dat'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new AuditError('audit.store_io', 'cannot read frontier.dat', { cause: err });
    }
    if (data.length < FRONTIER_HEAD + 32 || !data.subarray(0, FRONTIER_MAGIC.length).equals(FRONTIER_MAGIC)) return undefined;
    const body = data.subarray(0, data.length - 32);
    if (!createHash('sha256').update(body).digest().equals(data.subarray(body.length))) return undefined;
    const [size, last, end] = [0, 1, 2].map((k) => Number(body.readBigUInt64BE(FRONTIER_MAGIC.length + 8 * k))) as [number, number, number];
    const leafHash = body.subarray(FRONTIER_HEAD - 32, FRONTIER_HEAD);
    if (size > 0 && end > 0 && size > this.count && (await this.recordAt(last, end, leafHash))) {
      this.count = size;
      this.end = end;
      this.remember(size, last, end, leafHash);
    }
    return new Uint8Array(body.subarray(FRONTIER_HEAD));
  }

  /** Whether a complete record ends exactly at `end`, starts at `last` and has this leaf hash. */
  private async recordAt(last: number, end: number, leafHash: Uint8Array): Promise<boolean> {
    if (!Number.isSafeInteger(last) || last < MAGIC.length || end - last <= HEADER || end - last > HEADER + MAX_ENTRY) return false;
    if (end > (await this.fh.stat()).size) return false;
    const rec = Buffer.alloc(end - last);
    const { bytesRead } = await this.fh.read(rec, 0, rec.length, last);
    if (bytesRead !== rec.length || rec.readUInt32BE(0) !== rec.length - HEADER) return false;
    const stored = rec.subarray(4, HEADER);
    return bytesEqual(stored, leafHash) && bytesEqual(hashLeaf(rec.subarray(HEADER)), stored);
  }

  private async syncDir(dir: string): Promise<void> {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Size in bytes of the entries file (for tests and benchmarks). */
export async function entriesFileSize(dir: string): Promise<number> {
  return (await stat(join(dir, 'entries.dat'))).size;
}

/**
 * The Docker backend's file transfer for an engine reached only over its API (a "remote
 * engine": Docker Desktop, an engine in a VM, tcp://): host trees copied INTO the engine as a tar
 * stream (`packTree`, for PUT /containers/{id}/archive), and a directory the agent wrote copied
 * OUT of it (`extractTree`, of GET /containers/{id}/archive) into the run's staged volume.
 *
 * ARCHITECTURE NOTE (copy-in, `packTree`: the operator's tree, trusted, sent as it is):
 * - the tree is walked first, never following a symbolic link (lstat). Sockets and character
 *   and block devices are left out and listed in `skipped` (they cannot be carried to another
 *   machine, and leaving them out never gives the agent more than a bind mount would: a socket
 *   of this host could only lead back to it, and binds are `nodev`); names (or link targets)
 *   that are not valid UTF-8 (a tar name is a string here) refuse the tree before a single byte
 *   is produced (`sandbox.volume_refused`, naming the path);
 * - kept: directories, regular files (streamed in 64 KiB reads, never whole in memory), symbolic
 *   links as links (target as stored), hard links within the tree as tar `link` entries (same
 *   device and inode as an earlier file of the walk), fifos; numeric uid/gid (pax `uid`/`gid`
 *   when they do not fit the ustar field), permission bits including setuid/setgid/sticky, mtime;
 * - names are relative to the tree (`a`, `d/`, `d/f`): no top entry. The engine applies the
 *   target directory's own entry (`./`) not at all (measured on Docker 20.10: a `./` entry's
 *   mode and owner are ignored), so the volume root keeps the engine's owner and mode;
 * - a file is opened (O_NOFOLLOW|O_NONBLOCK) and must still be the regular file the walk saw
 *   (same device and inode), else the stream fails (`sandbox.volume_failed`); its header size is
 *   its size when opened: a file that GROWS while it is read is sent TRUNCATED to that size, one
 *   that SHRINKS FAILS the stream (`sandbox.volume_failed`). The archive is never corrupt: it is
 *   either whole or ends in an error.
 * LIMITATION (measured on Docker 20.10): the engine extracts a hard link by chowning the shared
 *   inode, which clears a setuid/setgid bit: a setuid file that has a hard link in the tree
 *   arrives without it. Extended attributes and file capabilities are not sent.
 *
 * ARCHITECTURE NOTE (copy-out, `extractTree`: the agent's tree, UNTRUSTED, bounded):
 * - every entry name (and hard link target) goes through the upload rules (`entrySegments`:
 *   relative, no `..`, no NUL or control character, bounded length and depth, `.` segments
 *   dropped), then must lie below `top` (Docker names entries `<basename of the path>/...`;
 *   `.` when the path ends in `/.`); anything else refuses the whole archive
 *   (`sandbox.volume_refused`);
 * - bounds: at most `maxEntries` entries (all types, the top entry included), at most
 *   `maxBytes` of entry data (checked against each header before its data is read, and counted
 *   again from the data written), at most MAX_METADATA_BYTES of names and link targets (they are
 *   held in memory), and the caller's `signal` (a time bound); the event loop gets a turn every
 *   256 entries;
 * - kept: directories, regular files, hard links to a regular file written earlier by this
 *   extraction (by name, below `top`; any other target refuses the archive), symbolic links
 *   as links with their target AS IS (the agent's data: copyBack keeps links as links). Skipped
 *   and reported in `skipped` (never created, the run is not failed for them): fifos,
 *   character and block devices and any other type;
 * - a path keeps the kind its first entry gave it: a directory is never replaced by anything
 *   else and a non-directory never becomes a directory (refused); a later file, hard link or
 *   symbolic link of the same path replaces an earlier non-directory (tar semantics);
 * - no write ever goes through a link the archive made: symbolic links are created only after
 *   every file and directory was written, an entry below a path that is (or will be) a
 *   symbolic link or a file is refused, and every parent component of a write is checked with
 *   lstat to be a real directory on destDir's filesystem, once per directory (a directory is
 *   never replaced during the extraction; this guards against a mistake of this code, not against
 *   another writer: LIMITATION: destDir must be writable by AEGIS only while it runs, as the
 *   staged volume is, under the run directory). Files are created with
 *   O_CREAT|O_EXCL|O_NOFOLLOW (0600 until complete), then owned by the header's numeric uid/gid
 *   (fchown/lchown: the engine made the archive from the real filesystem), mode = header mode &
 *   0777 (no setuid, setgid or sticky bit), mtime kept. The top entry's own owner and mode are
 *   not applied to destDir;
 * - the archive must end with tar's end-of-archive blocks (a stream cut short is refused, even
 *   at an entry boundary);
 * - on an error destDir may be left partly filled (the caller discards it); nothing outside
 *   destDir is ever written.
 * LIMITATION: names longer than the host's PATH_MAX once joined to destDir fail
 *   (`sandbox.volume_failed`). Extended attributes and file capabilities are dropped.
 */
import { once } from 'node:events';
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import tar, { type Header } from 'tar-stream';
import { UploadError } from '../../server/upload/errors.js';
import { entrySegments } from '../../server/upload/extract.js';
import { SandboxError } from '../errors.js';

/** What an archive carried. */
export interface TransferCounts {
  /** Entries (directories, files, links, fifos). */
  readonly entries: number;
  /** Bytes of regular-file data. */
  readonly bytes: number;
}

export interface PackedTree {
  /** The tar stream of the tree; it errors (with the SandboxError) if the tree changed while being read. */
  readonly stream: Readable;
  /** Entries left out (sockets, devices: `path (a socket)`), relative to the tree. */
  readonly skipped: readonly string[];
  /** Resolves once the whole archive was produced; rejects with the stream's error. */
  readonly done: Promise<TransferCounts>;
}

export interface ExtractTreeOptions {
  /**
   * The archive's top directory, stripped: Docker's GET archive of `/some/dir` names entries
   * `dir/...` (top `dir`); of `/some/dir/.`, `./...` (top `.`). Entries outside it are refused.
   */
  readonly top: string;
  /** Most bytes of entry data (file contents) accepted. */
  readonly maxBytes: number;
  /** Most entries accepted (all types, the top directory's own entry included). */
  readonly maxEntries: number;
  /** Longest entry path in bytes. Default 4000. */
  readonly maxPathBytes?: number;
  /** Deepest entry path (segments). Default 256. */
  readonly maxDepth?: number;
  /** Most bytes of entry names and link targets (held in memory). Default MAX_METADATA_BYTES. */
  readonly maxMetadataBytes?: number;
  /** Stops the copy-out (refused) when aborted: a time bound set by the caller. */
  readonly signal?: AbortSignal;
}

export interface ExtractTreeResult extends TransferCounts {
  /** Paths (relative to destDir) of entries not created: fifos, devices, other types. */
  readonly skipped: string[];
}

/** What packTree gives tar-stream for an entry (pax: extra pax keys, uid/gid). */
type PackHeader = Partial<Header> & { name: string; pax?: Record<string, string> };

const READ_CHUNK = 64 * 1024;
/** Largest id the ustar field holds as tar-stream writes it (6 octal digits); larger ones go in pax. */
const USTAR_ID_MAX = 0o777777;
const MAX_ID = 0xfffffffe;
const SYMLINK_TARGET_MAX = 4095;

const refused = (msg: string): SandboxError => new SandboxError('sandbox.volume_refused', msg);
const failed = (msg: string, cause?: unknown): SandboxError => new SandboxError('sandbox.volume_failed', msg, { cause });

// ---------------------------------------------------------------------------------------------
// copy-in

type PlannedType = 'directory' | 'file' | 'link' | 'symlink' | 'fifo';
interface Planned {
  readonly rel: string;
  readonly abs: string;
  readonly type: PlannedType;
  readonly st: Stats;
  readonly linkname?: string;
}

function utf8Name(raw: Buffer, where: string): string {
  const s = raw.toString('utf8');
  if (!Buffer.from(s, 'utf8').equals(raw)) throw refused(`${where}: the name is not valid UTF-8: it cannot be copied into the engine`);
  return s;
}

/** The whole tree, in order (a directory before its contents, names sorted), refusing what cannot be sent. */
async function planTree(root: string): Promise<{ planned: Planned[]; skipped: string[] }> {
  let rootSt: Stats;
  try {
    rootSt = await lstat(root);
  } catch (err) {
    throw failed(`cannot read ${root}: ${(err as Error).message}`, err);
  }
  if (!rootSt.isDirectory()) throw refused(`${root} is not a directory`);
  const out: Planned[] = [];
  const skipped: string[] = [];
  const firstOf = new Map<string, string>();
  const walk = async (absDir: string, relDir: string): Promise<void> => {
    const names = (await readdir(absDir, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const raw of names) {
      const abs = join(absDir, utf8Name(raw, join(absDir, raw.toString('utf8'))));
      const rel = relDir === '' ? raw.toString('utf8') : `${relDir}/${raw.toString('utf8')}`;
      const st = await lstat(abs);
      if (st.isDirectory()) {
        out.push({ rel, abs, type: 'directory', st });
        await walk(abs, rel);
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? firstOf.get(key) : undefined;
        if (first !== undefined) out.push({ rel, abs, type: 'link', st, linkname: first });
        else {
          if (st.nlink > 1) firstOf.set(key, rel);
          out.push({ rel, abs, type: 'file', st });
        }
      } else if (st.isSymbolicLink()) {
        out.push({
          rel,
          abs,
          type: 'symlink',
          st,
          linkname: utf8Name(await readlink(abs, { encoding: 'buffer' }), `the target of ${abs}`),
        });
      } else if (st.isFIFO()) {
        out.push({ rel, abs, type: 'fifo', st });
      } else {
        const what = st.isSocket()
          ? 'a socket'
          : st.isCharacterDevice()
            ? 'a character device'
            : st.isBlockDevice()
              ? 'a block device'
              : 'of an unknown type';
        skipped.push(`${rel} (${what})`);
      }
    }
  };
  try {
    await walk(root, '');
  } catch (err) {
    if (err instanceof SandboxError) throw err;
    throw failed(`cannot read ${root}: ${(err as Error).message}`, err);
  }
  return { planned: out, skipped };
}

function headerOf(e: Planned, size: number): PackHeader {
  const { st } = e;
  const h: PackHeader = {
    name: e.type === 'directory' ? `${e.rel}/` : e.rel,
    type: e.type,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime,
    size,
  };
  if (e.linkname !== undefined) h.linkname = e.linkname;
  if (st.uid > USTAR_ID_MAX || st.gid > USTAR_ID_MAX) h.pax = { uid: String(st.uid), gid: String(st.gid) };
  return h;
}

/** Adds one entry (awaiting its end: tar-stream takes one entry at a time). */
function addEntry(pack: tar.Pack, header: PackHeader, write?: (sink: NodeJS.WritableStream) => Promise<void>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    sink.on('error', () => undefined); // reported through the entry's callback and `done`
    if (write !== undefined)
      write(sink as unknown as NodeJS.WritableStream).then(
        () => void (sink as unknown as NodeJS.WritableStream).end(),
        (err: unknown) => {
          sink.destroy(err as Error);
          reject(err as Error);
        },
      );
  });
}

async function sendFile(pack: tar.Pack, e: Planned, counts: { entries: number; bytes: number }): Promise<void> {
  let fh;
  try {
    fh = await open(e.abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw failed(`${e.abs} changed while being copied into the engine (${(err as NodeJS.ErrnoException).code ?? String(err)})`, err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.dev !== e.st.dev || st.ino !== e.st.ino)
      throw failed(`${e.abs} was replaced while being copied into the engine`);
    const size = st.size;
    await addEntry(pack, headerOf(e, size), async (sink) => {
      let left = size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) throw failed(`${e.abs} shrank while being copied into the engine`);
        left -= bytesRead;
        if (!sink.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) await drained(sink);
      }
    });
    counts.bytes += size;
  } finally {
    await fh.close();
  }
}

/** Waits for 'drain', or rejects when the entry (or the whole pack) is destroyed first. */
async function drained(sink: NodeJS.WritableStream): Promise<void> {
  // streamx: a destroyed entry (the consumer went away) never emits 'drain' nor 'close' again.
  if ((sink as unknown as { destroying: boolean }).destroying) throw new Error('the archive stream was closed');
  const ac = new AbortController();
  try {
    await Promise.race([
      once(sink, 'drain', { signal: ac.signal }),
      once(sink, 'close', { signal: ac.signal }).then(() => {
        throw new Error('the archive stream was closed');
      }),
    ]);
  } finally {
    ac.abort();
  }
}

/**
 * A tar stream of the tree under `dir` (see the ARCHITECTURE NOTE). Throws SandboxError
 * (`sandbox.volume_refused`: a name that is not UTF-8; `sandbox.volume_failed`:
 * unreadable) before producing anything; later problems error the stream and reject `done`.
 */
export async function packTree(dir: string): Promise<PackedTree> {
  const { planned, skipped } = await planTree(dir);
  const pack = tar.pack();
  const counts = { entries: 0, bytes: 0 };
  const produce = async (): Promise<TransferCounts> => {
    for (const e of planned) {
      if (pack.destroying) throw new Error('the archive stream was closed');
      if (e.type === 'file') await sendFile(pack, e, counts);
      else await addEntry(pack, headerOf(e, 0));
      counts.entries++;
    }
    pack.finalize();
    return { entries: counts.entries, bytes: counts.bytes };
  };
  const done = produce().catch((err: unknown) => {
    const e = err instanceof SandboxError ? err : failed(`copying ${dir} into the engine failed: ${(err as Error).message}`, err);
    pack.destroy(e);
    throw e;
  });
  done.catch(() => undefined); // the stream carries the error too: `done` need not be awaited
  const stream = Readable.from(pack as AsyncIterable<Buffer>, { objectMode: false });
  stream.once('close', () => {
    if (!pack.destroyed) pack.destroy(new Error('the archive stream was closed'));
  });
  return { stream, done, skipped };
}

// ---------------------------------------------------------------------------------------------
// copy-out

type Kind = 'dir' | 'file' | 'symlink';

interface PendingLink {
  readonly segments: string[];
  readonly target: string;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: Date | undefined;
}

/** Keeps the last 1024 bytes and the length of the raw stream (the end-of-archive check). */
class Tail extends Transform {
  total = 0;
  tail = Buffer.alloc(0);
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.total += chunk.length;
    this.tail = Buffer.concat([this.tail, chunk.subarray(Math.max(0, chunk.length - 1024))]);
    if (this.tail.length > 1024) this.tail = this.tail.subarray(this.tail.length - 1024);
    cb(null, chunk);
  }
  ended(): boolean {
    return this.total >= 1024 && this.total % 512 === 0 && this.tail.every((b) => b === 0);
  }
}

/** Most bytes of entry names and link targets in one archive (held in memory while it is extracted). */
export const MAX_METADATA_BYTES = 64 * 1024 * 1024;

class Extraction {
  readonly kinds = new Map<string, Kind>();
  /** Directories already checked to be this extraction's (each is lstat-ed once: a directory is never replaced). */
  readonly verified = new Set<string>();
  readonly links = new Map<string, PendingLink>();
  readonly dirTimes = new Map<string, { segments: string[]; mtime: Date }>();
  readonly skipped: string[] = [];
  entries = 0;
  bytes = 0;
  /** Entry data announced by headers so far (all types). */
  announced = 0;
  /** Bytes of names and link targets kept in memory (bounded: MAX_METADATA_BYTES). */
  metadata = 0;
  readonly rootDev: number;

  constructor(
    readonly root: string,
    readonly opts: Required<Omit<ExtractTreeOptions, 'signal'>>,
  ) {
    let st: Stats;
    try {
      st = lstatSync(root);
    } catch (err) {
      throw failed(`cannot extract into ${root}: ${(err as Error).message}`, err);
    }
    if (!st.isDirectory()) throw failed(`cannot extract into ${root}: not a directory`);
    if (readdirSync(root).length > 0) throw failed(`cannot extract into ${root}: it is not empty`);
    this.rootDev = st.dev;
  }

  abs(segments: readonly string[]): string {
    return join(this.root, ...segments);
  }

  /** The entry's path below `top`, or a refusal. */
  relative(name: string, what: string): string[] {
    let segments: string[];
    try {
      segments = entrySegments(name, this.opts);
    } catch (err) {
      if (err instanceof UploadError) throw new SandboxError('sandbox.volume_refused', `${what}: ${err.message}`, { cause: err });
      throw err;
    }
    if (this.opts.top === '.') return segments;
    if (segments[0] !== this.opts.top) throw refused(`${what} ${JSON.stringify(name.slice(0, 200))} is outside ${this.opts.top}/`);
    return segments.slice(1);
  }

  /** Creates missing parents of `segments` and checks each one is a real directory of this extraction. */
  parents(segments: readonly string[], name: string): void {
    let rel = '';
    for (let i = 1; i < segments.length; i++) {
      rel = i === 1 ? segments[0]! : `${rel}/${segments[i - 1]!}`;
      // Made and checked by this extraction already: nothing to do (the common case, O(1)).
      if (this.verified.has(rel)) continue;
      const prefix = segments.slice(0, i);
      const kind = this.kinds.get(rel);
      if (kind === undefined) this.mkdir(prefix, 0o755, undefined);
      else if (kind !== 'dir')
        throw refused(
          `archive entry ${JSON.stringify(name.slice(0, 200))} goes through ${rel}, which is a ${kind === 'file' ? 'file' : 'symbolic link'}`,
        );
      this.checkDir(prefix);
    }
  }

  checkDir(segments: readonly string[]): void {
    const rel = segments.join('/');
    if (this.verified.has(rel)) return;
    const st = lstatSync(this.abs(segments));
    if (!st.isDirectory() || st.dev !== this.rootDev)
      throw failed(`${this.abs(segments)} changed during the extraction: not the directory it made`);
    this.verified.add(rel);
  }

  mkdir(segments: readonly string[], mode: number, owner: { uid: number; gid: number } | undefined): void {
    const path = this.abs(segments);
    mkdirSync(path, { mode: 0o700 });
    this.checkDir(segments);
    if (owner !== undefined) lchownSync(path, owner.uid, owner.gid);
    chmodSync(path, mode & 0o777);
    this.kinds.set(segments.join('/'), 'dir');
  }

  /** Makes room for a new entry of `kind` at `segments` (see the kind rule in the ARCHITECTURE NOTE). */
  claim(segments: readonly string[], kind: Kind, name: string): void {
    const rel = segments.join('/');
    const old = this.kinds.get(rel);
    if (old === undefined) return;
    // A directory given again: the same directory (its owner, mode and time are set again).
    if (old === 'dir' && kind === 'dir') return;
    if ((old === 'dir') !== (kind === 'dir'))
      throw refused(
        `archive entry ${JSON.stringify(name.slice(0, 200))} would turn ${old === 'dir' ? 'a directory into a non-directory' : 'a non-directory into a directory'}`,
      );
    if (old === 'symlink') this.links.delete(rel);
    else if (old === 'file') {
      const st = lstatSync(this.abs(segments));
      if (!st.isFile()) throw failed(`${this.abs(segments)} changed during the extraction: not the file it wrote`);
      unlinkSync(this.abs(segments));
    }
    this.kinds.delete(rel);
  }

  budget(size: number, name: string): void {
    if (size > this.opts.maxBytes - this.announced)
      throw refused(`archive entry ${JSON.stringify(name.slice(0, 200))}: the archive holds more than ${this.opts.maxBytes} bytes`);
    this.announced += size;
  }
}

function ownerOf(h: Header, name: string): { uid: number; gid: number } {
  const id = (field: 'uid' | 'gid'): number => {
    const pax = (h.pax as Record<string, string> | null | undefined)?.[field];
    const v = pax !== undefined ? (/^[0-9]{1,10}$/.test(pax) ? Number(pax) : NaN) : h[field];
    if (v === undefined || !Number.isSafeInteger(v) || v < 0 || v > MAX_ID)
      throw refused(`archive entry ${JSON.stringify(name.slice(0, 200))}: invalid ${field}`);
    return v;
  };
  return { uid: id('uid'), gid: id('gid') };
}

function validTime(d: Date | undefined): Date | undefined {
  return d !== undefined && Number.isFinite(d.getTime()) ? d : undefined;
}

async function writeFile(x: Extraction, segments: string[], h: Header, data: AsyncIterable<Buffer>): Promise<void> {
  const name = h.name;
  const size = h.size ?? 0;
  const owner = ownerOf(h, name);
  if (segments.length === 0) throw refused(`archive entry ${JSON.stringify(name.slice(0, 200))} is a file in place of the top directory`);
  x.claim(segments, 'file', name);
  x.parents(segments, name);
  const fd = openSync(x.abs(segments), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  x.kinds.set(segments.join('/'), 'file');
  try {
    let written = 0;
    for await (const chunk of data) {
      written += chunk.length;
      if (written > size || x.bytes + written > x.opts.maxBytes)
        throw refused(
          `archive entry ${JSON.stringify(name.slice(0, 200))}: more data than its header or the ${x.opts.maxBytes}-byte bound allow`,
        );
      for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off, chunk.length - off);
    }
    if (written !== size) throw refused(`archive entry ${JSON.stringify(name.slice(0, 200))}: truncated`);
    x.bytes += written;
    fchownSync(fd, owner.uid, owner.gid);
    fchmodSync(fd, (h.mode ?? 0o600) & 0o777);
    const t = validTime(h.mtime);
    if (t !== undefined) futimesSync(fd, t, t);
  } finally {
    closeSync(fd);
  }
}

function hardLink(x: Extraction, segments: string[], h: Header): void {
  const name = h.name;
  const target = x.relative(h.linkname ?? '', `the target of hard link ${JSON.stringify(name.slice(0, 200))}`);
  const targetRel = target.join('/');
  if (segments.length === 0 || target.length === 0 || x.kinds.get(targetRel) !== 'file')
    throw refused(`hard link ${JSON.stringify(name.slice(0, 200))}: its target is not a file extracted before it from this archive`);
  if (targetRel === segments.join('/')) throw refused(`hard link ${JSON.stringify(name.slice(0, 200))} names itself`);
  x.claim(segments, 'file', name);
  x.parents(segments, name);
  x.parents(target, name);
  const st = lstatSync(x.abs(target));
  if (!st.isFile() || st.dev !== x.rootDev) throw failed(`${x.abs(target)} changed during the extraction: not the file it wrote`);
  linkSync(x.abs(target), x.abs(segments));
  x.kinds.set(segments.join('/'), 'file');
}

function symlinkEntry(x: Extraction, segments: string[], h: Header): void {
  const name = h.name;
  const target = h.linkname ?? '';
  if (segments.length === 0) throw refused(`archive entry ${JSON.stringify(name.slice(0, 200))} is a link in place of the top directory`);
  if (target === '' || target.includes('\u0000') || Buffer.byteLength(target) > SYMLINK_TARGET_MAX)
    throw refused(`symbolic link ${JSON.stringify(name.slice(0, 200))}: invalid target`);
  const owner = ownerOf(h, name);
  x.claim(segments, 'symlink', name);
  x.parents(segments, name);
  x.kinds.set(segments.join('/'), 'symlink');
  x.links.set(segments.join('/'), { segments, target, ...owner, mtime: validTime(h.mtime) });
}

function directory(x: Extraction, segments: string[], h: Header): void {
  if (segments.length === 0) return; // the top: destDir keeps its own owner and mode
  const owner = ownerOf(h, h.name);
  x.claim(segments, 'dir', h.name);
  x.parents(segments, h.name);
  const rel = segments.join('/');
  if (x.kinds.get(rel) === 'dir') {
    x.checkDir(segments);
    lchownSync(x.abs(segments), owner.uid, owner.gid);
    chmodSync(x.abs(segments), (h.mode ?? 0o755) & 0o777);
  } else x.mkdir(segments, h.mode ?? 0o755, owner);
  const t = validTime(h.mtime);
  if (t !== undefined) x.dirTimes.set(rel, { segments, mtime: t });
}

/** The symbolic links, last (nothing is written after them), then the directories' mtimes. */
function finish(x: Extraction): void {
  for (const l of x.links.values()) {
    for (let i = 1; i < l.segments.length; i++) x.checkDir(l.segments.slice(0, i));
    const path = x.abs(l.segments);
    symlinkSync(l.target, path);
    lchownSync(path, l.uid, l.gid);
    if (l.mtime !== undefined) lutimesSync(path, l.mtime, l.mtime);
  }
  const dirs = [...x.dirTimes.values()].sort((a, b) => b.segments.length - a.segments.length);
  for (const d of dirs) {
    x.checkDir(d.segments);
    lutimesSync(x.abs(d.segments), d.mtime, d.mtime);
  }
}

function asSandboxError(err: unknown): SandboxError {
  if (err instanceof SandboxError) return err;
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.syscall === 'string') {
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT')
      return new SandboxError('sandbox.volume_refused', `the agent's files do not fit the volume (${e.code})`, { cause: err });
    return failed(`writing the agent's files failed: ${e.code ?? e.message}`, err);
  }
  return new SandboxError('sandbox.volume_refused', `the engine's archive is not a valid tar: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

function checkOptions(o: ExtractTreeOptions): Required<Omit<ExtractTreeOptions, 'signal'>> {
  const full = {
    maxPathBytes: 4000,
    maxDepth: 256,
    maxMetadataBytes: o.maxMetadataBytes ?? MAX_METADATA_BYTES,
    top: o.top,
    maxBytes: o.maxBytes,
    maxEntries: o.maxEntries,
  };
  if (o.maxPathBytes !== undefined) full.maxPathBytes = o.maxPathBytes;
  if (o.maxDepth !== undefined) full.maxDepth = o.maxDepth;
  const top = full.top;
  // eslint-disable-next-line no-control-regex
  const topOk = top === '.' || (top !== '' && top !== '..' && !top.includes('/') && !/[\u0000-\u001f\u007f]/.test(top));
  const counts = [full.maxBytes, full.maxEntries, full.maxPathBytes, full.maxDepth, full.maxMetadataBytes].every(
    (n) => Number.isSafeInteger(n) && n >= 0,
  );
  if (!topOk || !counts) throw failed(`extractTree: invalid options (top ${JSON.stringify(top)})`);
  return full;
}

/**
 * Writes the tar `archive` (untrusted: what the agent left in a directory of the engine) into
 * `destDir`, an existing empty directory, under the rules of the ARCHITECTURE NOTE. Throws
 * SandboxError: `sandbox.volume_refused` (the archive breaks a rule or a bound, or is not a
 * whole tar), `sandbox.volume_failed` (writing on this host failed; bad options or destDir).
 */
export async function extractTree(archive: Readable, destDir: string, opts: ExtractTreeOptions): Promise<ExtractTreeResult> {
  let x: Extraction;
  try {
    x = new Extraction(destDir, checkOptions(opts));
  } catch (err) {
    archive.destroy();
    throw err;
  }
  const ex = tar.extract();
  const tail = new Tail();
  let streamError: unknown;
  const fail = (err: unknown): void => {
    streamError ??= err;
    ex.destroy(err as Error);
  };
  archive.on('error', fail);
  tail.on('error', fail);
  archive.pipe(tail).pipe(ex as unknown as NodeJS.WritableStream);
  const onAbort = (): void => fail(refused(`the copy-out took too long: stopped (${String(opts.signal?.reason ?? 'aborted')})`));
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  try {
    for await (const entry of ex) {
      const h = entry.header;
      if (++x.entries > x.opts.maxEntries) throw refused(`the archive has more than ${x.opts.maxEntries} entries`);
      // Every 256 entries, the rest of the process gets its turn (a big tree is synchronous work).
      if (x.entries % 256 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      if (streamError !== undefined) throw streamError;
      const size = h.size ?? 0;
      x.budget(size, h.name);
      const segments = x.relative(h.name, 'archive entry');
      // What the extraction keeps in memory per entry: its path, and a link's target.
      x.metadata += Buffer.byteLength(h.name) + (h.linkname !== undefined && h.linkname !== null ? Buffer.byteLength(h.linkname) : 0);
      if (x.metadata > x.opts.maxMetadataBytes)
        throw refused(`the archive's names and link targets exceed ${x.opts.maxMetadataBytes} bytes`);
      switch (h.type) {
        case 'file':
        case 'contiguous-file':
          await writeFile(x, segments, h, entry as AsyncIterable<Buffer>);
          break;
        case 'directory':
          directory(x, segments, h);
          break;
        case 'link':
          hardLink(x, segments, h);
          break;
        case 'symlink':
          symlinkEntry(x, segments, h);
          break;
        default:
          if (segments.length === 0) throw refused(`the archive's top is a ${String(h.type)}, not a directory`);
          x.skipped.push(segments.join('/'));
      }
      // Whatever data a non-file entry carries is read and dropped (bounded by the budget above).
      for await (const chunk of entry as AsyncIterable<Buffer>) void chunk;
    }
    if (streamError !== undefined) throw streamError;
    if (!tail.ended()) throw refused("the engine's archive ended without tar's end-of-archive blocks: cut short");
    finish(x);
  } catch (err) {
    throw asSandboxError(streamError ?? err);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    archive.destroy();
    tail.destroy();
    ex.destroy();
  }
  return { entries: x.entries, bytes: x.bytes, skipped: x.skipped };
}

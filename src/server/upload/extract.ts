/**
 * Safe extraction of an agent's code archive (`.tar.gz`) uploaded to the server.
 *
 * The archive is UNTRUSTED input: anyone with the deployer role sends it, and the tree it becomes
 * is mounted read-only as the agent's code. The extraction is streamed (gunzip -> tar parser ->
 * files) and bounded at every step; the first violation stops it and nothing is left behind.
 *
 * ARCHITECTURE NOTE (what is refused, and where):
 * - size: the compressed archive (`maxArchiveBytes`, checked before anything is parsed), the
 *   inflated tar stream (`maxTotalBytes` plus the headers' share, counted as it inflates, so a
 *   gzip bomb is stopped after at most that many bytes of work), the files' total size
 *   (`maxTotalBytes`, checked against each header before its data is read), and the inflation
 *   ratio (`maxRatio` times the compressed size, past a 1 MiB floor);
 * - count: at most `maxEntries` entries (directories included);
 * - paths: relative only; no `..` segment, no NUL or control character, at most `maxPathBytes`
 *   bytes and `maxDepth` segments, each at most 255 bytes; a leading `./` and `.` segments are
 *   dropped; an entry may not go through a path that is a file;
 * - types: regular files and directories only. Symlinks are REFUSED (not even ones whose target
 *   stays inside): an agent's code has no need for them, and refusing them means no path in the
 *   tree can lead anywhere else. Hardlinks, character and block devices, fifos and any other type
 *   are refused too;
 * - modes: never taken from the archive as they are: files become 0644, or 0755 when the archive
 *   gave them any execute bit; directories 0755. No setuid, setgid or sticky bit, no group or
 *   world write. Owners are the extracting user's (the archive's uid/gid are ignored);
 * - duplicates: a path given twice (file or directory) is refused; nothing is ever overwritten.
 *
 * Files are written with O_CREAT|O_EXCL|O_NOFOLLOW into a fresh private (0700) temporary
 * directory beside `destDir`, which is renamed to `destDir` only when the whole archive was
 * accepted; on any error the temporary directory is removed, so a refused archive leaves nothing.
 * LIMITATION: `destDir`'s parent must be a directory that only the server writes (the check that
 * `destDir` does not exist and the rename are two steps).
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { UploadError } from './errors.js';

export interface UploadLimits {
  /** Largest compressed archive accepted (bytes). Default 64 MiB. */
  readonly maxArchiveBytes: number;
  /** Largest total size of the files once extracted (bytes). Default 256 MiB. */
  readonly maxTotalBytes: number;
  /** Most entries (files and directories). Default 10,000. */
  readonly maxEntries: number;
  /** Longest entry path (bytes, after normalisation). Default 1024. */
  readonly maxPathBytes: number;
  /** Deepest entry path (segments). Default 32. */
  readonly maxDepth: number;
  /** Largest inflated/compressed ratio once past 1 MiB inflated. Default 200. */
  readonly maxRatio: number;
}

export const DEFAULT_UPLOAD_LIMITS: UploadLimits = {
  maxArchiveBytes: 64 * 1024 * 1024,
  maxTotalBytes: 256 * 1024 * 1024,
  maxEntries: 10_000,
  maxPathBytes: 1024,
  maxDepth: 32,
  maxRatio: 200,
};

/** Below this many inflated bytes the ratio is not checked (tar's 512-byte blocks compress very well). */
const RATIO_FLOOR_BYTES = 1024 * 1024;
/** What the tar format adds per entry at most, beyond the data: a header, a pax header and its data, padding. */
const TAR_OVERHEAD_PER_ENTRY = 4 * 512 + 1024;
const SEGMENT_MAX_BYTES = 255;

export interface ExtractResult {
  /** `sha256:<hex>` of the archive's bytes. */
  readonly digest: string;
  /** Regular files written. */
  readonly files: number;
  /** Directories created (declared or implied). */
  readonly directories: number;
  /** Total size of the files written. */
  readonly bytes: number;
}

/** `sha256:<hex>` of `bytes`: the form of code and manifest digests everywhere in the server. */
export function sha256Digest(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * Normalises an entry name into its segments, or throws `upload.path_refused`. `.` (the root
 * itself) gives [].
 */
export function entrySegments(name: string, limits: Pick<UploadLimits, 'maxPathBytes' | 'maxDepth'>): string[] {
  const refuse = (why: string): never => {
    throw new UploadError('upload.path_refused', `archive entry ${JSON.stringify(name.slice(0, 200))}: ${why}`);
  };
  if (name.startsWith('/')) refuse('absolute paths are refused');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) refuse('control characters in paths are refused');
  const segments = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) refuse('".." segments are refused');
  const joined = segments.join('/');
  if (Buffer.byteLength(joined) > limits.maxPathBytes) refuse(`the path is longer than ${limits.maxPathBytes} bytes`);
  if (segments.length > limits.maxDepth) refuse(`the path is deeper than ${limits.maxDepth} directories`);
  if (segments.some((s) => Buffer.byteLength(s) > SEGMENT_MAX_BYTES)) refuse(`a path segment is longer than ${SEGMENT_MAX_BYTES} bytes`);
  return segments;
}

/** Counts the inflated bytes and stops the stream at the size and ratio bounds. */
class InflateBound extends Transform {
  private seen = 0;
  constructor(
    private readonly maxBytes: number,
    private readonly maxRatioBytes: number,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.maxRatioBytes) {
      cb(new UploadError('upload.ratio_exceeded', `the archive inflates to more than ${this.maxRatioBytes} bytes: refused as a gzip bomb`));
    } else if (this.seen > this.maxBytes) {
      cb(new UploadError('upload.content_too_large', `the archive inflates to more than ${this.maxBytes} bytes`));
    } else cb(null, chunk);
  }
}

/** The archive in 64 KiB slices, so that the bounds stop inflation early. */
function* slices(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += 65536) yield buf.subarray(i, i + 65536);
}

type EntryKind = 'file' | 'dir';

/** Extraction state: the paths seen so far and the totals. */
class Tree {
  readonly kinds = new Map<string, EntryKind>();
  /** Directories given by an entry of their own (not only implied by a deeper path). */
  readonly declared = new Set<string>();
  files = 0;
  directories = 0;
  bytes = 0;
  entries = 0;
  constructor(
    readonly root: string,
    readonly limits: UploadLimits,
  ) {}

  /** Creates the directories above `segments` (refusing to go through a file). */
  ensureParents(segments: readonly string[], name: string): void {
    for (let i = 1; i < segments.length; i++) {
      const rel = segments.slice(0, i).join('/');
      const kind = this.kinds.get(rel);
      if (kind === 'file')
        throw new UploadError('upload.path_refused', `archive entry ${JSON.stringify(name)} goes through the file ${rel}`);
      if (kind === undefined) this.mkdir(rel);
    }
  }

  mkdir(rel: string): void {
    // mkdir does not follow a final symlink, and no symlink can exist here (none is ever written).
    mkdirSync(join(this.root, rel), { mode: 0o755 });
    chmodSync(join(this.root, rel), 0o755); // whatever the umask
    this.kinds.set(rel, 'dir');
    this.directories++;
  }
}

function addDirectory(tree: Tree, segments: readonly string[], name: string): void {
  const rel = segments.join('/');
  const kind = tree.kinds.get(rel);
  if (kind === 'file') throw new UploadError('upload.duplicate_entry', `archive entry ${JSON.stringify(name)} appears twice`);
  tree.ensureParents(segments, name);
  // A directory implied earlier by a file's path and declared now is not a duplicate; twice declared is.
  if (tree.declared.has(rel)) throw new UploadError('upload.duplicate_entry', `archive entry ${JSON.stringify(name)} appears twice`);
  if (kind === undefined) tree.mkdir(rel);
  tree.declared.add(rel);
}

async function addFile(
  tree: Tree,
  segments: readonly string[],
  name: string,
  mode: number,
  size: number,
  data: AsyncIterable<Buffer>,
): Promise<void> {
  const rel = segments.join('/');
  if (tree.kinds.has(rel)) throw new UploadError('upload.duplicate_entry', `archive entry ${JSON.stringify(name)} appears twice`);
  if (tree.bytes + size > tree.limits.maxTotalBytes) {
    throw new UploadError('upload.content_too_large', `the archive's files total more than ${tree.limits.maxTotalBytes} bytes`);
  }
  tree.ensureParents(segments, name);
  tree.kinds.set(rel, 'file');
  const fileMode = (mode & 0o111) !== 0 ? 0o755 : 0o644;
  const fd = openSync(join(tree.root, rel), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    let written = 0;
    for await (const chunk of data) {
      written += chunk.length;
      if (written > size) throw new UploadError('upload.corrupt', `archive entry ${JSON.stringify(name)} is longer than its header says`);
      for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off, chunk.length - off);
    }
    tree.bytes += written;
    fchmodSync(fd, fileMode);
  } finally {
    closeSync(fd);
  }
  tree.files++;
}

/** Turns an error of the pipeline (zlib, tar-stream, fs) into an UploadError. */
function asUploadError(err: unknown): UploadError {
  if (err instanceof UploadError) return err;
  const e = err as NodeJS.ErrnoException;
  if (typeof e.code === 'string' && e.code.startsWith('Z_'))
    return new UploadError('upload.corrupt', `the gzip stream is corrupt (${e.message})`, { cause: err });
  if (typeof e.syscall === 'string')
    return new UploadError('upload.io', `cannot write the extracted code (${e.code ?? e.message})`, { cause: err });
  return new UploadError('upload.corrupt', `the archive is not a valid tar.gz (${e.message})`, { cause: err });
}

/**
 * Extracts `archive` (a `.tar.gz`) into `destDir`, which must not exist yet; its parent must.
 * Throws UploadError (nothing written) or returns the archive's digest and what was written.
 */
export async function extractCodeArchive(archive: Buffer, destDir: string, limits: Partial<UploadLimits> = {}): Promise<ExtractResult> {
  const lim: UploadLimits = { ...DEFAULT_UPLOAD_LIMITS, ...limits };
  if (archive.length > lim.maxArchiveBytes) {
    throw new UploadError('upload.archive_too_large', `the code archive is ${archive.length} bytes; the limit is ${lim.maxArchiveBytes}`);
  }
  if (archive.length < 2 || archive[0] !== 0x1f || archive[1] !== 0x8b) {
    throw new UploadError('upload.not_gzip', 'the code archive is not gzip-compressed (a .tar.gz is expected)');
  }
  const digest = sha256Digest(archive);
  if (lstatExists(destDir)) throw new UploadError('upload.destination_exists', `${destDir} exists already`);
  let tmp: string;
  try {
    tmp = mkdtempSync(join(dirname(destDir), `.${basename(destDir)}.upload-`));
  } catch (err) {
    throw asUploadError(err);
  }
  const tree = new Tree(tmp, lim);
  const ex = tar.extract();
  const inflateLimit = lim.maxTotalBytes + lim.maxEntries * TAR_OVERHEAD_PER_ENTRY + 10240;
  const ratioLimit = Math.max(RATIO_FLOOR_BYTES, archive.length * lim.maxRatio);
  const source = Readable.from(slices(archive));
  const gunzip = createGunzip();
  const bound = new InflateBound(inflateLimit, ratioLimit);
  // The first stream error (a bound, a corrupt gzip) is the reason; it ends the tar iteration.
  let streamError: unknown;
  const fail = (err: unknown): void => {
    streamError ??= err;
    ex.destroy(err as Error);
  };
  for (const s of [source, gunzip, bound]) s.on('error', fail);
  source
    .pipe(gunzip)
    .pipe(bound)
    .pipe(ex as unknown as NodeJS.WritableStream);
  try {
    try {
      for await (const entry of ex) {
        if (++tree.entries > lim.maxEntries)
          throw new UploadError('upload.too_many_entries', `the archive has more than ${lim.maxEntries} entries`);
        const h = entry.header;
        const segments = entrySegments(h.name, lim);
        if (h.type === 'directory') {
          entry.resume();
          if (segments.length > 0) addDirectory(tree, segments, h.name);
        } else if (h.type === 'file' || h.type === 'contiguous-file') {
          if (segments.length === 0)
            throw new UploadError('upload.path_refused', `archive entry ${JSON.stringify(h.name)} is a file at the root`);
          await addFile(tree, segments, h.name, h.mode, h.size, entry as AsyncIterable<Buffer>);
        } else {
          const type = String(h.type ?? 'entry of an unknown type');
          throw new UploadError(
            'upload.entry_refused',
            `archive entry ${JSON.stringify(h.name)} is a ${type}: only regular files and directories are accepted`,
          );
        }
      }
    } catch (err) {
      throw asUploadError(streamError ?? err);
    } finally {
      for (const s of [source, gunzip, bound]) s.destroy();
      ex.destroy();
    }
    if (streamError !== undefined) throw asUploadError(streamError);
    if (lstatExists(destDir)) throw new UploadError('upload.destination_exists', `${destDir} exists already`);
    try {
      chmodSync(tmp, 0o755);
      renameSync(tmp, destDir);
    } catch (err) {
      throw asUploadError(err);
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return { digest, files: tree.files, directories: tree.directories, bytes: tree.bytes };
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

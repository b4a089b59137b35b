/**
 * The content-addressed image store on disk (adapter). One store per host, shared by every
 * user and every AEGIS_HOME:
 *
 *     $AEGIS_IMAGES/                 default /var/lib/aegis/images, owned by the store owner
 *       tags.json                    name:tag -> digest (see tags.ts)
 *       sha256/<hex>/                one image; <hex> is its digest
 *         image.index                top-level entries + hash of files.manifest; sha256(file) == digest
 *         files.manifest             canonical listing of every file (manifest.ts)
 *         image.json                 informational metadata (source, config); NOT covered by the digest
 *         rootfs/                    the tree, mounted read-only by the sandbox
 *       tmp/                         staging for builds and imports (0700)
 *       cache/                       debootstrap package cache
 *
 * ARCHITECTURE NOTE (what `resolveImage` checks before every run, in about a millisecond):
 * 1. the reference resolves (pinned digest, or the tag index) to a digest present in the store;
 * 2. the store directory, the image directory, files.manifest and rootfs/ are real directories
 *    / files (not symlinks), owned by the store owner (the owner of $AEGIS_IMAGES, which must be
 *    root or the current user) and not writable by group or others;
 * 3. image.index hashes to the digest (the index was not edited or truncated);
 * 4. the rootfs top level (every entry directly under rootfs/) matches the index in type,
 *    mode, owner, size and link target, with nothing added or missing.
 * LIMITATION: nothing below the top level is looked at per run, and files.manifest is not
 * re-hashed per run: a writer with the store owner's privileges (root) can change a file deeper
 * in the tree without the per-run check noticing. `aegis image verify <ref>` checks
 * files.manifest against the index and re-hashes every file (~0.4 s for python:3.11);
 * `--stat` compares every entry's type, mode, owner, size and link target without reading
 * content (~0.15 s); `resolveImage(..., { verify: 'stat' | 'full' })` runs either before a start.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  type Stats,
  writeFileSync,
} from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import type { ImageRef } from '../policy/types.js';
import { ImageError } from './errors.js';
import {
  type Difference,
  diffManifests,
  type FileEntry,
  manifestDigest,
  parseIndex,
  parseManifest,
  serializeIndex,
  serializeManifest,
} from './manifest.js';
import { type Digest, isDigest, normalizeDigest, type RefOrDigest, tagKey } from './ref.js';
import { DEFAULT_IMAGES_DIR } from '../config/index.js';
import { withPidLock } from '../host/pid-lock.js';
import { howToObtain } from './recipes.js';
import { parseTagIndex, serializeTagIndex, tagsOf } from './tags.js';
import { MAX_RECORD_BYTES, parseSignatureRecord, type SignatureRecord } from './signature.js';

/** The store directory when none is given ($AEGIS_IMAGES is read by src/config and passed in). */
export { DEFAULT_IMAGES_DIR };

export interface ResolvedImage {
  ref: string;
  /** `sha256:<hex>` */
  digest: string;
  /** Absolute path of the rootfs directory; mount it read-only. */
  rootfs: string;
}

/** Informational record stored as image.json (not covered by the digest). */
export interface ImageRecord {
  version: 1;
  digest: Digest;
  created: string;
  source: Record<string, string | number | boolean | null>;
  /** Image config from an imported OCI image (Env, Entrypoint, Cmd, WorkingDir, User). */
  config: { env: string[]; entrypoint: string[]; cmd: string[]; workingDir: string; user: string };
  files: number;
  bytes: number;
}

export const paths = {
  tags: (dir: string) => join(dir, 'tags.json'),
  lock: (dir: string) => join(dir, 'tags.lock'),
  image: (dir: string, d: Digest) => join(dir, 'sha256', d.slice(7)),
  index: (dir: string, d: Digest) => join(dir, 'sha256', d.slice(7), 'image.index'),
  manifest: (dir: string, d: Digest) => join(dir, 'sha256', d.slice(7), 'files.manifest'),
  record: (dir: string, d: Digest) => join(dir, 'sha256', d.slice(7), 'image.json'),
  rootfs: (dir: string, d: Digest) => join(dir, 'sha256', d.slice(7), 'rootfs'),
  tmp: (dir: string) => join(dir, 'tmp'),
  cache: (dir: string) => join(dir, 'cache'),
  /** Signatures of one image: `<keyId hex>.json` each (signature.ts). Outside sha256/ so signing never touches the image. */
  signatures: (dir: string, d: Digest) => join(dir, 'signatures', d.slice(7)),
};

// ---------------------------------------------------------------------------------------------
// Reading

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ImageError('image.corrupt', `cannot stat ${p}: ${(err as Error).message}`, { cause: err });
  }
}

/** Store owner: uid of the store directory; it must be root or the current user. */
function storeOwner(dir: string, wanted = 'python:3.11'): number {
  const st = lstatOrNull(dir);
  if (!st) throw new ImageError('image.not_found', `no image store at ${dir}: run \`${howToObtain(wanted)}\` (or set AEGIS_IMAGES)`);
  checkSecure(dir, st, st.uid, 'd');
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== me)
    throw new ImageError('image.insecure', `${dir} is owned by uid ${st.uid}, neither root nor the current user`);
  return st.uid;
}

function checkSecure(p: string, st: Stats, owner: number, type: 'd' | 'f'): void {
  if (st.isSymbolicLink()) throw new ImageError('image.insecure', `${p} is a symbolic link`);
  if (type === 'd' ? !st.isDirectory() : !st.isFile())
    throw new ImageError('image.corrupt', `${p} is not a ${type === 'd' ? 'directory' : 'regular file'}`);
  if (st.uid !== owner) throw new ImageError('image.insecure', `${p} is owned by uid ${st.uid}, not the store owner (uid ${owner})`);
  if (st.mode & 0o022)
    throw new ImageError('image.insecure', `${p} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
}

/** Reads a small store file without following links; checks owner and mode on the open fd. */
function readSecure(p: string, owner: number, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = openSync(p, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ImageError('image.insecure', `${p} is a symbolic link`);
    throw new ImageError('image.corrupt', `cannot read ${p}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    checkSecure(p, st, owner, 'f');
    if (st.size > maxBytes) throw new ImageError('image.corrupt', `${p} is too large (${st.size} bytes)`);
    const buf = Buffer.allocUnsafe(st.size);
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;
const MAX_INDEX_BYTES = 1024 * 1024;

export function readTagIndex(dir: string, owner = storeOwner(dir)): Map<string, Digest> {
  if (!lstatOrNull(paths.tags(dir))) return new Map();
  return parseTagIndex(readSecure(paths.tags(dir), owner, 4 * 1024 * 1024).toString('utf8'));
}

/** Digest a reference or digest names in the store (does not check the image itself). */
export function lookup(dir: string, what: RefOrDigest, owner = storeOwner(dir)): { ref: string; digest: Digest } {
  if (what.kind === 'digest') return { ref: what.digest, digest: what.digest };
  if (what.ref.digest !== null) {
    const d = normalizeDigest(what.ref.digest);
    if (!d) throw new ImageError('image.bad_ref', `${what.ref.ref}: bad digest`);
    return { ref: what.ref.ref, digest: d };
  }
  const d = readTagIndex(dir, owner).get(tagKey(what.ref));
  if (!d) {
    throw new ImageError('image.not_found', `image ${what.ref.ref} is not in the store ${dir}: run \`${howToObtain(tagKey(what.ref))}\``);
  }
  return { ref: what.ref.ref, digest: d };
}

function sameMeta(e: FileEntry, st: Stats, abs: string): boolean {
  if ((st.mode & 0o7777) !== e.mode || st.uid !== e.uid || st.gid !== e.gid) return false;
  switch (e.type) {
    case 'd':
      return st.isDirectory();
    case 'f':
      return st.isFile() && st.size === e.size;
    case 'l':
      return st.isSymbolicLink() && readlinkTarget(abs) === e.target;
  }
}

function readlinkTarget(abs: string): string | null {
  try {
    return readlinkSync(abs);
  } catch {
    return null;
  }
}

export type VerifyMode = 'quick' | 'stat' | 'full';

export interface VerifyResult {
  ref: string;
  digest: Digest;
  rootfs: string;
  mode: VerifyMode;
  differences: Difference[];
}

interface Opened {
  ref: string;
  digest: Digest;
  owner: number;
  rootfs: string;
  rootSt: Stats;
  indexText: string;
  index: ReturnType<typeof parseIndex>;
}

/** Steps 1-3 of the per-run checks (see the ARCHITECTURE NOTE above). */
function openImage(dir: string, what: RefOrDigest): Opened {
  const owner = storeOwner(dir, what.kind === 'ref' ? tagKey(what.ref) : undefined);
  const { ref, digest } = lookup(dir, what, owner);
  const imgDir = paths.image(dir, digest);
  const imgSt = lstatOrNull(imgDir);
  if (!imgSt) {
    const hint = what.kind === 'ref' ? `run \`${howToObtain(tagKey(what.ref))}\`` : 'build or import it';
    throw new ImageError('image.not_found', `image ${digest} (${ref}) is not in the store ${dir}: ${hint}`);
  }
  checkSecure(imgDir, imgSt, owner, 'd');
  const sub = lstatOrNull(join(dir, 'sha256'));
  if (sub) checkSecure(join(dir, 'sha256'), sub, owner, 'd');
  const indexBytes = readSecure(paths.index(dir, digest), owner, MAX_INDEX_BYTES);
  if (manifestDigest(indexBytes) !== digest) {
    throw new ImageError(
      'image.digest_mismatch',
      `image ${ref}: image.index does not hash to ${digest}; the image was modified: remove and rebuild it`,
    );
  }
  const indexText = indexBytes.toString('utf8');
  const index = parseIndex(indexText);
  const rootfs = paths.rootfs(dir, digest);
  const rootSt = lstatOrNull(rootfs);
  if (!rootSt) throw new ImageError('image.corrupt', `image ${ref}: ${rootfs} is missing`);
  checkSecure(rootfs, rootSt, owner, 'd');
  return { ref, digest, owner, rootfs, rootSt, indexText, index };
}

/** Step 4: the rootfs top level against the index. */
function topLevelDifferences(o: Opened): Difference[] {
  const differences: Difference[] = [];
  const top = new Map(o.index.top.map((e) => [e.path, e]));
  const root = top.get('.');
  if (!root || root.mode !== (o.rootSt.mode & 0o7777) || root.uid !== o.rootSt.uid || root.gid !== o.rootSt.gid)
    differences.push({ path: '.', kind: 'changed' });
  const seen = new Set<string>();
  for (const name of readdirSync(o.rootfs)) {
    seen.add(name);
    const e = top.get(name);
    const abs = join(o.rootfs, name);
    if (!e) differences.push({ path: name, kind: 'added' });
    else if (!sameMeta(e, lstatSync(abs), abs)) differences.push({ path: name, kind: 'changed' });
  }
  for (const p of top.keys()) if (p !== '.' && !seen.has(p)) differences.push({ path: p, kind: 'missing' });
  return differences;
}

/** The per-run checks only (synchronous; what `resolveImage` does before every start). */
export function checkImageQuick(dir: string, what: RefOrDigest): VerifyResult {
  const o = openImage(dir, what);
  return { ref: o.ref, digest: o.digest, rootfs: o.rootfs, mode: 'quick', differences: topLevelDifferences(o) };
}

/**
 * Opens an image and runs the per-run checks; with `mode` 'stat' | 'full' also checks
 * files.manifest against the index and walks the whole rootfs (the walker is loaded only then,
 * keeping the per-run path small). Returns differences instead of throwing on them.
 */
export async function checkImage(dir: string, what: RefOrDigest, mode: VerifyMode = 'quick'): Promise<VerifyResult> {
  if (mode === 'quick') return checkImageQuick(dir, what);
  const o = openImage(dir, what);
  const manifestBytes = readSecure(paths.manifest(dir, o.digest), o.owner, MAX_MANIFEST_BYTES);
  if (manifestDigest(manifestBytes) !== o.index.manifest) {
    throw new ImageError(
      'image.digest_mismatch',
      `image ${o.ref}: files.manifest does not match the hash in image.index; the image was modified: remove and rebuild it`,
    );
  }
  const text = manifestBytes.toString('utf8');
  if (serializeIndex(text) !== o.indexText)
    throw new ImageError('image.digest_mismatch', `image ${o.ref}: image.index does not match files.manifest`);
  const expected = parseManifest(text);
  const { walkRootfs } = await import('./walk.js');
  const actual = walkRootfs(o.rootfs, { hash: mode === 'full' });
  const differences = diffManifests(expected, actual.entries, { content: mode === 'full' });
  for (const p of actual.skipped) differences.push({ path: p, kind: 'added' });
  return { ref: o.ref, digest: o.digest, rootfs: o.rootfs, mode, differences };
}

function refuse(r: VerifyResult): ResolvedImage {
  if (r.differences.length) {
    const first = r.differences.slice(0, 5).map((d) => `${d.kind} ${d.path}${d.fields ? ` (${d.fields.join(',')})` : ''}`);
    throw new ImageError(
      'image.digest_mismatch',
      `image ${r.ref} (${r.digest}) no longer matches its digest: ${first.join('; ')}${r.differences.length > 5 ? '; ...' : ''}; run \`aegis image verify ${r.ref}\``,
    );
  }
  return { ref: r.ref, digest: r.digest, rootfs: r.rootfs };
}

function storeDir(opts: { imagesDir?: string }): string {
  const dir = opts.imagesDir ?? DEFAULT_IMAGES_DIR;
  if (!isAbsolute(dir)) throw new ImageError('image.bad_ref', `images directory must be absolute: ${dir}`);
  return dir;
}

/**
 * Resolves an image reference to a verified, read-only rootfs with the per-run checks.
 * Throws ImageError: image.not_found, image.digest_mismatch, image.corrupt, image.insecure, image.bad_ref.
 */
export function resolveImageSync(image: ImageRef, opts: { imagesDir?: string } = {}): ResolvedImage {
  return refuse(checkImageQuick(storeDir(opts), { kind: 'ref', ref: image }));
}

/** As resolveImageSync; `verify: 'stat' | 'full'` adds the whole-tree checks. */
export async function resolveImageChecked(image: ImageRef, opts: { imagesDir?: string; verify?: VerifyMode } = {}): Promise<ResolvedImage> {
  return refuse(await checkImage(storeDir(opts), { kind: 'ref', ref: image }, opts.verify ?? 'quick'));
}

export interface ImageInfo {
  digest: Digest;
  tags: string[];
  record: ImageRecord | null;
  /** Set when image.json is unreadable; the image itself may still be fine. */
  problem?: string;
}

export function listImages(dir: string): ImageInfo[] {
  const st = lstatOrNull(dir);
  if (!st) return [];
  const owner = storeOwner(dir);
  const index = readTagIndex(dir, owner);
  const base = join(dir, 'sha256');
  const out: ImageInfo[] = [];
  const names = lstatOrNull(base) ? readdirSync(base) : [];
  for (const hex of names.sort()) {
    const digest = `sha256:${hex}`;
    if (!isDigest(digest)) continue;
    const info: ImageInfo = { digest, tags: tagsOf(index, digest), record: null };
    try {
      info.record = parseRecord(readSecure(paths.record(dir, digest), owner, 1024 * 1024).toString('utf8'), digest);
    } catch (err) {
      info.problem = (err as Error).message;
    }
    out.push(info);
  }
  // Tags pointing at digests no longer present.
  for (const [k, d] of index) {
    if (!names.includes(d.slice(7))) out.push({ digest: d, tags: [k], record: null, problem: 'image directory is missing' });
  }
  return out;
}

/** Parses image.json (untrusted). */
export function parseRecord(text: string, digest: Digest): ImageRecord {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ImageError('image.corrupt', 'image.json is not JSON');
  }
  const o = v as Partial<ImageRecord> | null;
  if (!o || typeof o !== 'object' || o.version !== 1 || o.digest !== digest)
    throw new ImageError('image.corrupt', 'image.json does not describe this image');
  const strs = (x: unknown): string[] => (Array.isArray(x) && x.every((s) => typeof s === 'string') ? (x as string[]) : []);
  const c = (typeof o.config === 'object' && o.config !== null ? o.config : {}) as Partial<ImageRecord['config']>;
  return {
    version: 1,
    digest,
    created: typeof o.created === 'string' ? o.created : '',
    source: typeof o.source === 'object' && o.source !== null ? o.source : {},
    config: {
      env: strs(c.env),
      entrypoint: strs(c.entrypoint),
      cmd: strs(c.cmd),
      workingDir: typeof c.workingDir === 'string' ? c.workingDir : '',
      user: typeof c.user === 'string' ? c.user : '',
    },
    files: typeof o.files === 'number' ? o.files : 0,
    bytes: typeof o.bytes === 'number' ? o.bytes : 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Creates the store directories (0755, tmp 0700) if missing; returns the store owner. */
export function ensureStore(dir: string): number {
  if (!isAbsolute(dir)) throw new ImageError('image.bad_ref', `images directory must be absolute: ${dir}`);
  // Modes are set explicitly on creation: a restrictive umask (077) must not make the store
  // unreadable to the non-root users who run sandboxes. Existing directories are left alone.
  const made = (p: string, mode: number) => {
    const first = mkdirSync(p, { recursive: true, mode });
    if (first === undefined) return;
    // Every directory created on the way (e.g. /var/lib/aegis) gets 0755, the last one `mode`.
    for (let q = p; q.length >= first.length; q = dirname(q)) {
      chmodSync(q, q === p ? mode : 0o755);
      if (q === first) break;
    }
  };
  made(dir, 0o755);
  made(join(dir, 'sha256'), 0o755);
  made(paths.tmp(dir), 0o700);
  made(paths.cache(dir), 0o700);
  return storeOwner(dir);
}

/** A fresh staging directory under tmp/ (same filesystem as the store, so commit is a rename). */
export function makeStaging(dir: string, label: string): string {
  ensureStore(dir);
  const p = join(paths.tmp(dir), `${label}-${process.pid}-${randomBytes(6).toString('hex')}`);
  mkdirSync(p, { mode: 0o700 });
  return p;
}

/** Runs `fn` holding the store's tag lock (a pid-file lock, src/host/pid-lock.ts). */
export function withStoreLock<T>(dir: string, fn: () => T, timeoutMs = 30_000): Promise<T> {
  return withPidLock(paths.lock(dir), fn, { timeoutMs, error: (message, cause) => new ImageError('image.locked', message, { cause }) });
}

function writeAtomic(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, data, { mode: 0o644, flag: 'wx' });
  chmodSync(tmp, 0o644);
  renameSync(tmp, path);
}

export interface CommitResult {
  digest: Digest;
  /** False when the store already held an image with this digest (the staging copy was dropped). */
  created: boolean;
  files: number;
  bytes: number;
  /** Entries dropped because they cannot be stored (devices, FIFOs, sockets). */
  skipped: string[];
}

/**
 * Seals a staged rootfs (`<staging>/rootfs`) into the store: fixes the rootfs directory itself to
 * 0755 owned by the store owner, walks and hashes every file, writes files.manifest and
 * image.json, renames the staging directory to sha256/<hex>, then points `tags` at it.
 */
export async function commitImage(
  dir: string,
  staging: string,
  meta: { source: ImageRecord['source']; config?: Partial<ImageRecord['config']> },
  tags: readonly string[],
  now: () => Date = () => new Date(),
): Promise<CommitResult> {
  const owner = ensureStore(dir);
  const rootfs = join(staging, 'rootfs');
  chownSync(rootfs, owner, owner);
  chmodSync(rootfs, 0o755);
  const { walkRootfs } = await import('./walk.js');
  const walk = walkRootfs(rootfs, { hash: true });
  const text = serializeManifest(walk.entries);
  const indexText = serializeIndex(text);
  const digest = manifestDigest(indexText);
  const record: ImageRecord = {
    version: 1,
    digest,
    created: now().toISOString(),
    source: meta.source,
    config: { env: [], entrypoint: [], cmd: [], workingDir: '', user: '', ...meta.config },
    files: walk.entries.length,
    bytes: walk.bytes,
  };
  writeFileSync(join(staging, 'files.manifest'), text, { mode: 0o644 });
  writeFileSync(join(staging, 'image.index'), indexText, { mode: 0o644 });
  writeFileSync(join(staging, 'image.json'), JSON.stringify(record, null, 2) + '\n', { mode: 0o644 });
  for (const f of ['files.manifest', 'image.index', 'image.json']) chmodSync(join(staging, f), 0o644);
  chmodSync(staging, 0o755);
  // Skipped entries (devices etc.) are not part of the image: remove them so the rootfs matches.
  for (const p of walk.skipped) rmSync(join(rootfs, p), { force: true });
  let created = true;
  await withStoreLock(dir, () => {
    const target = paths.image(dir, digest);
    if (lstatOrNull(target)) {
      created = false;
    } else {
      renameSync(staging, target);
    }
    const index = readTagIndex(dir, owner);
    for (const t of tags) index.set(t, digest);
    if (tags.length) writeAtomic(paths.tags(dir), serializeTagIndex(index));
  });
  if (!created) rmSync(staging, { recursive: true, force: true });
  return { digest, created, files: walk.entries.length, bytes: walk.bytes, skipped: walk.skipped };
}

export interface RemoveResult {
  untagged: string[];
  removed: Digest[];
}

/**
 * `name:tag`: removes the tag, and the image if no other tag points at it.
 * `sha256:...`: removes the image; refused while tags point at it unless `force` (which also
 * removes those tags).
 */
export async function removeImage(dir: string, what: RefOrDigest, opts: { force?: boolean } = {}): Promise<RemoveResult> {
  const owner = storeOwner(dir);
  return withStoreLock(dir, () => {
    const index = readTagIndex(dir, owner);
    const res: RemoveResult = { untagged: [], removed: [] };
    let digest: Digest;
    if (what.kind === 'ref') {
      const k = tagKey(what.ref);
      const d = index.get(k);
      if (!d) throw new ImageError('image.not_found', `no tag ${k} in ${dir}`);
      if (what.ref.digest !== null && d.slice(7) !== what.ref.digest)
        throw new ImageError('image.not_found', `${k} points at ${d}, not ${what.ref.digest}`);
      index.delete(k);
      res.untagged.push(k);
      digest = d;
    } else {
      digest = what.digest;
      const users = tagsOf(index, digest);
      if (users.length && !opts.force)
        throw new ImageError('image.in_use', `${digest} is tagged ${users.join(', ')}; remove the tags or use --force`);
      for (const k of users) index.delete(k);
      res.untagged.push(...users);
    }
    if (res.untagged.length) writeAtomic(paths.tags(dir), serializeTagIndex(index));
    const img = paths.image(dir, digest);
    if (tagsOf(index, digest).length === 0 && lstatOrNull(img)) {
      // Rename out of sha256/ first so a half-deleted image is never visible under its digest.
      const trash = join(paths.tmp(dir), `rm-${digest.slice(7, 19)}-${randomBytes(4).toString('hex')}`);
      renameSync(img, trash);
      rmSync(trash, { recursive: true, force: true });
      rmSync(paths.signatures(dir, digest), { recursive: true, force: true });
      res.removed.push(digest);
    } else if (what.kind === 'digest' && !lstatOrNull(img)) {
      throw new ImageError('image.not_found', `${digest} is not in ${dir}`);
    }
    return res;
  });
}

/**
 * `aegis image tag <src> <dst>`: points tag `dst` (name:tag) at the image `src` names (a tag,
 * a pinned ref or a digest). The image must be in the store; an existing `dst` is moved.
 */
export async function tagImage(dir: string, src: RefOrDigest, dst: ImageRef): Promise<{ tag: string; digest: Digest }> {
  if (dst.digest !== null) throw new ImageError('image.bad_ref', `${dst.ref}: a new tag cannot carry a digest`);
  const owner = storeOwner(dir);
  return withStoreLock(dir, () => {
    const { digest } = lookup(dir, src, owner);
    if (!lstatOrNull(paths.image(dir, digest))) throw new ImageError('image.not_found', `${digest} is not in ${dir}`);
    const index = readTagIndex(dir, owner);
    const tag = tagKey(dst);
    index.set(tag, digest);
    writeAtomic(paths.tags(dir), serializeTagIndex(index));
    return { tag, digest };
  });
}

/** A reference or digest resolved to a rootfs with `mode` checks (sbom, scan); throws on any difference. */
export async function openImageChecked(dir: string, what: RefOrDigest, mode: VerifyMode = 'stat'): Promise<ResolvedImage> {
  return refuse(await checkImage(dir, what, mode));
}

// ---------------------------------------------------------------------------------------------
// Signatures (signature.ts says what is signed and how a record is checked)

/** At most this many signature records are read per image (stored data is untrusted). */
const MAX_SIGNATURES = 64;

/**
 * Stores a signature record of an image in the store (replacing an earlier one by the same key).
 * Only the store owner can: the store's own checks refuse a signatures folder anyone else wrote.
 */
export async function writeSignature(
  dir: string,
  what: RefOrDigest,
  record: SignatureRecord,
): Promise<{ ref: string; digest: Digest; path: string }> {
  const owner = storeOwner(dir);
  return withStoreLock(dir, () => {
    const { ref, digest } = lookup(dir, what, owner);
    if (!lstatOrNull(paths.image(dir, digest))) throw new ImageError('image.not_found', `${digest} is not in ${dir}`);
    const sigDir = paths.signatures(dir, digest);
    mkdirSync(sigDir, { recursive: true, mode: 0o755 });
    for (const p of [join(dir, 'signatures'), sigDir]) checkSecure(p, lstatSync(p), owner, 'd');
    const path = join(sigDir, `${record.keyId.slice(7)}.json`);
    writeAtomic(path, JSON.stringify(record) + '\n');
    return { ref, digest, path };
  });
}

/**
 * The signature records stored for `digest` ([] when none). Records that do not parse are left
 * out (they cannot sign anything); a folder or file that is not the owner's real one is refused.
 */
export function readSignatures(dir: string, digest: Digest, owner = storeOwner(dir)): SignatureRecord[] {
  const sigDir = paths.signatures(dir, digest);
  const st = lstatOrNull(sigDir);
  if (!st) return [];
  checkSecure(join(dir, 'signatures'), lstatSync(join(dir, 'signatures')), owner, 'd');
  checkSecure(sigDir, st, owner, 'd');
  const out: SignatureRecord[] = [];
  for (const name of readdirSync(sigDir).sort().slice(0, MAX_SIGNATURES)) {
    if (!/^[0-9a-f]{64}\.json$/.test(name)) continue;
    const r = parseSignatureRecord(readSecure(join(sigDir, name), owner, MAX_RECORD_BYTES).toString('utf8'));
    if (r !== null) out.push(r);
  }
  return out;
}

/**
 * An image's file manifest, checked against its digest, with its record (push reads the tree in
 * this order). The files themselves are not re-hashed here: call checkImage(..., 'full') first.
 */
export function readImageFiles(
  dir: string,
  what: RefOrDigest,
): { ref: string; digest: Digest; rootfs: string; entries: FileEntry[]; record: ImageRecord | null } {
  const o = openImage(dir, what);
  const manifestBytes = readSecure(paths.manifest(dir, o.digest), o.owner, MAX_MANIFEST_BYTES);
  if (manifestDigest(manifestBytes) !== o.index.manifest)
    throw new ImageError('image.digest_mismatch', `image ${o.ref}: files.manifest does not match its index`);
  let record: ImageRecord | null = null;
  try {
    record = parseRecord(readSecure(paths.record(dir, o.digest), o.owner, MAX_INDEX_BYTES).toString('utf8'), o.digest);
  } catch {
    record = null; // informational only
  }
  return { ref: o.ref, digest: o.digest, rootfs: o.rootfs, entries: parseManifest(manifestBytes.toString('utf8')), record };
}

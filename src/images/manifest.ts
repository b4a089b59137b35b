/**
 * The file manifest: a canonical, sorted listing of every entry of an image's rootfs, and the
 * image digest computed over it. Pure: data in, data out (hashing only, no I/O).
 *
 * Format (UTF-8 text, LF line ends), version 1:
 *
 *     aegis-file-manifest/1
 *     <path>\t<type>\t<mode>\t<uid>\t<gid>\t<size>\t<content>
 *     ...
 *
 * - `path`: JSON string of the path relative to the rootfs, `"."` for the rootfs itself,
 *   no leading `/`, no `.`/`..`/empty components. Lines are sorted by the path's UTF-8 bytes;
 *   duplicate paths are invalid.
 * - `type`: `d` directory, `f` regular file, `l` symbolic link. Nothing else is stored
 *   (device nodes, FIFOs and sockets are dropped at import/build: the runtime provides /dev).
 * - `mode`: the permission bits including setuid/setgid/sticky, 4 octal digits.
 * - `uid`, `gid`: decimal numeric owner.
 * - `size`: bytes of a regular file; 0 for directories and links.
 * - `content`: `sha256:<hex>` of a file's bytes; the JSON string of a link's target; `-` for a
 *   directory.
 *
 * Hard links are recorded as separate regular files with the same content hash; mtimes are not
 * recorded (they do not change what a program sees when it reads the image).
 *
 * The image digest is two-level, so the check before every run reads a few hundred bytes
 * instead of the whole listing (~1 MB for python:3.11). The image index is
 *
 *     aegis-image-index/1
 *     manifest\tsha256:<hex of the whole files.manifest text>
 *     <the manifest lines of "." and of every top-level entry, same format and order>
 *
 * and the image digest is `sha256:` + hex SHA-256 (FIPS 180-4) of the index text. It commits to
 * every file through the manifest hash; the per-run check hashes only the index.
 */
import { createHash } from 'node:crypto';
import { ImageError } from './errors.js';
import type { Digest } from './ref.js';

export const MANIFEST_HEADER = 'aegis-file-manifest/1';

export type FileEntry =
  | { readonly path: string; readonly type: 'd'; readonly mode: number; readonly uid: number; readonly gid: number }
  | {
      readonly path: string;
      readonly type: 'f';
      readonly mode: number;
      readonly uid: number;
      readonly gid: number;
      readonly size: number;
      /** `sha256:<hex>` of the content. */
      readonly sha256: string;
    }
  | {
      readonly path: string;
      readonly type: 'l';
      readonly mode: number;
      readonly uid: number;
      readonly gid: number;
      readonly target: string;
    };

const SHA = /^sha256:[0-9a-f]{64}$/;

/** True for a canonical relative path: "." or non-empty components without "." / "..". */
export function isCanonicalPath(p: string): boolean {
  if (p === '.') return true;
  if (p === '' || p.startsWith('/') || p.endsWith('/')) return false;
  for (const c of p.split('/')) if (c === '' || c === '.' || c === '..' || c.includes('\0')) return false;
  return true;
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Sorts entries canonically ("." first, then by UTF-8 bytes of the path). */
export function sortEntries(entries: readonly FileEntry[]): FileEntry[] {
  return [...entries].sort((x, y) => (x.path === '.' ? -1 : y.path === '.' ? 1 : compareBytes(x.path, y.path)));
}

function checkEntry(e: FileEntry): void {
  const bad = (why: string): never => {
    throw new ImageError('image.corrupt', `file manifest entry ${JSON.stringify(e.path)}: ${why}`);
  };
  if (!isCanonicalPath(e.path)) bad('not a canonical relative path');
  if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777) bad('bad mode');
  if (!Number.isInteger(e.uid) || e.uid < 0 || e.uid > 0xffffffff) bad('bad uid');
  if (!Number.isInteger(e.gid) || e.gid < 0 || e.gid > 0xffffffff) bad('bad gid');
  if (e.type === 'f') {
    if (!Number.isSafeInteger(e.size) || e.size < 0) bad('bad size');
    if (!SHA.test(e.sha256)) bad('bad content hash');
  } else if (e.type === 'l') {
    if (e.target === '' || e.target.includes('\0')) bad('bad link target');
  }
  if (e.path === '.' && e.type !== 'd') bad('the rootfs must be a directory');
}

function line(e: FileEntry): string {
  const p = JSON.stringify(e.path);
  const m = e.mode.toString(8).padStart(4, '0');
  switch (e.type) {
    case 'd':
      return `${p}\td\t${m}\t${e.uid}\t${e.gid}\t0\t-`;
    case 'f':
      return `${p}\tf\t${m}\t${e.uid}\t${e.gid}\t${e.size}\t${e.sha256}`;
    case 'l':
      return `${p}\tl\t${m}\t${e.uid}\t${e.gid}\t0\t${JSON.stringify(e.target)}`;
  }
}

/** Canonical manifest text of `entries` (any order in; validated and sorted out). */
export function serializeManifest(entries: readonly FileEntry[]): string {
  const sorted = sortEntries(entries);
  const out = [MANIFEST_HEADER];
  let prev: string | null = null;
  for (const e of sorted) {
    checkEntry(e);
    if (prev === e.path) throw new ImageError('image.corrupt', `file manifest lists ${JSON.stringify(e.path)} twice`);
    prev = e.path;
    out.push(line(e));
  }
  if (sorted[0]?.path !== '.') throw new ImageError('image.corrupt', 'file manifest has no entry for the rootfs itself (".")');
  return out.join('\n') + '\n';
}

/** SHA-256 of a text (or bytes) as `sha256:<hex>`: the manifest hash, and the image digest of an index. */
export function manifestDigest(text: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`;
}

export const INDEX_HEADER = 'aegis-image-index/1';

export interface ImageIndex {
  /** Hash of the whole files.manifest text. */
  readonly manifest: Digest;
  /** "." and the top-level entries, canonical order. */
  readonly top: readonly FileEntry[];
}

const isTop = (e: FileEntry) => !e.path.includes('/');

/** The index text of a manifest: its hash and its top-level lines. The image digest is its SHA-256. */
export function serializeIndex(manifestText: string): string {
  const entries = parseManifest(manifestText);
  const top = serializeManifest(entries.filter(isTop)).split('\n').slice(1);
  return [INDEX_HEADER, `manifest\t${manifestDigest(manifestText)}`, ...top].join('\n');
}

/** Parses an index (untrusted: read back from disk); rejects non-canonical text. */
export function parseIndex(text: string): ImageIndex {
  const nl1 = text.indexOf('\n');
  const nl2 = text.indexOf('\n', nl1 + 1);
  if (nl1 < 0 || nl2 < 0 || text.slice(0, nl1) !== INDEX_HEADER)
    throw new ImageError('image.corrupt', 'not an AEGIS image index (bad header)');
  const m = /^manifest\t(sha256:[0-9a-f]{64})$/.exec(text.slice(nl1 + 1, nl2));
  if (!m) throw new ImageError('image.corrupt', 'image index has no manifest hash line');
  const top = parseManifest(`${MANIFEST_HEADER}\n${text.slice(nl2 + 1)}`);
  if (!top.every(isTop)) throw new ImageError('image.corrupt', 'image index lists entries below the top level');
  return { manifest: m[1] as Digest, top };
}

function parseJsonString(s: string, what: string, lineNo: number): string {
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch {
    v = undefined;
  }
  if (typeof v !== 'string') throw new ImageError('image.corrupt', `file manifest line ${lineNo}: ${what} is not a JSON string`);
  return v;
}

function parseInt10(s: string, lineNo: number, what: string): number {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(s)) throw new ImageError('image.corrupt', `file manifest line ${lineNo}: bad ${what}`);
  return Number(s);
}

/**
 * Parses manifest text (untrusted: read back from disk). Rejects anything that
 * `serializeManifest` would not have produced, including wrong order and duplicates.
 */
export function parseManifest(text: string): FileEntry[] {
  const lines = text.split('\n');
  if (lines[0] !== MANIFEST_HEADER) throw new ImageError('image.corrupt', 'not an AEGIS file manifest (bad header)');
  if (lines[lines.length - 1] !== '') throw new ImageError('image.corrupt', 'file manifest does not end with a newline');
  const entries: FileEntry[] = [];
  for (let i = 1; i < lines.length - 1; i++) {
    const f = (lines[i] as string).split('\t');
    if (f.length !== 7) throw new ImageError('image.corrupt', `file manifest line ${i + 1}: expected 7 fields`);
    const [ps, type, ms, us, gs, ss, content] = f as [string, string, string, string, string, string, string];
    const path = parseJsonString(ps, 'path', i + 1);
    if (!/^[0-7]{4}$/.test(ms)) throw new ImageError('image.corrupt', `file manifest line ${i + 1}: bad mode`);
    const mode = parseInt(ms, 8);
    const uid = parseInt10(us, i + 1, 'uid');
    const gid = parseInt10(gs, i + 1, 'gid');
    const size = parseInt10(ss, i + 1, 'size');
    let e: FileEntry;
    if (type === 'd') e = { path, type, mode, uid, gid };
    else if (type === 'f') e = { path, type, mode, uid, gid, size, sha256: content };
    else if (type === 'l') e = { path, type, mode, uid, gid, target: parseJsonString(content, 'link target', i + 1) };
    else throw new ImageError('image.corrupt', `file manifest line ${i + 1}: unknown type ${JSON.stringify(type)}`);
    if ((type === 'd' && content !== '-') || (type !== 'f' && size !== 0)) {
      throw new ImageError('image.corrupt', `file manifest line ${i + 1}: fields do not fit type ${type}`);
    }
    entries.push(e);
  }
  // Round trip: the canonical form of what we parsed must be the text we read.
  if (serializeManifest(entries) !== text)
    throw new ImageError('image.corrupt', 'file manifest is not in canonical form (order or encoding)');
  return entries;
}

/** One way an actual rootfs differs from its manifest. */
export interface Difference {
  readonly path: string;
  readonly kind: 'missing' | 'added' | 'changed';
  /** For `changed`: which fields differ (type, mode, uid, gid, size, content, target). */
  readonly fields?: readonly string[];
}

/**
 * Compares two listings of the same tree. Pure; output sorted by path. With `content: false`
 * (a stat-only walk), file hashes are not compared, sizes still are.
 */
export function diffManifests(
  expected: readonly FileEntry[],
  actual: readonly FileEntry[],
  opts: { content?: boolean } = {},
): Difference[] {
  const content = opts.content ?? true;
  const want = new Map(expected.map((e) => [e.path, e] as const));
  const have = new Map(actual.map((e) => [e.path, e] as const));
  const out: Difference[] = [];
  for (const [p, w] of want) {
    const h = have.get(p);
    if (!h) {
      out.push({ path: p, kind: 'missing' });
      continue;
    }
    const fields: string[] = [];
    if (w.type !== h.type) fields.push('type');
    if (w.mode !== h.mode) fields.push('mode');
    if (w.uid !== h.uid) fields.push('uid');
    if (w.gid !== h.gid) fields.push('gid');
    if (w.type === 'f' && h.type === 'f') {
      if (w.size !== h.size) fields.push('size');
      if (content && w.sha256 !== h.sha256) fields.push('content');
    }
    if (w.type === 'l' && h.type === 'l' && w.target !== h.target) fields.push('target');
    if (fields.length) out.push({ path: p, kind: 'changed', fields });
  }
  for (const p of have.keys()) if (!want.has(p)) out.push({ path: p, kind: 'added' });
  return out.sort((a, b) => compareBytes(a.path, b.path));
}

/**
 * How one entry of an OCI layer tarball changes the rootfs: pure decisions over tar headers
 * (untrusted input), no I/O. The adapter (apply.ts) executes them.
 *
 * OCI image spec, layer.md "Whiteouts": a file `.wh.<name>` deletes `<name>` from lower
 * layers; `.wh..wh..opq` in a directory hides all of that directory's lower-layer children.
 * Whiteouts only affect lower layers, so a layer's deletions are applied before its entries.
 *
 * Refused (image.unsafe_entry): absolute names, `..` components, NUL bytes, hard links whose
 * target is absolute or contains `..`, and relative symbolic links that climb above the rootfs
 * (`../../etc/shadow` seen from /usr/x). Absolute symbolic link targets are kept: inside a
 * container they resolve against the container's root, and AEGIS itself never follows a
 * link out of the rootfs (see resolveInRoot).
 */
import { ImageError } from './errors.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

/** Splits a tar entry name into safe components; [] is the archive root ("./"). */
export function normalizeEntryName(name: string): string[] {
  if (name.includes('\0')) throw new ImageError('image.unsafe_entry', `entry name contains NUL: ${JSON.stringify(name)}`);
  if (name.startsWith('/')) throw new ImageError('image.unsafe_entry', `absolute entry name refused: ${JSON.stringify(name)}`);
  const out: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw new ImageError('image.unsafe_entry', `path traversal refused: ${JSON.stringify(name)}`);
    out.push(c);
  }
  return out;
}

export type EntryKind = 'file' | 'directory' | 'symlink' | 'link' | 'other';

/** The subset of a tar header the plan needs (tar-stream's header names). */
export interface LayerHeader {
  readonly name: string;
  readonly type: string | null | undefined;
  readonly mode?: number | undefined;
  readonly uid?: number | undefined;
  readonly gid?: number | undefined;
  readonly size?: number | undefined;
  readonly linkname?: string | null | undefined;
}

export type Action =
  | { readonly op: 'whiteout'; readonly path: readonly string[] }
  | { readonly op: 'opaque'; readonly dir: readonly string[] }
  | { readonly op: 'mkdir'; readonly path: readonly string[]; readonly mode: number; readonly uid: number; readonly gid: number }
  | {
      readonly op: 'file';
      readonly path: readonly string[];
      readonly mode: number;
      readonly uid: number;
      readonly gid: number;
      readonly size: number;
    }
  | { readonly op: 'symlink'; readonly path: readonly string[]; readonly target: string; readonly uid: number; readonly gid: number }
  | { readonly op: 'hardlink'; readonly path: readonly string[]; readonly target: readonly string[] }
  | { readonly op: 'skip'; readonly path: readonly string[]; readonly reason: string };

function id(n: number | undefined, what: string, name: string): number {
  const v = n ?? 0;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new ImageError('image.bad_archive', `${name}: bad ${what}`);
  return v;
}

/**
 * True when a relative link target, resolved lexically from the directory holding the link
 * (`linkPath` minus its last component), climbs above the rootfs.
 */
export function symlinkEscapes(linkPath: readonly string[], target: string): boolean {
  if (target.startsWith('/')) return false;
  let depth = linkPath.length - 1;
  for (const c of target.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      depth--;
      if (depth < 0) return true;
    } else depth++;
  }
  return false;
}

/** Decides what one header does. Throws image.unsafe_entry on hostile names or links. */
export function classify(h: LayerHeader): Action {
  const path = normalizeEntryName(h.name);
  const base = path[path.length - 1];
  const mode = (h.mode ?? 0o644) & 0o7777;
  const uid = id(h.uid, 'uid', h.name);
  const gid = id(h.gid, 'gid', h.name);
  if (base !== undefined && base === OPAQUE_MARKER) return { op: 'opaque', dir: path.slice(0, -1) };
  // Other `.wh..wh.` names (and everything below them) are AUFS bookkeeping (.wh..wh.plnk/...), never content.
  if (path.some((c) => c.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`))) return { op: 'skip', path, reason: 'aufs metadata' };
  if (base !== undefined && base.startsWith(WHITEOUT_PREFIX)) {
    const parent = path.slice(0, -1);
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === '' || victim === '.' || victim === '..')
      throw new ImageError('image.unsafe_entry', `bad whiteout ${JSON.stringify(h.name)}`);
    return { op: 'whiteout', path: [...parent, victim] };
  }
  switch (h.type ?? 'file') {
    case 'directory':
      return path.length === 0 ? { op: 'skip', path, reason: 'archive root' } : { op: 'mkdir', path, mode, uid, gid };
    case 'file':
    case 'contiguous-file': {
      if (path.length === 0) throw new ImageError('image.unsafe_entry', `file entry names the rootfs itself: ${JSON.stringify(h.name)}`);
      const size = h.size ?? 0;
      if (!Number.isSafeInteger(size) || size < 0) throw new ImageError('image.bad_archive', `${h.name}: bad size`);
      return { op: 'file', path, mode, uid, gid, size };
    }
    case 'symlink': {
      const target = h.linkname ?? '';
      if (path.length === 0) throw new ImageError('image.unsafe_entry', `symlink entry names the rootfs itself`);
      if (target === '' || target.includes('\0')) throw new ImageError('image.unsafe_entry', `${h.name}: empty or NUL link target`);
      if (symlinkEscapes(path, target))
        throw new ImageError('image.unsafe_entry', `symlink ${JSON.stringify(h.name)} -> ${JSON.stringify(target)} escapes the rootfs`);
      return { op: 'symlink', path, target, uid, gid };
    }
    case 'link': {
      const raw = h.linkname ?? '';
      if (raw.startsWith('/'))
        throw new ImageError('image.unsafe_entry', `hard link ${JSON.stringify(h.name)} -> absolute ${JSON.stringify(raw)} refused`);
      const target = normalizeEntryName(raw);
      if (path.length === 0 || target.length === 0)
        throw new ImageError('image.unsafe_entry', `hard link ${JSON.stringify(h.name)} involves the rootfs itself`);
      return { op: 'hardlink', path, target };
    }
    default:
      return { op: 'skip', path, reason: `${h.type} entries are not stored (the runtime provides /dev)` };
  }
}

/** What resolveInRoot needs to know about a path (relative components, never followed). */
export interface RootView {
  kind(path: readonly string[]): 'dir' | 'symlink' | 'other' | 'missing';
  readlink(path: readonly string[]): string;
}

const MAX_LINKS = 40;

/**
 * Resolves `path` inside the rootfs the way the kernel would inside a chroot: symbolic links
 * are followed, absolute targets restart at the rootfs, `..` never goes above it. The last
 * component is not followed. Returns the real components of the parent directory plus the
 * last name, or null when a parent is missing (with `missing: 'null'`).
 * Throws image.unsafe_entry on link loops and when a parent is not a directory.
 */
export function resolveInRoot(view: RootView, path: readonly string[]): { parent: string[]; name: string } | null {
  if (path.length === 0) throw new ImageError('image.unsafe_entry', 'cannot resolve the rootfs itself');
  const todo = path.slice(0, -1).reverse();
  const cur: string[] = [];
  let links = 0;
  while (todo.length) {
    const c = todo.pop() as string;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      cur.pop();
      continue;
    }
    const next = [...cur, c];
    const k = view.kind(next);
    if (k === 'missing') return null;
    if (k === 'dir') {
      cur.push(c);
      continue;
    }
    if (k === 'other') throw new ImageError('image.unsafe_entry', `/${next.join('/')} is not a directory`);
    if (++links > MAX_LINKS) throw new ImageError('image.unsafe_entry', `too many levels of symbolic links at /${next.join('/')}`);
    const t = view.readlink(next);
    if (t.startsWith('/')) cur.length = 0;
    const parts = t.split('/');
    for (let i = parts.length - 1; i >= 0; i--) todo.push(parts[i] as string);
  }
  return { parent: cur, name: path[path.length - 1] as string };
}

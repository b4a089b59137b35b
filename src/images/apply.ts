/**
 * Applies OCI layer tarballs to a staging rootfs (adapter over layers.ts). The tarball is
 * untrusted: every path goes through `classify` (names, links) and `resolveInRoot` (parents are
 * resolved like a chroot would, so a symlink planted by an earlier entry can never redirect a
 * write outside the rootfs); files are created with O_EXCL|O_NOFOLLOW; the final component of a
 * path is never followed.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  linkSync,
  lchownSync,
  lstatSync,
  chmodSync,
  chownSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  type Stats,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { extract, type Header } from 'tar-stream';
import { ImageError } from './errors.js';
import { type Action, classify, resolveInRoot, type RootView } from './layers.js';

function rootView(rootfs: string): RootView {
  return {
    kind(p) {
      try {
        const st = lstatSync(join(rootfs, ...p));
        return st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'other';
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
        throw err;
      }
    },
    readlink: (p) => readlinkSync(join(rootfs, ...p)),
  };
}

/** What an import may still write (shared across its layers; decremented). */
export interface Budget {
  bytes: number;
  entries: number;
}

export interface ApplyStats {
  entries: number;
  whiteouts: number;
  skipped: string[];
}

/** Where an entry's final component lives on disk (parents resolved in the root, created if asked). */
function locate(rootfs: string, view: RootView, path: readonly string[], create: boolean): string | null {
  if (create) {
    for (let k = 1; k < path.length; k++) {
      const r = resolveInRoot(view, path.slice(0, k));
      if (!r) throw new ImageError('image.bad_archive', `cannot create parents of /${path.join('/')}`);
      const comp = [...r.parent, r.name];
      const kind = view.kind(comp);
      if (kind === 'missing') {
        mkdirSync(join(rootfs, ...comp), { mode: 0o755 });
        chmodSync(join(rootfs, ...comp), 0o755); // not left to the umask
      } else if (kind === 'other') throw new ImageError('image.unsafe_entry', `/${comp.join('/')} is not a directory`);
    }
  }
  const r = resolveInRoot(view, path);
  return r ? join(rootfs, ...r.parent, r.name) : null;
}

function removeExisting(abs: string): void {
  rmSync(abs, { recursive: true, force: true });
}

function exists(abs: string): Stats | null {
  try {
    return lstatSync(abs);
  } catch {
    return null;
  }
}

function own(fn: () => void, what: string): void {
  try {
    fn();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EPERM')
      throw new ImageError('image.unsupported', `cannot set the owner of ${what}: image import must run as root`);
    throw err;
  }
}

/** Reads every header of a layer (first pass), draining contents. */
async function headers(open: () => Readable): Promise<Header[]> {
  const out: Header[] = [];
  const ex = extract();
  const src = open();
  src.on('error', (e) => ex.destroy(e));
  src.pipe(ex);
  try {
    for await (const entry of ex) {
      out.push(entry.header);
      entry.resume();
    }
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError('image.bad_archive', `layer is not a readable tar: ${(err as Error).message}`, { cause: err });
  }
  return out;
}

/**
 * Applies one layer: validates every header first (nothing is written if any entry is
 * hostile), applies its whiteouts to the lower layers, then extracts its entries.
 * `open` must return a fresh stream of the uncompressed tar each time it is called.
 */
export async function applyLayer(
  rootfs: string,
  open: () => Readable,
  budget: Budget = { bytes: Infinity, entries: Infinity },
): Promise<ApplyStats> {
  const view = rootView(rootfs);
  const stats: ApplyStats = { entries: 0, whiteouts: 0, skipped: [] };
  const hs = await headers(open);
  // Refuse before writing: declared sizes and entry counts against what is left of the budget.
  budget.entries -= hs.length;
  budget.bytes -= hs.reduce((n, h) => n + (h.type === 'file' || h.type === 'contiguous-file' ? (h.size ?? 0) : 0), 0);
  if (budget.entries < 0 || budget.bytes < 0) {
    throw new ImageError('image.too_large', 'the image exceeds the import limit (see --max-size / --max-entries)');
  }
  const plan: Action[] = hs.map((h) => classify(h));
  // 1. Deletions (whiteouts hide lower layers only).
  for (const a of plan) {
    if (a.op === 'whiteout') {
      const abs = locate(rootfs, view, a.path, false);
      if (abs && exists(abs)) removeExisting(abs);
      stats.whiteouts++;
    } else if (a.op === 'opaque') {
      const abs = a.dir.length === 0 ? rootfs : locate(rootfs, view, a.dir, false);
      const st = abs ? exists(abs) : null;
      if (abs && st?.isDirectory()) for (const n of readdirSync(abs)) removeExisting(join(abs, n));
      stats.whiteouts++;
    }
  }
  // 2. Entries, in archive order (tar-stream yields headers in the same order as pass 1).
  const ex = extract();
  const src = open();
  src.on('error', (e) => ex.destroy(e));
  src.pipe(ex);
  let i = 0;
  try {
    for await (const entry of ex) {
      const a = plan[i];
      if (!a || hs[i]?.name !== entry.header.name || hs[i]?.type !== entry.header.type || hs[i]?.linkname !== entry.header.linkname) {
        throw new ImageError('image.bad_archive', 'layer changed between reads');
      }
      i++;
      switch (a.op) {
        case 'whiteout':
        case 'opaque':
          entry.resume();
          break;
        case 'skip':
          if (a.reason !== 'archive root' && a.reason !== 'aufs metadata') stats.skipped.push(a.path.join('/'));
          entry.resume();
          break;
        case 'mkdir': {
          const abs = locate(rootfs, view, a.path, true) as string;
          const st = exists(abs);
          if (st && !st.isDirectory()) removeExisting(abs);
          if (!st || !st.isDirectory()) mkdirSync(abs, { mode: 0o700 });
          own(() => chownSync(abs, a.uid, a.gid), abs);
          chmodSync(abs, a.mode);
          stats.entries++;
          entry.resume();
          break;
        }
        case 'file': {
          const abs = locate(rootfs, view, a.path, true) as string;
          if (exists(abs)) removeExisting(abs);
          const fd = openSync(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
          try {
            for await (const chunk of entry) writeSync(fd, chunk as Buffer);
            own(() => fchownSync(fd, a.uid, a.gid), abs);
            fchmodSync(fd, a.mode);
          } finally {
            closeSync(fd);
          }
          stats.entries++;
          break;
        }
        case 'symlink': {
          const abs = locate(rootfs, view, a.path, true) as string;
          if (exists(abs)) removeExisting(abs);
          symlinkSync(a.target, abs);
          own(() => lchownSync(abs, a.uid, a.gid), abs);
          stats.entries++;
          entry.resume();
          break;
        }
        case 'hardlink': {
          const src = locate(rootfs, view, a.target, false);
          const sst = src ? exists(src) : null;
          if (!src || !sst)
            throw new ImageError('image.bad_archive', `hard link /${a.path.join('/')} -> /${a.target.join('/')}: target missing`);
          const abs = locate(rootfs, view, a.path, true) as string;
          if (abs === src) {
            entry.resume();
            break;
          }
          if (exists(abs)) removeExisting(abs);
          if (sst.isFile()) linkSync(src, abs);
          else if (sst.isSymbolicLink()) {
            symlinkSync(readlinkSync(src), abs);
            own(() => lchownSync(abs, sst.uid, sst.gid), abs);
          } else
            throw new ImageError(
              'image.unsafe_entry',
              `hard link /${a.path.join('/')} -> a ${sst.isDirectory() ? 'directory' : 'special file'} refused`,
            );
          stats.entries++;
          entry.resume();
          break;
        }
      }
    }
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError('image.bad_archive', `cannot apply layer: ${(err as Error).message}`, { cause: err });
  }
  return stats;
}

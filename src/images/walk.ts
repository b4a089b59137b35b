/**
 * Lists a rootfs on disk as file-manifest entries (adapter: reads the filesystem, never
 * follows symbolic links). With `hash: false` it only stats (a quick structural check);
 * file hashes are then left empty and must not be compared.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { ImageError } from './errors.js';
import type { FileEntry } from './manifest.js';

export interface WalkResult {
  entries: FileEntry[];
  /** Paths of entries that cannot be represented (devices, FIFOs, sockets). */
  skipped: string[];
  /** Sum of regular file sizes. */
  bytes: number;
}

const BUF = Buffer.allocUnsafe(1 << 20);

/** A permission error while reading the store: a coded error (a non-root `image verify`), anything else as it is. */
function unreadable(path: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== 'EACCES' && code !== 'EPERM') return err;
  return new ImageError('image.unreadable', `cannot read ${path} (${code}): checking an image reads every file of it; run as root`, {
    cause: err,
  });
}

/** SHA-256 of a regular file, opened with O_NOFOLLOW so a swapped-in link is not followed. */
export function hashFile(path: string): { sha256: string; size: number } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    throw unreadable(path, err);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new ImageError('image.digest_mismatch', `${path} changed type while being read`);
    const h = createHash('sha256');
    let size = 0;
    for (;;) {
      const n = readSync(fd, BUF, 0, BUF.length, null);
      if (n === 0) break;
      h.update(BUF.subarray(0, n));
      size += n;
    }
    return { sha256: `sha256:${h.digest('hex')}`, size };
  } finally {
    closeSync(fd);
  }
}

export function entryOf(rel: string, abs: string, st: Stats, hash: boolean): FileEntry | null {
  const base = { path: rel, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  if (st.isDirectory()) return { ...base, type: 'd' };
  if (st.isSymbolicLink()) return { ...base, type: 'l', target: readlinkSync(abs) };
  if (st.isFile()) {
    if (!hash) return { ...base, type: 'f', size: st.size, sha256: '' };
    const h = hashFile(abs);
    return { ...base, type: 'f', size: h.size, sha256: h.sha256 };
  }
  return null;
}

export function walkRootfs(root: string, opts: { hash: boolean }): WalkResult {
  const out: WalkResult = { entries: [], skipped: [], bytes: 0 };
  const rootSt = lstatSync(root);
  if (!rootSt.isDirectory()) throw new ImageError('image.corrupt', `${root} is not a directory`);
  out.entries.push({ path: '.', type: 'd', mode: rootSt.mode & 0o7777, uid: rootSt.uid, gid: rootSt.gid });
  const stack: string[] = [''];
  while (stack.length) {
    const rel = stack.pop() as string;
    const dir = rel === '' ? root : join(root, rel);
    let names: Buffer[];
    try {
      names = readdirSync(dir, { encoding: 'buffer' });
    } catch (err) {
      throw unreadable(dir, err);
    }
    for (const name of names) {
      const n = name.toString('utf8');
      if (!Buffer.from(n, 'utf8').equals(name)) {
        throw new ImageError('image.unsupported', `${join(dir, name.toString('latin1'))}: file names must be UTF-8`);
      }
      const r = rel === '' ? n : `${rel}/${n}`;
      const abs = join(root, r);
      const st = lstatSync(abs);
      const e = entryOf(r, abs, st, opts.hash);
      if (!e) {
        out.skipped.push(r);
        continue;
      }
      out.entries.push(e);
      if (e.type === 'f') out.bytes += e.size;
      if (e.type === 'd') stack.push(r);
    }
  }
  return out;
}

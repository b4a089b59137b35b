/**
 * `fs.changes`: what the agent changed in its writable volumes, bound to the audit log. A
 * snapshot (path -> size, mtime, SHA-256) is taken before the agent starts and compared with one
 * taken after its last process is gone, before the volume is copied back to its host folder.
 *
 * Bounded: at most MAX_FILES files per volume and MAX_HASH_BYTES hashed per snapshot; beyond
 * them the entry says `incomplete: true` (and files not hashed have `sha256: null`). Symlinks are
 * recorded by their target text (never followed), other special files by their kind.
 */
import { createHash } from 'node:crypto';
import { lstatSync, openSync, readSync, closeSync, readdirSync, readlinkSync, constants } from 'node:fs';
import { join } from 'node:path';
import type { AuditEventInput } from '../audit/event.js';

export const MAX_FILES = 10_000;
export const MAX_HASH_BYTES = 256 * 1024 * 1024;
/** Changes listed per volume in the event; the rest are counted (`omitted`). */
export const MAX_CHANGES_LISTED = 1000;

interface FileFact {
  readonly size: number;
  readonly mtimeNs: bigint;
  readonly sha256: string | null;
}

export interface VolumeSnapshot {
  readonly files: ReadonlyMap<string, FileFact>;
  readonly incomplete: boolean;
}

function hashFile(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  try {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 16);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
    return h.digest('hex');
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Every file under `root` (relative paths with a leading `/`), hashed within the bounds. */
export function snapshotVolume(root: string): VolumeSnapshot {
  const files = new Map<string, FileFact>();
  let incomplete = false;
  let hashed = 0;
  const walk = (dir: string, rel: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      incomplete = true;
      return;
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (rel === '' && e.name === 'lost+found') continue; // the size-limited filesystem's own
      const p = join(dir, e.name);
      const r = `${rel}/${e.name}`;
      let st;
      try {
        st = lstatSync(p, { bigint: true });
      } catch {
        incomplete = true;
        continue;
      }
      if (st.isDirectory()) {
        walk(p, r);
        continue;
      }
      if (files.size >= MAX_FILES) {
        incomplete = true;
        return;
      }
      let sha: string | null = null;
      if (st.isFile()) {
        if (hashed + Number(st.size) <= MAX_HASH_BYTES) {
          sha = hashFile(p);
          hashed += Number(st.size);
        } else incomplete = true;
      } else if (st.isSymbolicLink()) {
        try {
          sha = createHash('sha256')
            .update(`symlink:${readlinkSync(p)}`)
            .digest('hex');
        } catch {
          sha = null;
        }
      }
      files.set(r, { size: Number(st.size), mtimeNs: st.mtimeNs, sha256: sha });
    }
  };
  walk(root, '');
  return { files, incomplete };
}

export interface FsChange {
  readonly path: string;
  readonly change: 'created' | 'modified' | 'deleted';
  readonly size: number;
  readonly sha256: string | null;
}

/** What changed from `before` to `after` (paths sorted). */
export function diffSnapshots(before: VolumeSnapshot, after: VolumeSnapshot): FsChange[] {
  const out: FsChange[] = [];
  for (const [p, a] of after.files) {
    const b = before.files.get(p);
    if (b === undefined) out.push({ path: p, change: 'created', size: a.size, sha256: a.sha256 });
    else if (b.size !== a.size || b.mtimeNs !== a.mtimeNs || b.sha256 !== a.sha256)
      out.push({ path: p, change: 'modified', size: a.size, sha256: a.sha256 });
  }
  for (const [p, b] of before.files) if (!after.files.has(p)) out.push({ path: p, change: 'deleted', size: b.size, sha256: null });
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

/** The `fs.changes` event for the agent's writable volumes (sandbox paths). */
export function fsChangesEvent(
  actor: { agent: string; execution: string },
  volumes: readonly { sandbox: string; before: VolumeSnapshot; after: VolumeSnapshot }[],
): AuditEventInput {
  return {
    actor,
    action: 'fs.changes',
    decision: 'info',
    payload: {
      volumes: volumes.map((v) => {
        const all = diffSnapshots(v.before, v.after);
        const changes = all.slice(0, MAX_CHANGES_LISTED).map((c) => ({ ...c, path: `${v.sandbox.replace(/\/$/, '')}${c.path}` }));
        return {
          path: v.sandbox,
          changes,
          ...(all.length > changes.length ? { omitted: all.length - changes.length } : {}),
          ...(v.before.incomplete || v.after.incomplete ? { incomplete: true } : {}),
        };
      }),
    },
  };
}

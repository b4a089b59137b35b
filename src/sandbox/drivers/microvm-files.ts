/**
 * The microVM launcher's host files for the guest (microvm-launcher.ts): read-only file binds that
 * QEMU's unprivileged uid cannot reach are copied where it can.
 */
import { chmodSync, chownSync, copyFileSync, mkdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { OciConfig } from '../spec/oci.js';

export function isFile(p: string): boolean {
  try {
    return !statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Whether `dir` can be opened and listed by uid/gid (9p needs that), its ancestors traversed. */
function listableBy(dir: string, uid: number, gid: number): boolean {
  const may = (path: string, bits: number): boolean => {
    const st = statSync(path);
    const who = st.uid === uid ? 6 : st.gid === gid ? 3 : 0;
    return ((st.mode >> who) & bits) === bits;
  };
  try {
    const parts = dir.split('/').filter((x) => x !== '');
    for (let n = 0; n < parts.length; n++) if (!may(`/${parts.slice(0, n).join('/')}`, 1)) return false;
    return may(dir, 5);
  } catch {
    return false;
  }
}

/**
 * Read-only file binds whose folder QEMU's unprivileged uid cannot list (the gateway's
 * resolv.conf and CA bundle live in a 0711 run dir, as crun only needs the file): copied into
 * `dir` (owned by that uid, shared once), and the mounts pointed at the copies. The copies are
 * made before the guest starts, as the files are complete by then (the gateway writes them
 * before the sandbox starts). Only files readable by others are copied (review finding: a 0600
 * file would otherwise become readable to the guest's agent).
 */
export function copyUnlistableFiles(config: OciConfig, dir: string, runAs: { uid: number; gid: number }): OciConfig {
  let n = 0;
  const mounts = config.mounts.map((m) => {
    if (m.type !== 'bind' || !m.options.includes('ro') || !isFile(m.source)) return m;
    if (listableBy(m.source.slice(0, Math.max(1, m.source.lastIndexOf('/'))), runAs.uid, runAs.gid)) return m;
    // The copy is world-readable (0444): make one only of a file the agent could read under crun
    // too (its uid is "other" to the host's files), never of a 0600/0640 file (fail secure: refused).
    if ((statSync(m.source).mode & 0o004) === 0)
      throw new Error(
        `read-only file ${m.source} (mounted at ${m.destination}) is not readable by others: it cannot be shared with the guest`,
      );
    if (n === 0) {
      mkdirSync(dir, { mode: 0o700 });
      chownSync(dir, runAs.uid, runAs.gid);
    }
    const copy = join(dir, `${n++}-${basename(m.source)}`);
    copyFileSync(m.source, copy);
    chmodSync(copy, 0o444);
    return { ...m, source: copy };
  });
  return { ...config, mounts };
}

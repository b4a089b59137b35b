/**
 * Safe removal of a staging directory (adapter). A failed debootstrap can leave /proc or /sys
 * mounted inside the rootfs; deleting recursively through such a mount would reach host
 * files, so mounts below the directory are unmounted first, and the directory is left in
 * place (with an error) if any remain.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { mountsBelow, parseMountinfo } from '../host/mountinfo.js';
import { ImageError } from './errors.js';

function readMountinfo(): string {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return '';
  }
}

export function removeStaging(dir: string): void {
  for (const mp of mountsBelow(dir, parseMountinfo(readMountinfo()))) {
    try {
      execFileSync('umount', ['-l', mp], { stdio: 'ignore' });
    } catch {
      /* checked below */
    }
  }
  const left = mountsBelow(dir, parseMountinfo(readMountinfo()));
  if (left.length) throw new ImageError('image.build_failed', `refusing to delete ${dir}: still mounted: ${left.join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Removes staging directories (`<label>-<pid>-<random>`) left in `tmpDir` by builds or imports
 * whose process is gone (killed, crashed). Directories of live processes are left alone.
 */
export function sweepStaging(tmpDir: string, alive: (pid: number) => boolean): string[] {
  const removed: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(tmpDir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = /^[a-z]+-([1-9][0-9]*)-[0-9a-f]+$/.exec(n);
    if (!m || alive(Number(m[1]))) continue;
    try {
      removeStaging(join(tmpDir, n));
      removed.push(n);
    } catch {
      /* still mounted: left for an operator */
    }
  }
  return removed;
}

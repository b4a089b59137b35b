/**
 * Host-path checks made before a sandbox starts, so that a run the agent could only fail inside
 * is refused up front with a clear code (fail secure), and declared paths that no host folder
 * backs are reported.
 *
 * ARCHITECTURE NOTE: read-only volumes are bind-mounted as they are, and the agent reads them as
 * host uid `uid` (101000: container uid 1000 in the user namespace). The check uses the mode
 * bits of the folder and of every ancestor (search permission): ACLs are not consulted, so a
 * folder readable only through an ACL entry is refused (the restrictive reading).
 */
import { statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { Policy } from '../policy/types.js';
import { SandboxError } from './errors.js';

/** The permission class (owner, group, other) that applies to host ids `uid`/`gid`, as a shift. */
function shiftFor(st: Stats, uid: number, gid: number): number {
  if (st.uid === uid) return 6;
  if (st.gid === gid) return 3;
  return 0;
}

function allows(st: Stats, uid: number, gid: number, bits: number): boolean {
  return ((st.mode >> shiftFor(st, uid, gid)) & bits) === bits;
}

/**
 * Throws SandboxError('sandbox.volume_unreadable') unless host ids `uid`/`gid` can search every
 * ancestor of `dir` and list and enter `dir` itself. `dir` is resolved (realpath) by the caller.
 */
export function checkReadableBy(dir: string, uid: number, gid: number): void {
  const st = statSync(dir);
  if (!allows(st, uid, gid, 0o5)) {
    throw new SandboxError(
      'sandbox.volume_unreadable',
      `volume source ${dir} is not readable by the sandbox's host uid ${uid} (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}:${st.gid}): chmod o+rx it`,
    );
  }
  for (let p = dirname(dir); ; p = dirname(p)) {
    const a = statSync(p);
    if (!allows(a, uid, gid, 0o1)) {
      throw new SandboxError(
        'sandbox.volume_unreadable',
        `volume source ${dir} cannot be reached by the sandbox's host uid ${uid}: ${p} (mode ${(a.mode & 0o777).toString(8)}) is not searchable: chmod o+x it`,
      );
    }
    if (p === '/') break;
  }
}

/**
 * Declared `fs.write` paths that no volume covers: the sandbox gives them a tmpfs, and what the
 * agent writes there is gone when the sandbox is. Pure. `/tmp` is the sandbox's own and not listed.
 */
export function unbackedWritePaths(policy: Policy, volumeTargets: readonly string[]): string[] {
  return policy.fs.write.filter((p) => p !== '/tmp' && !volumeTargets.some((t) => p === t || p.startsWith(t + '/')));
}

/** The warning line for one unbacked fs.write path (CLI stderr and the run summary). */
export function unbackedWriteWarning(path: string): string {
  return `fs.write path ${path} has no --volume: what the agent writes there is discarded with the sandbox (attach one with --volume HOST:${path}:rw)`;
}

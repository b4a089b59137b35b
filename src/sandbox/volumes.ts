/**
 * Size-limited writable volumes: every `rw` volume lives, for the run, on its own small ext4
 * filesystem of the volume's size, and its contents are copied back to the host folder when the
 * run ends.
 *
 * ARCHITECTURE NOTE (why a loop-mounted filesystem): a bind mount of the host folder lets the
 * agent fill the host filesystem. Project quotas would bound it in place, but they need a
 * filesystem created or mounted with them (`prjquota`; this host's ext4 root has neither, and
 * turning them on needs an unmounted filesystem), so they cannot be relied on on a typical
 * Debian host. A tmpfs would charge the volume to the agent's memory limit. So for each rw volume:
 *  1. a sparse image of the volume's size is created in the host folder itself (a hidden
 *     `.aegis-vol-<run>-<n>.img`, so the space is taken from the filesystem the volume is on),
 *     formatted ext4 without journal and reserve (root directory owned by the agent's host uid),
 *     loop-mounted `nosuid,nodev` at `<run dir>/vol<n>`, and unlinked at once (the mount keeps it
 *     alive; unmounting frees it);
 *  2. the folder's current contents are copied in (`cp -R -P`: symbolic links are copied as
 *     links, never followed), keeping owners and modes, except that what belongs to the user
 *     running AEGIS is handed to the agent's host uid/gid (so the agent can change what it wrote
 *     in earlier runs; files of other host users keep their owner and stay as (un)readable to
 *     the agent as with a bind mount); contents larger than the volume refuse the run
 *     (`sandbox.volume_refused`);
 *  3. the mount is bind-mounted into the sandbox; the agent's writes beyond the size fail with
 *     ENOSPC;
 *  4. at the end of a run whose agent started (also after a timeout, OOM or kill), the
 *     filesystem's contents are copied into a fresh directory inside the host folder (symbolic
 *     links as links, hard links kept as links so a file linked many times is stored once, holes
 *     kept, owners kept but no extended attributes or file capabilities, setuid/setgid bits
 *     cleared), the agent's host uid/gid handed back to the user running AEGIS, then the
 *     folder's old entries are replaced by the copy. So the agent's files belong to the user
 *     running AEGIS (`root` for `aegis run` as root), never to the agent's host uid: the mapping
 *     agent <-> invoking user that an idmapped mount would give, on every runtime.
 * The host folder therefore grows by at most the volume's size while the agent runs, and holds
 * at most the volume's size of agent data afterwards (twice that for the moment of the copy).
 *
 * LIMITATION: a volume is a copy: changes made to the host folder while the run is going are
 * replaced at its end, and of two runs sharing one rw folder the last to end wins. If AEGIS is
 * killed with SIGKILL, the agent's writes since the start are lost (the next start sweeps the
 * mount); the host folder keeps its contents from before the run. Host folders with mounts below
 * them are refused (as before). The copy is made by root from a filesystem the agent wrote:
 * every step works on paths inside the run's own mount and the host folder, never following a
 * symbolic link; the host folder itself must be writable only by the operator (see the TOCTOU
 * limitation of volume paths).
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { SandboxError } from './errors.js';
import type { ResolvedVolume } from './spec/compile.js';

/** Size of an rw volume when the flag names none (`HOST:SANDBOX:rw`). */
export const DEFAULT_RW_VOLUME_BYTES = 1024 ** 3;
/** Smallest size accepted (an ext4 filesystem needs room for its own metadata). */
export const MIN_RW_VOLUME_BYTES = 8 * 1024 ** 2;
/** Largest size accepted (a sparse image; the bound is what the host may lose). */
export const MAX_RW_VOLUME_BYTES = 16 * 1024 ** 4;

const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

function tool(cmd: string, args: readonly string[]): void {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: TOOL_ENV, timeout: 600_000 });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    const detail = e.stderr?.toString().trim().split('\n').slice(-2).join('; ') || e.message;
    throw new Error(`${cmd} failed: ${detail}`, { cause: err });
  }
}

/** One rw volume mounted on its own size-limited filesystem for a run. */
export interface StagedVolume {
  /** The volume as requested (host = the operator's folder). */
  readonly volume: ResolvedVolume;
  /** Where the volume's filesystem is mounted on the host (the bind source for the sandbox). */
  readonly mountPoint: string;
}

export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/**
 * One `find` over a copy: files of `from` become `to`'s (symbolic links included, never
 * followed), and with `clearSetId` (copies of what the agent wrote) nothing keeps a setuid or
 * setgid bit and no device node survives (the agent cannot make one; defence in depth, since
 * root's copy would be a working device outside the `nodev` mount).
 */
function reown(dir: string, from: Owner, to: Owner, clearSetId: boolean): void {
  const actions: string[][] = [];
  if (from.uid !== to.uid) actions.push(['-uid', String(from.uid), '-exec', 'chown', '-h', String(to.uid), '--', '{}', '+']);
  if (from.gid !== to.gid) actions.push(['-gid', String(from.gid), '-exec', 'chgrp', '-h', String(to.gid), '--', '{}', '+']);
  if (clearSetId) {
    actions.push(['(', '-type', 'b', '-o', '-type', 'c', ')', '-delete']);
    actions.push(['!', '-type', 'l', '-perm', '/6000', '-exec', 'chmod', 'ug-s', '--', '{}', '+']);
  }
  if (actions.length === 0) return;
  // GNU find: `( A ) , ( B )` evaluates every branch for every file.
  tool('find', [dir, '-xdev', ...actions.flatMap((a, i) => [...(i > 0 ? [','] : []), '(', ...a, ')'])]);
}

const COPY = ['-R', '-P', '--preserve=mode,ownership,timestamps,links', '--'];

/**
 * Creates, mounts and fills the filesystem of rw volume `index` of run `runId`. Throws
 * SandboxError (`sandbox.volume_failed`, or `sandbox.volume_refused` when the folder's contents
 * do not fit); leaves nothing mounted when it throws.
 */
export function stageVolume(
  volume: ResolvedVolume,
  runDir: string,
  runId: string,
  index: number,
  agent: Owner,
  invoker: Owner,
): StagedVolume {
  const size = volume.sizeBytes ?? DEFAULT_RW_VOLUME_BYTES;
  const mountPoint = join(runDir, `vol${index}`);
  const image = join(volume.host, `.aegis-vol-${runId}-${index}.img`);
  let mounted = false;
  try {
    mkdirSync(mountPoint, { mode: 0o711 });
    const fd = openSync(image, 'wx', 0o600);
    try {
      ftruncateSync(fd, size);
    } finally {
      closeSync(fd);
    }
    tool('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', `nodiscard,root_owner=${agent.uid}:${agent.gid}`, image]);
    tool('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev,noatime', image, mountPoint]);
    mounted = true;
    unlinkSync(image);
    rmdirSync(join(mountPoint, 'lost+found'));
  } catch (err) {
    rmSync(image, { force: true });
    if (mounted) unmount(mountPoint);
    try {
      rmdirSync(mountPoint);
    } catch {
      /* never created */
    }
    throw new SandboxError(
      'sandbox.volume_failed',
      `cannot set up the ${size}-byte filesystem of volume ${volume.host}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  try {
    if (readdirSync(volume.host).length > 0) {
      tool('cp', [...COPY, `${volume.host}/.`, `${mountPoint}/`]);
      reown(mountPoint, invoker, agent, false);
      // `cp DIR/.` gave the root the host folder's owner and mode: the rw grant makes it the agent's.
      chownSync(mountPoint, agent.uid, agent.gid);
      chmodSync(mountPoint, (statSync(mountPoint).mode & 0o7777 & ~0o6000) | 0o700);
    }
  } catch (err) {
    unmount(mountPoint);
    const full = /No space left|Disk quota/.test((err as Error).message);
    throw new SandboxError(
      full ? 'sandbox.volume_refused' : 'sandbox.volume_failed',
      full
        ? `volume ${volume.host}: its contents do not fit its size (${size} bytes): give it a larger size=`
        : `cannot copy volume ${volume.host} in: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { volume, mountPoint };
}

/**
 * Replaces the host folder's contents with the volume filesystem's (see the ARCHITECTURE NOTE).
 * Returns null, or what went wrong (the host folder then keeps its old contents).
 */
export function copyBack(staged: StagedVolume, runId: string, index: number, agent: Owner, invoker: Owner): string | null {
  const host = staged.volume.host;
  const out = join(host, `.aegis-out-${runId}-${index}`);
  try {
    mkdirSync(out, { mode: 0o700 });
    tool('cp', [...COPY, `${staged.mountPoint}/.`, `${out}/`]);
    reown(out, agent, invoker, true);
  } catch (err) {
    rmSync(out, { recursive: true, force: true });
    return `volume ${host}: the agent's files could not be copied back, the folder keeps its contents from before the run: ${(err as Error).message}`;
  }
  try {
    for (const name of readdirSync(host)) if (name !== basename(out)) rmSync(join(host, name), { recursive: true, force: true });
    for (const name of readdirSync(out)) renameSync(join(out, name), join(host, name));
    rmdirSync(out);
    return null;
  } catch (err) {
    return `volume ${host}: replacing the folder's contents failed midway (the rest is in ${out}): ${(err as Error).message}`;
  }
}

/** Unmounts a staged volume's filesystem (freeing its image) and removes the mount point. */
export function unmount(mountPoint: string): void {
  try {
    tool('umount', [mountPoint]);
  } catch {
    tool('umount', ['-l', mountPoint]);
  }
  rmdirSync(mountPoint);
}

/** Mount points strictly below `dir` (field 5 of /proc/self/mountinfo, octal escapes decoded). */
function mountsBelow(dir: string): string[] {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  return info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && p !== '')
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** Unmounts whatever a dead run left mounted below its run directory (the stale-run sweep). */
export function unmountBelow(dir: string): void {
  for (const m of mountsBelow(dir)) {
    try {
      tool('umount', ['-l', m]);
    } catch {
      /* the run dir removal reports what stays */
    }
  }
}

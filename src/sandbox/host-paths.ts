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
import { readFileSync, realpathSync, statSync, type Stats } from 'node:fs';
import { dirname, isAbsolute, join, relative } from 'node:path';
import { parseMountinfo } from '../host/mountinfo.js';
import { parseSize } from '../manifest/units.js';
import { decidePath, normalizeSandboxPath } from '../policy/paths.js';
import type { Policy } from '../policy/types.js';
import { SandboxError } from './errors.js';
import { AGENT_GID, AGENT_UID, CODE_MOUNT, DEFAULT_ID_MAP, type ResolvedVolume } from './spec/compile.js';
import { DEFAULT_RW_VOLUME_BYTES, MAX_RW_VOLUME_BYTES, MIN_RW_VOLUME_BYTES } from './volumes.js';

/**
 * The host uid the agent's files get: container uid AGENT_UID in the default id map.
 * ARCHITECTURE NOTE: ro volumes must be readable by this uid (checked before start, see
 * host-paths.ts); rw volumes live on a filesystem of their own whose root belongs to it, and are
 * copied back to the host folder as the user running AEGIS (volumes.ts). AEGIS never chowns the
 * host folders themselves.
 */
export const AGENT_HOST_UID = DEFAULT_ID_MAP.hostBase + AGENT_UID;
export const AGENT_HOST_GID = DEFAULT_ID_MAP.hostBase + AGENT_GID;
export const AGENT_HOST = { uid: AGENT_HOST_UID, gid: AGENT_HOST_GID } as const;

/** A `--volume HOST:SANDBOX[:ro|rw[,size=N]]` request (not yet checked). */
export interface VolumeRequest {
  readonly host: string;
  readonly sandbox: string;
  readonly mode: 'ro' | 'rw';
  /** rw only: size of the volume's filesystem (default DEFAULT_RW_VOLUME_BYTES, 1 GiB). */
  readonly sizeBytes?: number;
}

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

/** Mount points of this mount namespace (field 5 of /proc/self/mountinfo, octal escapes decoded). */
function mountPoints(): string[] {
  try {
    return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).map((e) => e.mountPoint);
  } catch {
    return [];
  }
}

/**
 * ARCHITECTURE NOTE: read-only binds are `rbind,ro`, and runtimes make only the top mount
 * read-only (crun 1.8 and runsc refuse `rro` here). A host folder with another mount below it
 * would expose that mount writable (and without nosuid/nodev), so such folders are refused.
 */
function refuseSubmounts(what: string, dir: string, code: 'sandbox.code_dir_refused' | 'sandbox.volume_refused'): void {
  const below = mountPoints().filter((m) => m !== dir && m.startsWith(dir === '/' ? '/' : dir + '/'));
  if (below.length > 0) {
    throw new SandboxError(
      code,
      `${what} ${dir} has other mounts below it (${below.slice(0, 3).join(', ')}${below.length > 3 ? ', ...' : ''}): they would not be read-only in the sandbox; attach a folder without mounts inside`,
    );
  }
}

/** Resolves the code directory and refuses one that escapes the manifest's folder. */
export function resolveCodeDir(manifestDir: string, code: string): string {
  let base: string;
  let dir: string;
  try {
    base = realpathSync(manifestDir);
    dir = realpathSync(join(base, code));
  } catch (err) {
    throw new SandboxError('sandbox.code_dir_refused', `code directory ${join(manifestDir, code)} does not exist`, { cause: err });
  }
  const rel = relative(base, dir);
  if (rel.startsWith('..') || isAbsolute(rel)) {
    throw new SandboxError('sandbox.code_dir_refused', `code directory ${dir} resolves outside the manifest's folder ${base}`);
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new SandboxError('sandbox.code_dir_refused', `code path ${dir} is not a directory`);
  // The agent reads its code as an unprivileged host uid: say so now rather than fail in the runtime.
  const readable =
    st.uid === AGENT_HOST_UID
      ? (st.mode & 0o500) === 0o500
      : st.gid === AGENT_HOST_GID
        ? (st.mode & 0o050) === 0o050
        : (st.mode & 0o005) === 0o005;
  if (!readable) {
    throw new SandboxError(
      'sandbox.code_dir_refused',
      `code directory ${dir} is not readable by the sandbox's host uid ${AGENT_HOST_UID} (mode ${(st.mode & 0o777).toString(8)}): chmod o+rx it`,
    );
  }
  refuseSubmounts('code directory', dir, 'sandbox.code_dir_refused');
  return dir;
}

const RESERVED = ['/proc', '/dev', '/sys', '/tmp', CODE_MOUNT];

/**
 * Checks volume requests against the policy: host path resolved (symlinks) and existing, sandbox
 * path granted by fs.read (ro) or fs.write (rw) according to decidePath. Anything else is refused.
 */
export function resolveVolumes(policy: Policy, requests: readonly VolumeRequest[]): ResolvedVolume[] {
  return requests.map((v) => {
    const sandbox = normalizeSandboxPath(v.sandbox);
    if (sandbox === null || sandbox === '/')
      throw new SandboxError('sandbox.volume_refused', `volume target "${v.sandbox}" is not an absolute path below /`);
    if (RESERVED.some((r) => sandbox === r || sandbox.startsWith(r + '/'))) {
      throw new SandboxError('sandbox.volume_refused', `volume target ${sandbox} is reserved by the sandbox`);
    }
    const d = decidePath(policy.fs, v.mode === 'rw' ? 'write' : 'read', sandbox);
    if (!d.allow)
      throw new SandboxError('sandbox.volume_refused', `volume ${v.host}:${sandbox}:${v.mode} refused: ${d.reason} (${d.detail})`);
    let host: string;
    try {
      host = realpathSync(v.host);
    } catch (err) {
      throw new SandboxError('sandbox.volume_refused', `volume source ${v.host} does not exist`, { cause: err });
    }
    if (!statSync(host).isDirectory()) throw new SandboxError('sandbox.volume_refused', `volume source ${host} is not a directory`);
    refuseSubmounts('volume source', host, 'sandbox.volume_refused');
    if (v.mode === 'ro') {
      // Bound as it is: the agent must be able to read it (else it would only fail inside).
      checkReadableBy(host, AGENT_HOST_UID, AGENT_HOST_GID);
      return { host, sandbox, mode: v.mode };
    }
    if (
      v.sizeBytes !== undefined &&
      !(Number.isSafeInteger(v.sizeBytes) && v.sizeBytes >= MIN_RW_VOLUME_BYTES && v.sizeBytes <= MAX_RW_VOLUME_BYTES)
    ) {
      throw new SandboxError(
        'sandbox.volume_refused',
        `volume ${v.host}: size ${v.sizeBytes} is outside ${MIN_RW_VOLUME_BYTES}..${MAX_RW_VOLUME_BYTES} bytes`,
      );
    }
    return { host, sandbox, mode: v.mode, sizeBytes: v.sizeBytes ?? DEFAULT_RW_VOLUME_BYTES };
  });
}

/** Single-letter binary units as in tmpfs/Docker (`100M`), besides the manifest's (`100MiB`, `100MB`). */
const SHORT_SIZE = /^([0-9]{1,12})([kKmMgGtT])$/;

function parseVolumeSize(flag: string, text: string): number {
  const short = SHORT_SIZE.exec(text);
  if (short) return Number(short[1]) * 1024 ** ('kmgt'.indexOf(short[2]!.toLowerCase()) + 1);
  const r = parseSize(text);
  if (!r.ok) throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": ${r.message}`);
  return r.value;
}

/**
 * Parses `HOST:SANDBOX[:ro|rw[,size=N]]` (default ro; an rw volume without size= gets
 * DEFAULT_RW_VOLUME_BYTES). Sizes: 100M, 2G (binary) or the manifest's units (100MiB, 100MB).
 */
export function parseVolumeFlag(flag: string): VolumeRequest {
  const parts = flag.split(':');
  const [mode, ...options] = (parts.length === 3 ? parts[2]! : 'ro').split(',');
  if ((parts.length !== 2 && parts.length !== 3) || !parts[0] || !parts[1] || (mode !== 'ro' && mode !== 'rw')) {
    throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": expected HOST:SANDBOX[:ro|rw[,size=N]]`);
  }
  let sizeBytes: number | undefined;
  for (const o of options) {
    if (!o.startsWith('size=') || sizeBytes !== undefined)
      throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": unknown or repeated option "${o}" (only size=N, for rw)`);
    if (mode !== 'rw') throw new SandboxError('sandbox.volume_refused', `--volume "${flag}": size= applies to rw volumes only`);
    sizeBytes = parseVolumeSize(flag, o.slice('size='.length));
  }
  return { host: parts[0], sandbox: parts[1], mode, ...(sizeBytes !== undefined ? { sizeBytes } : {}) };
}

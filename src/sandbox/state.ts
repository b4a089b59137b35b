/**
 * Run records: one directory per run under `<stateDir>/runs/<id>`, holding the bundle and a
 * `record.json` that says who owns the run. If AEGIS dies (even by SIGKILL) the record survives,
 * and the next AEGIS start sweeps it: kills what is left in the run's cgroups, asks the runtime
 * to forget the container, removes the cgroups and the directory.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Isolation } from '../policy/types.js';
import { destroyRunCgroups } from './cgroups/index.js';
import { driverFor } from './drivers/index.js';
import { SandboxError } from './errors.js';

/** Run ids as AEGIS makes them (newExecutionId): nothing a runtime could take for a flag. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export const DEFAULT_STATE_DIR = '/run/aegis';

export interface RunRecord {
  id: string;
  isolation: Isolation;
  /** Runtime binary and its `--root`, to delete the container if it outlives AEGIS. */
  runtime: { binary: string; deleteArgs: string[] };
  /** AEGIS process that owns the run, with its start time (pid reuse guard). */
  owner: { pid: number; startTime: string };
  /** The runtime process, once spawned, with its start time (pid reuse guard). */
  runtimePid?: number;
  runtimeStartTime?: string | null;
  /** The user namespace holder (userns.ts), once spawned, with its start time (pid reuse guard). */
  holder?: { pid: number; startTime: string | null };
  createdAt: string;
}

export function runsDir(stateDir: string): string {
  return join(stateDir, 'runs');
}

export function runDir(stateDir: string, id: string): string {
  return join(runsDir(stateDir), id);
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or null if gone. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * The state dir and `runs/` must be traversable (0711, not listable) by the sandbox's host ids:
 * gVisor's gofer opens the bundle's rootfs from inside its user namespace.
 */
function ensureTraversable(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o011) !== 0o011) chmodSync(dir, mode | 0o011);
}

/**
 * runc and runsc resolve the root skeleton by absolute path from inside the sandbox's user
 * namespace: every ancestor of the state dir must be searchable by others.
 */
function checkReachable(stateDir: string): void {
  for (let d = dirname(resolve(stateDir)); ; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) {
      throw new SandboxError('sandbox.state_failed', `state dir ${stateDir} is not reachable from a sandbox: ${d} is not searchable by others (chmod o+x ${d}, or use another state dir)`);
    }
    if (d === '/') return;
  }
}

/**
 * Run records, bundles and skeletons are trusted by the next AEGIS start (the sweep acts on
 * them as root): the state dir must be a real directory owned by this user and writable by
 * nobody else.
 */
function checkPrivate(dir: string): void {
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0) {
    throw new SandboxError('sandbox.state_failed', `state dir ${dir} must be a directory owned by uid ${process.geteuid?.()} and writable by nobody else (it is ${st.isSymbolicLink() ? 'a symlink' : `uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}`})`);
  }
}

let prepared = new Set<string>();

export function writeRecord(stateDir: string, rec: RunRecord): void {
  try {
    if (!prepared.has(stateDir)) {
      mkdirSync(stateDir, { recursive: true, mode: 0o711 });
      checkReachable(stateDir);
      ensureTraversable(stateDir);
      ensureTraversable(runsDir(stateDir));
      checkPrivate(stateDir);
      checkPrivate(runsDir(stateDir));
      prepared = new Set([...prepared, stateDir]);
    }
    mkdirSync(runDir(stateDir, rec.id), { mode: 0o711, recursive: true });
    writeFileSync(join(runDir(stateDir, rec.id), 'record.json'), JSON.stringify(rec));
  } catch (err) {
    if (err instanceof SandboxError) throw err;
    throw new SandboxError('sandbox.state_failed', `cannot write the run record in ${stateDir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Removes a run's directory. `known` lists the paths the run created (deepest last); removing
 * them one by one avoids a directory walk on the hot path. Anything unexpected left behind is
 * removed by the recursive fallback.
 */
export function removeRunDir(stateDir: string, id: string, known: readonly string[] = []): void {
  const dir = runDir(stateDir, id);
  try {
    for (let i = known.length - 1; i >= 0; i--) {
      const p = known[i]!;
      if (p.endsWith('/')) rmdirSync(p);
      else unlinkSync(p);
    }
    rmdirSync(dir);
  } catch {
    rmSync(dir, { recursive: true, force: true });
  }
}

function isStale(rec: RunRecord): boolean {
  return processStartTime(rec.owner.pid) !== rec.owner.startTime;
}

/**
 * Cleans up every run whose owning AEGIS process is gone. Returns the ids swept.
 * Cheap when there is nothing to do (one readdir).
 */
export async function sweepStaleRuns(stateDir: string): Promise<string[]> {
  let ids: string[];
  try {
    ids = readdirSync(runsDir(stateDir));
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const id of ids) {
    let rec: RunRecord | null = null;
    try {
      rec = JSON.parse(readFileSync(join(runDir(stateDir, id), 'record.json'), 'utf8')) as RunRecord;
    } catch {
      rec = null;
    }
    if (rec !== null && !isStale(rec)) continue;
    if (rec === null) {
      // No readable record: stale only if nobody could still be writing it (older than 60 s).
      try {
        if (Date.now() - statSync(runDir(stateDir, id)).mtimeMs < 60_000) continue;
      } catch {
        continue;
      }
    }
    // Only the very process AEGIS started: a reused pid belongs to someone else.
    if (rec?.runtimePid !== undefined && rec.runtimeStartTime != null && processStartTime(rec.runtimePid) === rec.runtimeStartTime) {
      try {
        process.kill(rec.runtimePid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await destroyRunCgroups(id).catch(() => undefined);
    // The holder after the sandbox's processes: its pid keeps the owner uid reserved until then.
    if (rec?.holder !== undefined && rec.holder.startTime !== null && processStartTime(rec.holder.pid) === rec.holder.startTime) {
      try {
        process.kill(rec.holder.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // The record says which runtime; what to execute comes from AEGIS's own driver, never from
    // the file (a record is data, not a command line).
    if (rec !== null && (rec.isolation === 'crun' || rec.isolation === 'runc' || rec.isolation === 'gvisor') && SAFE_ID.test(id)) {
      const driver = driverFor(rec.isolation);
      const stateRoot = join(stateDir, rec.isolation);
      const bundleDir = join(runDir(stateDir, id), 'bundle');
      spawnSync(driver.binary, driver.deleteArgs({ id, stateRoot, bundleDir, pidFile: join(bundleDir, 'pid') }), { stdio: 'ignore', timeout: 10_000 });
    }
    removeRunDir(stateDir, id);
    swept.push(id);
  }
  return swept;
}

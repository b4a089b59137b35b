/**
 * Run records: one directory per run under `<stateDir>/runs/<id>`, holding the bundle and a
 * `record.json` that says who owns the run. If AEGIS dies (even by SIGKILL) the record survives,
 * and the next AEGIS start sweeps it: kills what is left in the run's cgroups, asks the runtime
 * to forget the container, removes the cgroups and the directory, and returns what it removed
 * (the CLI writes it to the audit log as `run.lost`).
 *
 * ARCHITECTURE NOTE (who can read run state): the state dir, `runs/` and every run dir are
 * 0711 (root lists them; others may only traverse, which the runtime needs from inside the
 * sandbox's user namespace to reach the root skeleton) and every file AEGIS writes there
 * (record.json, the bundle's config.json with the agent's environment) is 0600. The runtimes'
 * own state dirs (`<stateDir>/<isolation>`) are 0700.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { processStartTime } from '../host/pid-lock.js';
import type { Isolation } from '../policy/types.js';
import { destroyRunCgroups, runCgroupPids } from './cgroups/index.js';
import { driverFor } from './drivers/index.js';
import { SandboxError } from './errors.js';
import { unmountBelow } from './volumes.js';

/** Run ids as AEGIS makes them (newExecutionId): nothing a runtime could take for a flag. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export const DEFAULT_STATE_DIR = '/run/aegis';

export interface RunRecord {
  /** The run's execution id (also the container id). */
  id: string;
  /** The agent's name (from the manifest), the actor of a `run.lost` event. */
  agent?: string;
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
      throw new SandboxError(
        'sandbox.state_failed',
        `state dir ${stateDir} is not reachable from a sandbox: ${d} is not searchable by others (chmod o+x ${d}, or use another state dir)`,
      );
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
    throw new SandboxError(
      'sandbox.state_failed',
      `state dir ${dir} must be a directory owned by uid ${process.geteuid?.()} and writable by nobody else (it is ${st.isSymbolicLink() ? 'a symlink' : `uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}`})`,
    );
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
    const file = join(runDir(stateDir, rec.id), 'record.json');
    writeFileSync(file, JSON.stringify(rec), { mode: 0o600 });
    chmodSync(file, 0o600); // a file left by an older AEGIS keeps its mode on rewrite
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

/** What the sweep found and removed of one run whose AEGIS process was gone. */
export interface SweptRun {
  /** The execution id (the run dir's name). */
  readonly id: string;
  /** From the run record; null when the record was unreadable (then only the dir was known). */
  readonly agent: string | null;
  readonly isolation: Isolation | null;
  readonly createdAt: string | null;
  /** The dead AEGIS process that owned the run. */
  readonly ownerPid: number | null;
  readonly removed: {
    /** The runtime process AEGIS had started, still alive and killed (its pid), or null. */
    readonly runtimeProcess: number | null;
    /** Processes still in the run's cgroups (the agent's), killed. */
    readonly processes: readonly number[];
    /** The runtime still held the container's state, and was told to delete it. */
    readonly container: boolean;
    /** The run's cgroup directories, removed. */
    readonly cgroups: readonly string[];
    /** The run directory (record and bundle), removed. */
    readonly runDir: string;
  };
}

/** Reads a record as untrusted data: only well-typed fields are used. */
function readRecord(file: string): RunRecord | null {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8')) as Partial<RunRecord> | null;
    if (
      r === null ||
      typeof r !== 'object' ||
      typeof r.id !== 'string' ||
      typeof r.owner?.pid !== 'number' ||
      typeof r.owner.startTime !== 'string'
    )
      return null;
    return r as RunRecord;
  } catch {
    return null;
  }
}

const ISOLATIONS: readonly Isolation[] = ['crun', 'runc', 'gvisor', 'docker', 'microvm'];

/**
 * Cleans up every run whose owning AEGIS process is gone, and returns what it found and removed
 * for each. Cheap when there is nothing to do (one readdir).
 * LIMITATION: two AEGIS processes starting at the same moment may both sweep (and report) the
 * same lost run; every step tolerates "already gone".
 */
export async function sweepStaleRuns(stateDir: string): Promise<SweptRun[]> {
  let ids: string[];
  try {
    ids = readdirSync(runsDir(stateDir));
  } catch {
    return [];
  }
  const swept: SweptRun[] = [];
  for (const id of ids) {
    const rec = readRecord(join(runDir(stateDir, id), 'record.json'));
    if (rec !== null && !isStale(rec)) continue;
    if (rec === null) {
      // No readable record: stale only if nobody could still be writing it (older than 60 s).
      try {
        if (Date.now() - statSync(runDir(stateDir, id)).mtimeMs < 60_000) continue;
      } catch {
        continue;
      }
    }
    // What still ran when the sweep found it, read before anything is killed: killing the runtime
    // process first can make the sandbox end by itself (runsc's sandbox dies with its `runsc run`),
    // and the report must still name what survived AEGIS.
    let survivors: number[] = [];
    try {
      survivors = runCgroupPids(id);
    } catch {
      /* unreadable: destroyRunCgroups below reports what it finds */
    }
    // Only the very process AEGIS started: a reused pid belongs to someone else.
    let runtimeProcess: number | null = null;
    if (
      typeof rec?.runtimePid === 'number' &&
      typeof rec.runtimeStartTime === 'string' &&
      processStartTime(rec.runtimePid) === rec.runtimeStartTime
    ) {
      try {
        process.kill(rec.runtimePid, 'SIGKILL');
        runtimeProcess = rec.runtimePid;
      } catch {
        /* gone */
      }
    }
    const cg = await destroyRunCgroups(id).catch(() => ({ dirs: [] as string[], pids: [] as number[] }));
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
    const isolation = rec !== null && ISOLATIONS.includes(rec.isolation) ? rec.isolation : null;
    let container = false;
    if (isolation !== null && SAFE_ID.test(id)) {
      const driver = driverFor(isolation);
      const stateRoot = join(stateDir, isolation);
      const bundleDir = join(runDir(stateDir, id), 'bundle');
      container = driver.hasState({ id, stateRoot });
      if (driver.removeContainers !== undefined) {
        // An engine (docker): its containers, by the run's label; unreachable: retried at the next start.
        container = (await driver.removeContainers({ id, stateRoot }).catch(() => false)) || container;
      } else
        spawnSync(driver.binary, driver.deleteArgs({ id, stateRoot, bundleDir, pidFile: join(bundleDir, 'pid') }), {
          stdio: 'ignore',
          timeout: 10_000,
        });
    }
    // A size-limited rw volume's filesystem is mounted inside the run dir (volumes.ts).
    unmountBelow(runDir(stateDir, id));
    removeRunDir(stateDir, id);
    swept.push({
      id,
      agent: typeof rec?.agent === 'string' ? rec.agent : null,
      isolation,
      createdAt: typeof rec?.createdAt === 'string' ? rec.createdAt : null,
      ownerPid: rec?.owner.pid ?? null,
      removed: {
        runtimeProcess,
        processes: [...new Set([...survivors, ...cg.pids])].sort((a, b) => a - b),
        container,
        cgroups: cg.dirs,
        runDir: runDir(stateDir, id),
      },
    });
  }
  return swept;
}

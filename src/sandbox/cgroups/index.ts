/**
 * cgroups: the per-run cgroup AEGIS owns, on cgroup v1 (with or without the hybrid v2 mount)
 * and cgroup v2 hosts.
 *
 * ARCHITECTURE NOTE: AEGIS creates `<root>/aegis/<run id>` itself and sets every limit there
 * (memory without swap, CFS quota, pids). Where the agent's processes live depends on the
 * driver's `cgroupMode`: 'inherit' (crun) starts the runtime already inside the run cgroup and
 * tells it to manage none; 'child' (runc, runsc) gives the runtime `<run id>/c` as its
 * `cgroupsPath`. Either way the limits sit on a cgroup AEGIS made and that outlives the
 * runtime's own cleanup, so AEGIS can read usage and OOM counters after the agent exited and
 * kill everything below it. Any failure to create the cgroup or write a limit aborts the run
 * before the agent starts (fail secure), and each written limit is read back.
 */
import { existsSync, readdirSync, readFileSync, rmdirSync, statfsSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ResourceLimits } from '../../policy/types.js';
import { SandboxError } from '../errors.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';
/** Parent of every run's cgroup, in each hierarchy. */
export const AEGIS_CGROUP = 'aegis';
const CGROUP2_SUPER_MAGIC = 0x63677270;

export interface CgroupUsage {
  cpuMs: number;
  maxMemoryBytes: number;
  /** True when the memory limit was hit and the kernel's OOM killer acted (or may have). */
  oom: boolean;
  /** True when a fork or clone in the tree failed because of the pids limit. */
  pidsLimitHit: boolean;
  /** CFS bandwidth periods in which the run had runnable tasks, and those it was throttled in (cpu.stat). */
  cpuPeriods: number;
  cpuThrottledPeriods: number;
}

export interface RunCgroup {
  /** The path handed to a runtime that manages cgroups (`cgroupsPath`): `/aegis/<id>/c`. */
  readonly runtimePath: string;
  /** `cgroup.procs` files a process writes its pid to, to join the run's cgroup everywhere. */
  readonly procsFiles: readonly string[];
  usage(): CgroupUsage;
  /** Every pid in the run's cgroup tree. */
  pids(): number[];
  /** SIGKILL everything in the tree until it is empty (bounded by `timeoutMs`). */
  killAll(timeoutMs?: number): Promise<void>;
  /** Removes the run's cgroups in every hierarchy (after killAll). Idempotent. */
  remove(): void;
  /**
   * cgroup v2 directories the agent's processes live in (the runtime monitor filters on their
   * ids, src/monitor): on a hybrid v1 host, the run's directory in the unified hierarchy (and
   * its `c` child for 'child'-mode runtimes, made in advance so the runtime joins it). Empty on
   * a pure v1 host (no cgroup2 mount).
   */
  readonly monitorDirs: readonly string[];
  /**
   * Current CPU time, memory, number of tasks, and the bytes read and written by the processes
   * alive now (/proc/<pid>/io; the monitor's resource.sample).
   */
  sample(): { cpuMs: number; memoryBytes: number; pids: number; readBytes: number; writeBytes: number };
}

export type CgroupVersion = 'v1' | 'v2';

export function detectCgroupVersion(root = CGROUP_ROOT): CgroupVersion {
  try {
    return statfsSync(root).type === CGROUP2_SUPER_MAGIC ? 'v2' : 'v1';
  } catch (err) {
    throw new SandboxError('sandbox.runtime_unavailable', `cannot inspect ${root}: ${(err as Error).message}`, { cause: err });
  }
}

function fail(what: string, err: unknown): never {
  throw new SandboxError('sandbox.cgroup_failed', `${what}: ${(err as Error).message ?? String(err)}`, { cause: err });
}

function write(file: string, value: string): void {
  try {
    writeFileSync(file, value);
  } catch (err) {
    fail(`cannot write ${value} to ${file}`, err);
  }
}

function readNum(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8').trim());
  } catch {
    return 0;
  }
}

function readKeyed(file: string): Map<string, number> {
  const m = new Map<string, number>();
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [k, v] = line.split(' ');
      if (k && v) m.set(k, Number(v));
    }
  } catch {
    /* absent file: no values */
  }
  return m;
}

/** Every directory of a cgroup tree, deepest first (rmdir order). */
function treeDirs(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

function pidsIn(dir: string): number[] {
  const pids: number[] = [];
  for (const d of treeDirs(dir)) {
    try {
      for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.push(Number(l));
    } catch {
      /* removed meanwhile */
    }
  }
  return pids;
}

/** rchar and wchar of these processes, summed (proc(5) /proc/<pid>/io; a process gone meanwhile counts 0). */
function processIo(pids: readonly number[]): { readBytes: number; writeBytes: number } {
  let readBytes = 0;
  let writeBytes = 0;
  for (const p of pids) {
    const io = readKeyed(`/proc/${p}/io`);
    readBytes += io.get('rchar:') ?? 0;
    writeBytes += io.get('wchar:') ?? 0;
  }
  return { readBytes, writeBytes };
}

async function killLoop(list: () => number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = list();
    if (pids.length === 0) return;
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (Date.now() > deadline)
      throw new SandboxError('sandbox.cgroup_failed', `processes still alive in the run's cgroup: ${pids.join(',')}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Removes a run's cgroup directories (every hierarchy). Processes must be gone. The usual shape
 * (`<id>` with at most the runtime's `c` child) is removed with two rmdir calls per hierarchy;
 * anything else falls back to a walk.
 */
function removeTrees(dirs: readonly string[]): void {
  for (const top of dirs) {
    try {
      try {
        rmdirSync(join(top, 'c'));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      rmdirSync(top);
      continue;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
    }
    for (const d of treeDirs(top)) {
      try {
        rmdirSync(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fail(`cannot remove cgroup ${d}`, err);
      }
    }
  }
}

/** The per-hierarchy directories a run id may have (v1: every mounted hierarchy + unified). */
export function runCgroupDirs(id: string, root = CGROUP_ROOT): string[] {
  if (detectCgroupVersion(root) === 'v2') return [join(root, AEGIS_CGROUP, id)];
  let hier: string[] = [];
  try {
    hier = readdirSync(root, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(root, e.name));
  } catch {
    /* nothing mounted */
  }
  return hier.map((h) => join(h, AEGIS_CGROUP, id)).filter((d) => existsSync(d));
}

/**
 * Kills and removes whatever is left of a run's cgroups (sweeper, failure paths). Returns the
 * cgroup directories found and the processes that were still in them.
 */
/** The processes in the run's cgroups now (every hierarchy), sorted, without duplicates. */
export function runCgroupPids(id: string, root = CGROUP_ROOT): number[] {
  return [...new Set(runCgroupDirs(id, root).flatMap((d) => pidsIn(d)))].sort((a, b) => a - b);
}

export async function destroyRunCgroups(id: string, root = CGROUP_ROOT): Promise<{ dirs: string[]; pids: number[] }> {
  const dirs = runCgroupDirs(id, root);
  const pids = [...new Set(dirs.flatMap((d) => pidsIn(d)))].sort((a, b) => a - b);
  await killLoop(() => dirs.flatMap((d) => pidsIn(d)), 2000);
  removeTrees(dirs);
  return { dirs, pids };
}

/** The cgroup path a 'child'-mode runtime (runc) is given: a child of the run's cgroup. */
export function runtimeCgroupPath(id: string): string {
  return `/${AEGIS_CGROUP}/${id}/c`;
}

/**
 * Creates the run's cgroup with `limits` set and verified. `mode` says where the agent's
 * processes will live: in the run cgroup itself ('inherit') or in a runtime-made child ('child').
 */
export function createRunCgroup(
  id: string,
  limits: ResourceLimits,
  root = CGROUP_ROOT,
  version: CgroupVersion = detectCgroupVersion(root),
  mode: 'inherit' | 'child' = 'inherit',
): RunCgroup {
  return version === 'v2' ? createV2(id, limits, root, mode) : createV1(id, limits, root, mode);
}

const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids'] as const;
/** One transparent huge page: how far below the limit a failed charge may leave the peak. */
const V1_OOM_SLACK = 2 * 1024 * 1024;

function createV1(id: string, limits: ResourceLimits, root: string, mode: 'inherit' | 'child'): RunCgroup {
  const dir = (c: string): string => join(root, c, AEGIS_CGROUP, id);
  for (const c of V1_CONTROLLERS) {
    if (!existsSync(join(root, c)))
      throw new SandboxError('sandbox.runtime_unavailable', `cgroup v1 controller "${c}" is not mounted at ${join(root, c)}`);
  }
  const created: string[] = [];
  try {
    for (const c of V1_CONTROLLERS) {
      try {
        mkdirSync(dir(c), { recursive: true });
        created.push(dir(c));
      } catch (err) {
        fail(`cannot create ${dir(c)}`, err);
      }
    }
    const mem = dir('memory');
    write(join(mem, 'memory.limit_in_bytes'), String(limits.memoryBytes));
    // No swap: memory+swap limited to the same value (only when swap accounting exists).
    if (existsSync(join(mem, 'memory.memsw.limit_in_bytes'))) write(join(mem, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
    write(join(mem, 'memory.swappiness'), '0');
    write(join(dir('cpu'), 'cpu.cfs_period_us'), String(limits.cpu.periodUs));
    write(join(dir('cpu'), 'cpu.cfs_quota_us'), String(limits.cpu.quotaUs));
    write(join(dir('pids'), 'pids.max'), String(limits.pids));
    // Read back: a limit that did not stick means no start.
    const got = readNum(join(mem, 'memory.limit_in_bytes'));
    if (got > limits.memoryBytes || got <= 0) fail('memory limit did not apply', new Error(`read back ${got}`));
    if (readNum(join(dir('cpu'), 'cpu.cfs_quota_us')) !== limits.cpu.quotaUs)
      fail('cpu quota did not apply', new Error('read back differs'));
    if (readNum(join(dir('pids'), 'pids.max')) !== limits.pids) fail('pids limit did not apply', new Error('read back differs'));
    // Hybrid host: the run gets its own cgroup in the unified (v2) hierarchy too, with no
    // controllers, so that its processes have a cgroup id of their own (src/monitor).
    if (existsSync(join(root, 'unified', 'cgroup.procs'))) {
      const u = dir('unified');
      try {
        mkdirSync(mode === 'child' ? join(u, 'c') : u, { recursive: true });
        created.push(u);
      } catch (err) {
        fail(`cannot create ${u}`, err);
      }
    }
  } catch (err) {
    removeTrees(created);
    throw err;
  }
  const unified = existsSync(dir('unified')) ? dir('unified') : null;
  return {
    runtimePath: runtimeCgroupPath(id),
    procsFiles: [...V1_CONTROLLERS.map((c) => join(dir(c), 'cgroup.procs')), ...(unified !== null ? [join(unified, 'cgroup.procs')] : [])],
    monitorDirs: unified === null ? [] : mode === 'child' ? [join(unified, 'c'), unified] : [unified],
    sample: () => ({
      cpuMs: readNum(join(dir('cpuacct'), 'cpuacct.usage')) / 1e6,
      memoryBytes: readNum(join(dir('memory'), 'memory.usage_in_bytes')),
      pids: readNum(join(dir('pids'), 'pids.current')),
      ...processIo(pidsIn(dir('pids'))),
    }),
    usage() {
      const max = readNum(join(dir('memory'), 'memory.max_usage_in_bytes'));
      const failcnt = readNum(join(dir('memory'), 'memory.failcnt')) + readNum(join(dir('memory'), 'memory.memsw.failcnt'));
      const oomKills = readKeyed(join(dir('memory'), 'memory.oom_control')).get('oom_kill') ?? 0;
      const cpuStat = readKeyed(join(dir('cpu'), 'cpu.stat'));
      return {
        cpuPeriods: cpuStat.get('nr_periods') ?? 0,
        cpuThrottledPeriods: cpuStat.get('nr_throttled') ?? 0,
        cpuMs: readNum(join(dir('cpuacct'), 'cpuacct.usage')) / 1e6,
        maxMemoryBytes: max,
        // v1 counts oom_kill in the victim's own cgroup. 'inherit': that is this cgroup, the count
        // is exact. LIMITATION ('child', runc): the runtime's child is gone by now and this kernel
        // leaves failcnt at 0; the parent keeps the peak, so a SIGKILLed run whose peak reached
        // the limit (within one huge page) is reported as OOM (run.ts asks only after SIGKILL).
        oom: oomKills > 0 || (mode === 'child' && (failcnt > 0 || max >= limits.memoryBytes - V1_OOM_SLACK)),
        // pids.events counts the failure in the forking task's cgroup (the runtime's child);
        // the parent keeps its peak (pids.peak, Linux >= 6.1).
        pidsLimitHit:
          (readKeyed(join(dir('pids'), 'pids.events')).get('max') ?? 0) > 0 || readNum(join(dir('pids'), 'pids.peak')) >= limits.pids,
      };
    },
    pids: () => pidsIn(dir('pids')),
    async killAll(timeoutMs = 2000) {
      // Fast path: the pids controller counts every task of the tree (crun, runc and runsc all join it).
      if (readNum(join(dir('pids'), 'pids.current')) === 0 && pidsIn(dir('pids')).length === 0) return;
      await killLoop(() => runCgroupDirs(id, root).flatMap((d) => pidsIn(d)), timeoutMs);
    },
    remove: () => removeTrees(runCgroupDirs(id, root)),
  };
}

function createV2(id: string, limits: ResourceLimits, root: string, mode: 'inherit' | 'child'): RunCgroup {
  const parent = join(root, AEGIS_CGROUP);
  const dir = join(parent, id);
  const ctrls = ['memory', 'cpu', 'pids'];
  try {
    mkdirSync(parent, { recursive: true });
    const available = readFileSync(join(root, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
    for (const c of ctrls) if (!available.includes(c)) fail(`cgroup v2 controller "${c}" is not available`, new Error(available.join(' ')));
    write(join(root, 'cgroup.subtree_control'), ctrls.map((c) => `+${c}`).join(' '));
    write(join(parent, 'cgroup.subtree_control'), ctrls.map((c) => `+${c}`).join(' '));
    mkdirSync(dir);
    if (mode === 'child') mkdirSync(join(dir, 'c'));
  } catch (err) {
    if (err instanceof SandboxError) throw err;
    fail(`cannot create ${dir}`, err);
  }
  try {
    write(join(dir, 'memory.max'), String(limits.memoryBytes));
    if (existsSync(join(dir, 'memory.swap.max'))) write(join(dir, 'memory.swap.max'), '0');
    write(join(dir, 'cpu.max'), `${limits.cpu.quotaUs} ${limits.cpu.periodUs}`);
    write(join(dir, 'pids.max'), String(limits.pids));
    // No controllers in <id>'s subtree_control: processes may live in <id> itself ('inherit'
    // runtimes); a 'child' runtime enables what it needs when it creates <id>/c.
    if (readNum(join(dir, 'memory.max')) !== limits.memoryBytes) fail('memory limit did not apply', new Error('read back differs'));
  } catch (err) {
    removeTrees([dir]);
    throw err;
  }
  return {
    runtimePath: runtimeCgroupPath(id),
    procsFiles: [join(dir, 'cgroup.procs')],
    monitorDirs: mode === 'child' ? [join(dir, 'c'), dir] : [dir],
    sample: () => ({
      cpuMs: (readKeyed(join(dir, 'cpu.stat')).get('usage_usec') ?? 0) / 1000,
      memoryBytes: readNum(join(dir, 'memory.current')),
      pids: readNum(join(dir, 'pids.current')),
      ...processIo(pidsIn(dir)),
    }),
    usage() {
      const events = readKeyed(join(dir, 'memory.events'));
      const cpuStat = readKeyed(join(dir, 'cpu.stat'));
      return {
        cpuPeriods: cpuStat.get('nr_periods') ?? 0,
        cpuThrottledPeriods: cpuStat.get('nr_throttled') ?? 0,
        cpuMs: (cpuStat.get('usage_usec') ?? 0) / 1000,
        maxMemoryBytes: readNum(join(dir, 'memory.peak')),
        oom: (events.get('oom_kill') ?? 0) > 0 || (events.get('oom') ?? 0) > 0,
        pidsLimitHit: (readKeyed(join(dir, 'pids.events')).get('max') ?? 0) > 0 || readNum(join(dir, 'pids.peak')) >= limits.pids,
      };
    },
    pids: () => pidsIn(dir),
    async killAll(timeoutMs = 2000) {
      if (existsSync(join(dir, 'cgroup.kill'))) {
        try {
          writeFileSync(join(dir, 'cgroup.kill'), '1');
        } catch {
          /* fall back to the loop */
        }
      }
      await killLoop(() => pidsIn(dir), timeoutMs);
    },
    remove: () => removeTrees([dir]),
  };
}

/**
 * crun refuses hybrid hosts ("cgroups in hybrid mode not supported") unless a hugetlb v1
 * hierarchy is mounted. Returns what is missing, or null when the host is fine.
 */
export function hybridHugetlbMissing(root = CGROUP_ROOT): string | null {
  if (detectCgroupVersion(root) === 'v2') return null;
  if (!existsSync(join(root, 'unified'))) return null;
  return existsSync(join(root, 'hugetlb', 'cgroup.procs')) ? null : `${join(root, 'hugetlb')} (cgroup v1 hugetlb hierarchy) is not mounted`;
}

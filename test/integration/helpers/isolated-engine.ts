/**
 * A second Docker engine for tests that must prove AEGIS reaches an engine through its API alone
 * (the Docker backend's remote mode: Docker Desktop, an engine in a VM, a tcp:// engine). Forcing
 * that mode on the host's engine proves nothing: a stray bind of a host path, a join of a host
 * namespace or a host cgroup path would still work there. On this engine they do not.
 *
 * `startIsolatedEngine({ hide })` starts Debian's `dockerd` (docker.io 20.10) with everything it
 * runs (its own managed containerd, the shims, runc, the containers) inside
 *   - a private MOUNT namespace (propagation private: nothing mounted there reaches the host,
 *     nothing the host mounts later reaches it) in which every path of `hide`, and the host
 *     engines' state (/run/containerd, /run/docker, /var/lib/docker, /var/lib/containerd), is
 *     covered by an empty tmpfs: a bind of a host path under them shows an empty folder;
 *   - a private PID namespace with /proc mounted for it (tini, docker.io's `docker-init`, is its
 *     init and reaps): `/proc/<host pid>` paths name nothing there, the pids the engine reports
 *     (State.Pid) are not this host's, and killing the init ends every process of the engine;
 *   - a private NETWORK namespace (only `lo`), unless `network: 'host'`; either way the engine
 *     runs with `--bridge=none --iptables=false --ip6tables=false --ip-masq=false
 *     --ip-forward=false`, so it changes neither the host's network nor its firewall;
 *   - its own --data-root, --exec-root, --pidfile, API socket and daemon.json (the host's
 *     /etc/docker/daemon.json is not read), all in a fresh folder /var/tmp/aegis-isoeng-XXXXXX
 *     that is not hidden; its own containerd namespaces and its own cgroup parent
 *     (/aegis-isoeng-XXXXXX in every hierarchy; this host has cgroup v1, where the system engine
 *     uses /docker/<id>).
 *
 * `stop()` kills the namespace's init (so the engine, its containerd, shims and containers),
 * waits until no process of its PID namespace is left, removes its cgroups and its folder, and
 * throws if anything remains. A folder left by a killed test process (its owner, recorded in
 * `owner.json` with its start time, is gone) is torn down the same way by the next start.
 *
 * LIMITATION (what this engine does not isolate): it shares this host's kernel, its cgroup
 * hierarchies (its cgroup parent is a host path, visible under /sys/fs/cgroup) and the user
 * namespace; files outside the hidden paths are the host's own. It proves that AEGIS binds
 * nothing under the hidden paths and joins no namespace through /proc, not that AEGIS uses no
 * host file at all: hide what the test means to prove unused. On a machine where the system
 * engine never ran a container, /run/containerd does not exist: it is created (empty, 0711, as
 * containerd itself creates it) to be covered, and left. dockerd raises the global
 * kernel.keys.root_maxkeys/root_maxbytes to 1000000/25000000 when they are lower, as the system
 * engine (which the tests require running) has already done.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { basename, join, sep } from 'node:path';
import { findExecutable, SYSTEM_DIRS } from '../../../src/host/exec.js';
import { processStartTime } from '../../../src/host/pid-lock.js';
import { engineClient, engineImage } from '../../../src/sandbox/docker/engine.js';

/** Where the engines' folders are made (on disk: overlay2 needs a filesystem with d_type and xattrs). */
const BASE = '/var/tmp';
const PREFIX = 'aegis-isoeng-';
/**
 * The host engines' state, always covered: the engine must start and use its own containerd, and
 * its own identity (dockerd 20.10 reads, or makes, its ID key in /etc/docker/key.json: the fixed
 * path has no flag).
 */
const ENGINE_STATE = ['/run/containerd', '/run/docker', '/var/lib/docker', '/var/lib/containerd', '/etc/docker'];
const TOOLS = ['unshare', 'dockerd', 'docker-init', 'containerd', 'containerd-shim-runc-v2', 'runc', 'mount'] as const;

export interface IsolatedEngineOptions {
  /** Host paths (existing; symlinks resolved) covered by an empty tmpfs in the engine's mount namespace. */
  readonly hide: readonly string[];
  /** The engine's network namespace: its own with only `lo` (default), or the host's. */
  readonly network?: 'private' | 'host';
  /** Bound on the start, until the API answers /_ping (default 30 s). */
  readonly startTimeoutMs?: number;
}

export interface IsolatedEngine {
  /** The engine's API socket: `unix:///var/tmp/aegis-isoeng-XXXXXX/docker.sock`. */
  readonly host: string;
  /** dockerd's pid on this host. */
  readonly pid: number;
  /** The engine's folder (data-root, exec-root, socket, log). */
  readonly dir: string;
  /** The engine's namespaces as /proc/<pid>/ns links read them (`mnt:[...]`, `pid:[...]`). */
  readonly mountNamespace: string;
  readonly pidNamespace: string;
  /** The engine's cgroup parent (`/aegis-isoeng-XXXXXX`, below each hierarchy's root). */
  readonly cgroupParent: string;
  /** The last `bytes` of dockerd's log (its containerd's included). */
  logTail(bytes?: number): string;
  /** Kills the engine and everything it runs, removes its cgroups and folder; throws if anything is left. Idempotent. */
  stop(): Promise<void>;
}

/** What an engine's folder records about it, for `stop()` and for the sweep of a killed test's engine. */
interface EngineRecord {
  readonly owner: { readonly pid: number; readonly start: string };
  readonly unshare?: { readonly pid: number; readonly start: string };
  readonly init?: { readonly pid: number; readonly start: string };
  readonly pidNamespace?: string;
  readonly cgroupParent: string;
}

/** Why no isolated engine can be started here (a missing tool or not root), or null. */
export function isolatedEngineUnavailable(): string | null {
  if (process.geteuid?.() !== 0) return 'the isolated Docker engine needs root';
  const missing = TOOLS.filter((t) => findExecutable(t) === null);
  return missing.length === 0 ? null : `the isolated Docker engine needs ${missing.join(', ')} (Debian docker.io, util-linux)`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function tool(name: (typeof TOOLS)[number]): string {
  const p = findExecutable(name);
  if (p === null) throw new Error(`isolated engine: ${name} is not installed`);
  return p;
}

function nsLink(pid: number, ns: 'mnt' | 'pid'): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/${ns}`);
  } catch {
    return null;
  }
}

function pids(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^[0-9]+$/.test(e))
    .map(Number);
}

/** The parent pid of `pid` (field 4 of /proc/<pid>/stat), or null when it is gone. */
function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * The host pids of every process in PID namespace `ns` or below it: the namespace's own members
 * and their descendants (containers have PID namespaces of their own, nested in the engine's).
 */
export function processesOfNamespace(ns: string): number[] {
  const all = pids();
  const inNs = new Set(all.filter((p) => nsLink(p, 'pid') === ns));
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of all) {
      const pp = parentOf(p);
      if (!inNs.has(p) && pp !== null && inNs.has(pp)) {
        inNs.add(p);
        grew = true;
      }
    }
  }
  return [...inNs];
}

/** `pid` if it is still the process recorded (start time equal), else null: a reused pid is never signalled. */
function same(rec: { pid: number; start: string } | undefined): number | null {
  return rec !== undefined && rec.start !== '' && processStartTime(rec.pid) === rec.start ? rec.pid : null;
}

function record(dir: string, rec: EngineRecord): void {
  writeFileSync(join(dir, 'owner.json'), JSON.stringify(rec), { mode: 0o600 });
}

function readRecord(dir: string): EngineRecord | null {
  try {
    const v = JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as Partial<EngineRecord>;
    return typeof v.owner?.pid === 'number' && typeof v.cgroupParent === 'string' && v.cgroupParent.startsWith(`/${PREFIX}`)
      ? (v as EngineRecord)
      : null;
  } catch {
    return null;
  }
}

/** Every cgroup folder of `parent` (v1 hierarchies and the v2 mount), deepest first. */
function cgroupDirs(parent: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(d, e));
    out.push(d);
  };
  let roots: string[] = [];
  try {
    roots = readdirSync('/sys/fs/cgroup').map((h) => join('/sys/fs/cgroup', h));
  } catch {
    /* no cgroup mount */
  }
  for (const r of ['/sys/fs/cgroup', ...roots]) if (existsSync(join(r, parent))) walk(join(r, parent));
  return [...new Set(out)];
}

/**
 * Kills what `rec` names (the init of the engine's PID namespace, then any process still in it),
 * waits until none is left, removes its cgroups and `dir`. Returns what could not be removed.
 */
async function teardown(dir: string, rec: EngineRecord, child?: ChildProcess): Promise<string[]> {
  const kill = (p: number | null): void => {
    try {
      if (p !== null) process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  };
  // The init's death makes the kernel kill the whole namespace, and unshare (its parent) reaps it
  // and exits. Killing unshare instead would leave the init a zombie until this host's pid 1 reaps it.
  const init = same(rec.init);
  kill(init ?? same(rec.unshare));
  const left: string[] = [];
  const started = Date.now();
  const deadline = started + 15_000;
  if (rec.pidNamespace !== undefined) {
    for (;;) {
      const rest = processesOfNamespace(rec.pidNamespace);
      if (rest.length === 0) break;
      if (Date.now() > deadline) {
        left.push(...rest.map((p) => `process ${p} (${commOf(p)})`));
        break;
      }
      // Not gone after 2 s (unshare did not reap its init): what is left, and unshare, are killed.
      if (Date.now() - started > 2000) for (const p of [...rest, same(rec.unshare)]) kill(p);
      await sleep(20);
    }
  }
  if (child !== undefined && child.exitCode === null && child.signalCode === null)
    await Promise.race([new Promise((r) => child.once('exit', r)), sleep(Math.max(0, deadline - Date.now()))]);
  for (const d of cgroupDirs(rec.cgroupParent)) {
    for (;;) {
      try {
        rmdirSync(d);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        // EBUSY while the last exited task is released.
        if (code !== 'EBUSY' || Date.now() > deadline) {
          left.push(`cgroup ${d} (${code})`);
          break;
        }
        await sleep(50);
      }
    }
  }
  for (;;) {
    try {
      rmSync(dir, { recursive: true, force: true });
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        left.push(`folder ${dir} (${(err as NodeJS.ErrnoException).code})`);
        break;
      }
      await sleep(50);
    }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(dir));
  left.push(...mounts.map((m) => `mount ${m}`));
  return left;
}

/**
 * Imports the AEGIS image whose root is `rootfs` (e.g. a store image's) into `engine` with
 * `engineImage`, through a path outside the store: its import record then lives in the engine's
 * folder (removed by `stop()`), not in the store's host-wide record of the system engine's import
 * (which it would replace: the next run on the system engine would import the image again).
 * Returns the engine's image id. Costs a tar of the whole root each time (a new engine has no image).
 */
export async function importIntoIsolatedEngine(engine: IsolatedEngine, rootfs: string): Promise<string> {
  const link = mkdtempSync(join(engine.dir, 'image-'));
  symlinkSync(realpathSync(rootfs), join(link, 'rootfs'));
  return engineImage(engineClient(engine.host), join(link, 'rootfs'), join(engine.dir, 'aegis-state'));
}

/** Tears down engines whose test process is gone (killed before its `stop()`); their folders are removed. */
export async function sweepIsolatedEngines(): Promise<void> {
  let entries: string[] = [];
  try {
    entries = readdirSync(BASE).filter((e) => e.startsWith(PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const dir = join(BASE, e);
    const rec = readRecord(dir);
    if (rec === null) {
      // A folder whose record was never written: its owner died during the start. Removed once it is old enough.
      try {
        if (Date.now() - statSync(dir).mtimeMs > 10 * 60_000) rmSync(dir, { recursive: true, force: true });
      } catch {
        /* another sweep */
      }
      continue;
    }
    if (same(rec.owner) !== null) continue;
    await teardown(dir, rec);
  }
}

function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: '/_ping', timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => void (body += b.toString()));
      res.on('end', () => resolve(res.statusCode === 200 && body === 'OK'));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Whether covering `hidden` hides `path` (the same path, or one below it). */
function covers(hidden: string, path: string): boolean {
  return path === hidden || path.startsWith(hidden.endsWith(sep) ? hidden : hidden + sep);
}

/**
 * The shell run in the new namespaces (as tini's child): covers each argument before `--` with an
 * empty tmpfs, then becomes the command after it. The paths are arguments, never code.
 */
const COVER_THEN_EXEC =
  'set -e; while [ "$1" != "--" ]; do mount -t tmpfs -o size=1m,mode=0755 aegis-isoeng-hidden "$1"; shift; done; shift; exec "$@"';

/** Starts a Docker engine that does not share this host's view of `hide` (see the module header). */
export async function startIsolatedEngine(opts: IsolatedEngineOptions): Promise<IsolatedEngine> {
  const why = isolatedEngineUnavailable();
  if (why !== null) throw new Error(why);
  const unshare = tool('unshare');
  const dockerd = tool('dockerd');
  const init = tool('docker-init');
  const hide: string[] = [];
  for (const p of opts.hide) {
    try {
      hide.push(realpathSync(p));
    } catch (err) {
      throw new Error(`isolated engine: cannot hide ${p}: ${(err as Error).message}`, { cause: err });
    }
  }
  // The folder the shims' sockets go to is fixed (containerd 1.6: /run/containerd/s): it must exist to be covered.
  if (!existsSync('/run/containerd')) mkdirSync('/run/containerd', { recursive: true, mode: 0o711 });
  // Never created here (this host's /etc is not the harness's to change): the system engine makes it at its first start.
  if (!existsSync('/etc/docker'))
    throw new Error('isolated engine: /etc/docker does not exist (start the system engine once: it creates its key there)');
  // A path below another covered one is hidden already (and no longer exists once its parent is covered).
  const all = [...new Set([...ENGINE_STATE.filter((p) => existsSync(p)), ...hide])];
  const cover = all.filter((p) => !all.some((q) => q !== p && covers(q, p)));

  await sweepIsolatedEngines();
  const started = Date.now();
  const dir = mkdtempSync(join(BASE, PREFIX));
  chmodSync(dir, 0o700);
  const offending = cover.find((h) => covers(h, dir));
  const cgroupParent = `/${basename(dir)}`;
  const rec: { -readonly [K in keyof EngineRecord]: EngineRecord[K] } = {
    owner: { pid: process.pid, start: processStartTime(process.pid) ?? '' },
    cgroupParent,
  };
  record(dir, rec);
  if (offending !== undefined) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`isolated engine: ${offending} would hide the engine's own folder ${dir}`);
  }
  const socket = join(dir, 'docker.sock');
  const logFile = join(dir, 'dockerd.log');
  writeFileSync(join(dir, 'daemon.json'), '{}\n', { mode: 0o600 });
  const args = [
    ...['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--mount-proc'],
    ...(opts.network === 'host' ? [] : ['--net']),
    ...['--', init, '--', '/bin/sh', '-c', COVER_THEN_EXEC, 'aegis-isoeng', ...cover, '--'],
    dockerd,
    ...['--config-file', join(dir, 'daemon.json'), '--data-root', join(dir, 'data'), '--exec-root', join(dir, 'exec')],
    ...['--pidfile', join(dir, 'dockerd.pid'), '-H', `unix://${socket}`],
    ...['--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--ip-forward=false'],
    ...[
      '--cgroup-parent',
      cgroupParent,
      '--containerd-namespace',
      basename(dir),
      '--containerd-plugins-namespace',
      `${basename(dir)}-plugins`,
    ],
    ...['--shutdown-timeout', '1', '--log-level', 'info'],
  ];
  const logFd = openSync(logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    // Only the system directories on PATH: dockerd finds containerd, runc and docker-init through it.
    child = spawn(unshare, args, { stdio: ['ignore', logFd, logFd], detached: true, env: { PATH: SYSTEM_DIRS.join(':') } });
  } finally {
    closeSync(logFd);
  }
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(`exited (${signal ?? code})`));
    child.once('error', (err) => resolve(`could not start: ${err.message}`));
  });
  const logTail = (bytes = 4000): string => {
    try {
      const text = readFileSync(logFile, 'utf8');
      return text.slice(-bytes);
    } catch {
      return '(no log)';
    }
  };
  const fail = async (what: string): Promise<never> => {
    const tail = logTail();
    const left = await teardown(dir, rec, child);
    throw new Error(
      `isolated engine ${what}${left.length > 0 ? `; left behind: ${left.join(', ')}` : ''}\n--- dockerd log (tail) ---\n${tail}`,
    );
  };
  if (child.pid !== undefined) {
    rec.unshare = { pid: child.pid, start: processStartTime(child.pid) ?? '' };
    record(dir, rec);
  }

  // The namespace's init (tini): unshare's only child; its namespaces are the engine's.
  const timeout = opts.startTimeoutMs ?? 30_000;
  const deadline = started + timeout;
  const state: { ended: string | null } = { ended: null };
  void exited.then((m) => (state.ended = m));
  let initPid: number | null = null;
  while (initPid === null && state.ended === null && Date.now() < deadline) {
    initPid = pids().find((p) => parentOf(p) === child.pid && nsLink(p, 'pid') !== nsLink(process.pid, 'pid')) ?? null;
    if (initPid === null) await sleep(10);
  }
  if (initPid === null) return fail(`did not start: ${state.ended ?? `no namespace init within ${timeout} ms`}`);
  const pidNamespace = nsLink(initPid, 'pid');
  const mountNamespace = nsLink(initPid, 'mnt');
  if (pidNamespace === null || mountNamespace === null) return fail(`lost its init (${initPid}) at once`);
  rec.init = { pid: initPid, start: processStartTime(initPid) ?? '' };
  rec.pidNamespace = pidNamespace;
  record(dir, rec);

  while (!(await ping(socket))) {
    if (state.ended !== null) return fail(state.ended);
    if (Date.now() > deadline) return fail(`did not answer /_ping within ${timeout} ms`);
    await sleep(50);
  }
  const dockerdPid = processesOfNamespace(pidNamespace).find((p) => commOf(p) === 'dockerd');
  if (dockerdPid === undefined) return fail('answers, but no dockerd is found in its namespace');

  let stopping: Promise<void> | null = null;
  return {
    host: `unix://${socket}`,
    pid: dockerdPid,
    dir,
    mountNamespace,
    pidNamespace,
    cgroupParent,
    logTail,
    stop: () =>
      (stopping ??= teardown(dir, rec, child).then((left) => {
        if (left.length > 0) throw new Error(`isolated engine ${dir}: left behind: ${left.join(', ')}`);
      })),
  };
}

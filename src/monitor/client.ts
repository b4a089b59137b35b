/**
 * The client of the host's monitor daemon (daemon.ts): what `aegis run` and the orchestrator use
 * (src/run/execute.ts `runMonitor`). `attach` connects to `<dir>/monitor.sock`; when no daemon
 * answers, it starts one (detached, `daemon-main.js`, its messages in `<dir>/monitor.log`) and
 * waits for its socket, so the first run on a host pays bpftrace's attach (~1-2 s) and the next
 * ones only a registration (a few ms).
 *
 * ARCHITECTURE NOTE: the daemon is root's and its socket 0600 in a 0700 directory; what it sends
 * is still checked (`checkRecord`) before the aggregator trusts it. A connection that closes
 * before the final `end` means the monitor died: the execution's `onLost` stops its agent.
 */
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, lstatSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { SOCKET_NAME } from './daemon.js';
import { MonitorError } from './errors.js';
import type { RecordSource, Watch } from './hub.js';
import { monitorOver, type Monitor, type MonitorOptions } from './index.js';
import type { MonitorRecord } from './parse.js';

export interface HostMonitorOptions extends MonitorOptions {
  /** The daemon's directory (socket, lock, log): `<state dir>/monitor`. */
  readonly dir: string;
  /** How long a daemon started here outlives its last client (default 60 s). */
  readonly idleMs?: number;
  /** How long to wait for a daemon started here to listen (default 30 s). */
  readonly startTimeoutMs?: number;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isStr = (v: unknown): v is string => typeof v === 'string';

/** A record from the daemon, checked field by field; null when it is not one. */
export function checkRecord(v: unknown): MonitorRecord | null {
  if (typeof v !== 'object' || v === null) return null;
  const r = v as Record<string, unknown>;
  switch (r['kind']) {
    case 'exec':
      return isInt(r['pid']) && isInt(r['ppid']) && isInt(r['uid']) && isStr(r['path'])
        ? { kind: 'exec', pid: r['pid'], ppid: r['ppid'], uid: r['uid'], path: r['path'] }
        : null;
    case 'arg':
      return isInt(r['pid']) && isInt(r['index']) && isStr(r['value'])
        ? { kind: 'arg', pid: r['pid'], index: r['index'], value: r['value'] }
        : null;
    case 'exec_result':
      return isInt(r['pid']) && isInt(r['ret']) ? { kind: 'exec_result', pid: r['pid'], ret: r['ret'] } : null;
    case 'exit':
      return isInt(r['pid']) && isInt(r['status']) ? { kind: 'exit', pid: r['pid'], status: r['status'] } : null;
    case 'opens': {
      const e = r['entries'];
      if (!Array.isArray(e)) return null;
      const entries = [];
      for (const x of e as Record<string, unknown>[]) {
        if (
          typeof x !== 'object' ||
          x === null ||
          typeof x['write'] !== 'boolean' ||
          !isInt(x['errno']) ||
          !isStr(x['path']) ||
          !isInt(x['count'])
        )
          return null;
        entries.push({ write: x['write'], errno: x['errno'], path: x['path'], count: x['count'] });
      }
      return { kind: 'opens', entries };
    }
    case 'open_total':
      return isInt(r['count']) ? { kind: 'open_total', count: r['count'] } : null;
    case 'denied': {
      const e = r['entries'];
      if (!Array.isArray(e)) return null;
      const entries = [];
      for (const x of e as Record<string, unknown>[]) {
        if (typeof x !== 'object' || x === null || !isInt(x['nr']) || !isInt(x['errno']) || !isInt(x['count'])) return null;
        entries.push({ nr: x['nr'], errno: x['errno'], count: x['count'] });
      }
      return { kind: 'denied', entries };
    }
    case 'lost':
      return isInt(r['count']) ? { kind: 'lost', count: r['count'] } : null;
    case 'end':
    case 'malformed':
      return { kind: r['kind'] };
    default:
      return null;
  }
}

/** The daemon's entry point, next to this module (dist/src/monitor/daemon-main.js). */
const DAEMON_MAIN = fileURLToPath(new URL('./daemon-main.js', import.meta.url));

function tryConnect(path: string): Promise<Socket | null> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.removeAllListeners('error');
      s.on('error', () => undefined);
      resolve(s);
    });
    s.once('error', () => resolve(null));
  });
}

/** Starts a daemon for `o.dir` (detached: it outlives this process); `failed()`: it exited non-zero. */
function startDaemonProcess(o: HostMonitorOptions): { failed(): boolean } {
  let code: number | null = null;
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  assertPrivateDir(o.dir);
  // O_NOFOLLOW: root never appends to a file a link in the directory points at.
  const log = openSync(
    join(o.dir, 'monitor.log'),
    constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    const child = spawn(
      process.execPath,
      [
        DAEMON_MAIN,
        '--dir',
        o.dir,
        '--idle-ms',
        String(o.idleMs ?? 60_000),
        ...(o.bpftrace !== undefined ? ['--bpftrace', o.bpftrace] : []),
      ],
      // Nothing of the caller's environment (it may hold API keys): the daemon needs none of it.
      { detached: true, stdio: ['ignore', 'ignore', log], cwd: '/', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
    );
    child.on('error', () => (code = 127));
    child.on('exit', (c) => (code = c ?? 1));
    child.unref();
  } finally {
    closeSync(log);
  }
  return { failed: () => code !== null && code !== 0 };
}

/** The last lines of the daemon's log (why it did not start). */
function logTail(dir: string): string {
  try {
    return readFileSync(join(dir, 'monitor.log'), 'utf8').trim().split('\n').slice(-2).join('; ').slice(-500);
  } catch {
    return '';
  }
}

/**
 * SECURITY: the daemon's socket is trusted to report a run's events (an "ok" then "end" from a
 * impostor would pass for a complete, empty trace), so its directory must be a real directory
 * owned by this (root) process's user and closed to everyone else (0700), as startDaemon makes it.
 * Exported for its test.
 */
export function assertPrivateDir(dir: string): void {
  let st;
  try {
    st = lstatSync(dir);
  } catch (err) {
    throw new MonitorError('monitor.dir_unsafe', `the monitor's directory ${dir} cannot be read: ${(err as Error).message}`);
  }
  const euid = process.geteuid?.() ?? -1;
  if (!st.isDirectory() || st.uid !== euid || (st.mode & 0o077) !== 0)
    throw new MonitorError(
      'monitor.dir_unsafe',
      `the monitor's directory ${dir} must be a directory owned by uid ${euid} with mode 0700 (found ${st.isSymbolicLink() ? 'a symbolic link' : `uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}`})`,
    );
}

/** A connection to the daemon, starting one when none answers. Throws MonitorError. */
async function connectDaemon(o: HostMonitorOptions): Promise<Socket> {
  const sock = join(o.dir, SOCKET_NAME);
  if (existsSync(o.dir)) assertPrivateDir(o.dir);
  const first = await tryConnect(sock);
  if (first !== null) return first;
  const started = startDaemonProcess(o);
  const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
  let wait = 10;
  while (Date.now() < deadline) {
    await sleep(wait);
    wait = Math.min(wait * 2, 100);
    const s = await tryConnect(sock);
    if (s !== null) return s;
    // Exited non-zero: it will not listen (exit 0 means another daemon won the lock: keep trying).
    if (started.failed()) throw new MonitorError('monitor.attach_failed', `the host's monitor daemon did not start: ${logTail(o.dir)}`);
  }
  throw new MonitorError(
    'monitor.attach_failed',
    `the host's monitor daemon did not start within ${o.startTimeoutMs ?? 30_000} ms (see ${join(o.dir, 'monitor.log')})`,
  );
}

/** The daemon as a RecordSource: one connection per execution. */
function daemonSource(o: HostMonitorOptions): RecordSource {
  return {
    async watch(cgroups, onRecord, onLost): Promise<Watch> {
      const s = await connectDaemon(o);
      const rl = createInterface({ input: s, crlfDelay: Infinity });
      let state: 'waiting' | 'watching' | 'done' = 'waiting';
      let answered: (err: Error | null) => void = () => undefined;
      const answer = new Promise<Error | null>((r) => (answered = r));
      let ended: () => void = () => undefined;
      const endP = new Promise<void>((r) => (ended = r));
      let gotEnd = false;
      rl.on('line', (line) => {
        let m: Record<string, unknown>;
        try {
          m = JSON.parse(line) as Record<string, unknown>;
        } catch {
          m = { r: { kind: 'malformed' } };
        }
        if (state === 'waiting') {
          if (m['ok'] === true) {
            state = 'watching';
            answered(null);
          } else
            answered(new MonitorError('monitor.attach_failed', `the monitor daemon refused: ${String(m['error'] ?? line.slice(0, 200))}`));
          return;
        }
        if ('r' in m) {
          const r = checkRecord(m['r']) ?? { kind: 'malformed' as const };
          if (r.kind === 'end') gotEnd = true;
          onRecord(r);
        }
      });
      s.on('close', () => {
        if (state === 'waiting') answered(new MonitorError('monitor.attach_failed', 'the monitor daemon closed the connection'));
        else if (state === 'watching' && !gotEnd) onLost("the host's monitor daemon is gone");
        state = 'done';
        ended();
      });
      s.write(`${JSON.stringify({ op: 'watch', cgroups })}\n`);
      const err = await answer;
      if (err !== null) {
        s.destroy();
        throw err;
      }
      return {
        finish: async () => {
          if (state !== 'watching') return;
          s.write(`${JSON.stringify({ op: 'finish' })}\n`);
          await endP;
          if (!gotEnd) throw new MonitorError('monitor.attach_failed', 'the monitor daemon closed before the final counts');
        },
        cancel: () => {
          state = 'done';
          s.destroy();
        },
      };
    },
  };
}

/**
 * The host's shared monitor: executions attach through the daemon of `o.dir`. `hold()` keeps the
 * daemon running while the caller lives (the orchestrator: `aegis serve` starts it at start-up
 * and holds it; a daemon that died is held again at the next attach, which restarts it),
 * returning the release.
 */
export function hostMonitor(o: HostMonitorOptions): Monitor & { hold(): Promise<() => void> } {
  const base = monitorOver(() => Promise.resolve(daemonSource(o)), o);
  let holding = false;
  let held: Promise<Socket> | null = null;
  const ensureHold = (): Promise<Socket> | null => {
    if (!holding || held !== null) return held;
    const p = connectDaemon(o).then((s) => {
      s.write(`${JSON.stringify({ op: 'hold' })}\n`);
      s.on('close', () => {
        if (held === p) held = null;
      });
      if (!holding) s.destroy();
      return s;
    });
    held = p;
    p.catch(() => {
      if (held === p) held = null;
    });
    return p;
  };
  return {
    attach: async (target, sink) => {
      const session = await base.attach(target, sink);
      void ensureHold()?.catch(() => undefined);
      return session;
    },
    hold: async () => {
      holding = true;
      await ensureHold();
      return () => {
        holding = false;
        const h = held;
        held = null;
        void h?.then((s) => s.destroy()).catch(() => undefined);
      };
    },
  };
}

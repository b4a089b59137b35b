/**
 * The host's monitor daemon (adapter): one MonitorHub (one bpftrace) that every `aegis run` and
 * `aegis serve` of the host shares through a unix socket, `<dir>/monitor.sock` (dir: the state
 * dir's `monitor/`, default /run/aegis/monitor). Started by the first client that finds none
 * (client.ts), it stops `idleMs` after its last client left.
 *
 * Protocol (one JSON object a line, both ways), one connection per execution:
 *   client: {"op":"watch","cgroups":[<cgroup v2 id>...]}   server: {"ok":true} | {"error":"..."}
 *   server: {"r":<MonitorRecord>} ...                       (this execution's records only)
 *   client: {"op":"finish"}                                 server: the final records, {"r":{"kind":"end"}}, then closes
 *   client: {"op":"hold"}                                   keeps the daemon alive while open (aegis serve)
 * A connection that closes before `finish` unregisters its cgroups.
 *
 * ARCHITECTURE NOTE: the socket is in a directory of mode 0700 and is itself 0600, both root's:
 * only root registers cgroups or reads events. One daemon per directory, held by a pid lock
 * (`monitor.pid`, src/host/pid-lock.ts): a second one started at the same moment exits. If
 * bpftrace dies, the daemon exits too (every watching client is told: its agent is stopped, fail
 * secure), and the next client starts a new one.
 */
import { chmodSync, mkdirSync, unlinkSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { lockIsStale, tryCreateLock } from '../host/pid-lock.js';
import { MonitorHub, type HubOptions, type Watch } from './hub.js';

export const SOCKET_NAME = 'monitor.sock';
export const LOCK_NAME = 'monitor.pid';
/** Longest request line a client may send. */
const MAX_REQUEST = 64 * 1024;
/** Output a slow client may have queued before it is dropped (its execution is then told it lost the monitor). */
const MAX_QUEUED = 64 * 1024 * 1024;

export interface DaemonOptions extends HubOptions {
  readonly dir: string;
  /** How long the daemon outlives its last client (default 60 s). */
  readonly idleMs?: number;
  /** Operator messages (the daemon's log file). */
  readonly log?: (line: string) => void;
}

export interface RunningDaemon {
  readonly hub: MonitorHub;
  /** Settles when the daemon has stopped (idle, bpftrace gone, or close()). */
  readonly stopped: Promise<void>;
  close(): Promise<void>;
}

/**
 * Takes the lock, starts the hub, listens. Resolves null when another daemon holds the lock.
 * Throws MonitorError when bpftrace does not attach.
 */
export async function startDaemon(o: DaemonOptions): Promise<RunningDaemon | null> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  chmodSync(o.dir, 0o700);
  const lock = join(o.dir, LOCK_NAME);
  const sock = join(o.dir, SOCKET_NAME);
  for (;;) {
    if (await tryCreateLock(lock)) break;
    if (!(await lockIsStale(lock))) return null;
    await unlink(lock).catch(() => undefined);
  }
  let hub: MonitorHub;
  try {
    hub = await MonitorHub.start(o);
  } catch (err) {
    await unlink(lock).catch(() => undefined);
    throw err;
  }
  const log = o.log ?? (() => undefined);
  const conns = new Set<Socket>();
  let idle: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | null = null;
  let resolveStopped: () => void = () => undefined;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  const server: Server = createServer((c) => serve(c));

  const close = (): Promise<void> => {
    stopping ??= (async () => {
      clearTimeout(idle);
      server.close();
      for (const c of conns) c.destroy();
      try {
        unlinkSync(sock);
      } catch {
        /* gone */
      }
      await hub.close();
      await unlink(lock).catch(() => undefined);
      resolveStopped();
    })();
    return stopping;
  };
  const armIdle = (): void => {
    clearTimeout(idle);
    if (conns.size > 0) return;
    idle = setTimeout(() => {
      if (conns.size === 0) {
        log('idle: stopping');
        void close();
      }
    }, o.idleMs ?? 60_000);
  };
  void hub.exited.then(() => {
    if (stopping === null) log(`bpftrace exited: stopping (${hub.failure ?? ''})`);
    void close();
  });

  function serve(c: Socket): void {
    conns.add(c);
    clearTimeout(idle);
    let watch: Watch | null = null;
    let finished = false;
    const send = (o: unknown): void => {
      if (c.destroyed) return;
      if (c.writableLength > MAX_QUEUED) {
        c.destroy();
        return;
      }
      c.write(`${JSON.stringify(o)}\n`);
    };
    const rl = createInterface({ input: c, crlfDelay: Infinity });
    let busy = false;
    rl.on('line', (line) => {
      void (async () => {
        let req: { op?: unknown; cgroups?: unknown };
        try {
          if (line.length > MAX_REQUEST) throw new Error('request too long');
          req = JSON.parse(line) as typeof req;
          if (typeof req !== 'object' || req === null) throw new Error('not an object');
        } catch (err) {
          send({ error: `bad request: ${(err as Error).message}` });
          c.end();
          return;
        }
        if (req.op === 'hold') return;
        if (req.op === 'watch' && watch === null && !busy) {
          busy = true;
          const ids = req.cgroups;
          if (
            !Array.isArray(ids) ||
            ids.length === 0 ||
            ids.length > 8 ||
            !ids.every((x) => Number.isSafeInteger(x) && (x as number) > 0)
          ) {
            send({ error: 'cgroups must be 1 to 8 positive integers' });
            c.end();
            return;
          }
          try {
            watch = await hub.watch(
              ids as number[],
              (r) => send({ r }),
              (why) => {
                send({ lost: why });
                c.end();
              },
            );
            if (c.destroyed) watch.cancel();
            else send({ ok: true });
          } catch (err) {
            send({ error: (err as Error).message });
            c.end();
          }
          return;
        }
        if (req.op === 'finish' && watch !== null && !finished) {
          finished = true;
          try {
            await watch.finish();
          } catch (err) {
            send({ lost: (err as Error).message });
          }
          c.end();
          return;
        }
        send({ error: 'unexpected request' });
        c.end();
      })();
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      conns.delete(c);
      if (!finished) watch?.cancel();
      armIdle();
    });
  }

  try {
    await unlink(sock).catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // 0600 from the start: no moment where another user could connect.
      const old = process.umask(0o177);
      try {
        server.listen(sock, () => resolve());
      } finally {
        process.umask(old);
      }
    });
  } catch (err) {
    await close();
    throw err;
  }
  armIdle();
  log(`listening on ${sock} (bpftrace pid ${hub.pid ?? '?'})`);
  return { hub, stopped, close };
}

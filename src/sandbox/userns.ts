/**
 * The sandbox's user namespace, made by AEGIS before the runtime starts (crun and runc).
 *
 * ARCHITECTURE NOTE: since Linux 5.14 most per-user kernel counters ("ucounts": inotify instances
 * and watches, POSIX message queue bytes, pending signals, SHM_LOCK'ed memory, processes, user
 * and other namespaces) are charged to the (user namespace, uid) of the caller and, walking up,
 * to the owner of each user namespace in its parent. The owner is the euid of the process that
 * created the namespace. When crun or runc create it, that is host root: an agent holding 127
 * inotify instances made every `inotify_init` of host root fail, and nine message queues filled
 * root's RLIMIT_MSGQUEUE (and every other sandbox's, which are charged to root as well).
 *
 * So AEGIS creates the namespace itself, from a holder process running as a host uid of its own:
 * `/bin/sh` computes uid = USERNS_OWNER_BASE + its pid and execs `setpriv` (drops to that uid and
 * gid, no supplementary groups, no capabilities), which execs `unshare --user`, which execs
 * `/bin/sh` to say "ready" and then `sleep infinity` (the pid is the same throughout). AEGIS
 * (root) writes the namespace's uid_map and gid_map (the usual 0..65535 -> 100000..165535), and
 * the runtime joins it by path (`/proc/<pid>/ns/user`). Live pids are unique, so every running
 * sandbox has a distinct owner: sandboxes can exhaust neither root's counters nor each other's,
 * only those of their own owner (bounded by the host's per-user limits, e.g. 128 inotify
 * instances, and by SANDBOX_RLIMITS).
 *
 * The holder lives until the run is cleaned up (it keeps the pid, hence the owner uid, reserved
 * for as long as the sandbox can run) and is killed then; its pid and start time are in the run
 * record, so the stale-run sweep kills it too (state.ts). A process running as the owner uid in
 * the host's namespace would have every capability in the sandbox's namespace: only the holder
 * runs as it, and it holds no capability on the host.
 * LIMITATION: the owner range [USERNS_OWNER_BASE, + pid_max) must not be used by any host account
 * or /etc/subuid range (not checked).
 */
import { spawn } from 'node:child_process';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { SandboxError } from './errors.js';
import { USERNS_OWNER_BASE, usernsFor, type UsernsOption } from './spec/compile.js';
import { processStartTime } from './state.js';

export interface UsernsHolder extends UsernsOption {
  readonly pid: number;
  readonly startTime: string | null;
  /** Waits until the namespace exists, checks its owner and writes its id maps. */
  ready(idMap: { readonly hostBase: number; readonly size: number }): Promise<void>;
  /** SIGKILL, resolved once it is gone (bounded; idempotent). */
  kill(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;
const SCRIPT = 'u=$(($1 + $$)); exec setpriv --reuid=$u --regid=$u --clear-groups --inh-caps=-all -- unshare --user -- /bin/sh -c "echo ready; exec sleep infinity"';

/** Spawns the holder (returns at once; `ready()` completes it). Throws SandboxError('sandbox.userns_failed'). */
export function spawnUsernsHolder(): UsernsHolder {
  const child = spawn('/bin/sh', ['-c', SCRIPT, 'aegis-userns', String(USERNS_OWNER_BASE)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new SandboxError('sandbox.userns_failed', 'cannot start the user namespace holder (/bin/sh)');
  const startTime = processStartTime(pid);
  let out = '';
  let err = '';
  let exited = false;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdout.on('data', (b: Buffer) => void (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
  const lineOrExit = new Promise<void>((resolve) => {
    child.stdout.on('data', () => {
      if (out.includes('\n')) resolve();
    });
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', () => resolve());
  });
  const ns = usernsFor(pid);
  const fail = (why: string): SandboxError => new SandboxError('sandbox.userns_failed', `user namespace holder ${pid}: ${why}`);

  return {
    ...ns,
    pid,
    startTime,
    async ready(idMap) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([lineOrExit.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), READY_TIMEOUT_MS)))]);
      clearTimeout(timer);
      if (timedOut) throw fail('not ready in time');
      if (exited || out !== 'ready\n') throw fail(`exited before its namespace was made: ${err.trim() || out.trim()}`);
      // The namespace must be a new one, created by the owner uid (fail secure on any doubt).
      let uids: string | undefined;
      let gids: string | undefined;
      try {
        if (readlinkSync(`/proc/${pid}/ns/user`) === readlinkSync('/proc/self/ns/user')) throw fail('did not create a user namespace');
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        uids = /^Uid:\s+(.*)$/m.exec(status)?.[1];
        gids = /^Gid:\s+(.*)$/m.exec(status)?.[1];
      } catch (e) {
        if (e instanceof SandboxError) throw e;
        throw fail(`cannot inspect it: ${(e as Error).message}`);
      }
      const owner = String(ns.ownerUid);
      // In the host's namespace view, /proc shows host ids.
      if (uids?.split(/\s+/).some((u) => u !== owner) !== false || gids?.split(/\s+/).some((g) => g !== owner) !== false) {
        throw fail(`runs as uid ${uids ?? '?'} gid ${gids ?? '?'}, expected ${owner}`);
      }
      const map = `0 ${idMap.hostBase} ${idMap.size}\n`;
      try {
        writeFileSync(`/proc/${pid}/uid_map`, map);
        writeFileSync(`/proc/${pid}/gid_map`, map);
      } catch (e) {
        throw fail(`cannot write its id maps: ${(e as Error).message}`);
      }
    },
    async kill() {
      if (!exited) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([gone, new Promise<void>((r) => (timer = setTimeout(r, 2000)))]);
      clearTimeout(timer);
    },
  };
}

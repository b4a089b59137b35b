/**
 * The sandbox's user namespace, made by AEGIS before the runtime starts (crun and runc).
 *
 * ARCHITECTURE NOTE: since Linux 5.14 most per-user kernel counters ("ucounts": inotify instances
 * and watches, POSIX message queue bytes, pending signals, SHM_LOCK'ed memory, processes, user
 * and other namespaces) are charged to the (user namespace, uid) of the caller and, walking up,
 * to the owner of each user namespace in its parent. The owner is the euid of the process that
 * created the namespace. When crun or runc create it, that is host root: an agent holding 127
 * inotify instances made every `inotify_init` of host root fail, and nine message queues filled
 * root's RLIMIT_MSGQUEUE (other sandboxes are charged to root as well).
 *
 * So AEGIS creates the namespace itself, from a holder process running as a host uid of its own:
 * a tiny static program (holder-elf.ts, written once to `<stateDir>/bin/`) computes
 * uid = USERNS_OWNER_BASE + its pid, drops to that uid and gid with no groups and no
 * capabilities, unshares a user namespace, drops the capabilities it got there, says "ready" and
 * pauses. AEGIS (root) checks from the host that it runs as that uid, without capabilities, in a
 * new user namespace, then writes the namespace's uid_map and gid_map (the usual
 * 0..65535 -> 100000..165535), and the runtime joins it by path (`/proc/<pid>/ns/user`). Live
 * pids are unique, so every running sandbox has a distinct owner: sandboxes can exhaust neither
 * root's counters nor each other's, only those of their own owner (bounded by the host's per-user
 * limits, e.g. 128 inotify instances, and by SANDBOX_RLIMITS).
 *
 * The holder lives until the run is cleaned up (it keeps the pid, hence the owner uid, reserved
 * for as long as the sandbox can run) and is killed then; its pid and start time are in the run
 * record, so the stale-run sweep kills it too (state.ts). A process running as the owner uid in
 * the host's namespace would have every capability in the sandbox's namespace: only the holder
 * runs as it, it holds no capability anywhere, and it is not visible in the sandbox (host pid
 * namespace).
 * LIMITATION: the owner range [USERNS_OWNER_BASE, + pid_max) must not be used by any host account
 * or /etc/subuid range (not checked).
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { holderElf } from './holder-elf.js';
import { SandboxError } from './errors.js';
import { USERNS_OWNER_BASE, usernsFor, type UsernsOption } from './spec/compile.js';
import { processStartTime } from '../host/pid-lock.js';

export interface UsernsHolder extends UsernsOption {
  readonly pid: number;
  readonly startTime: string | null;
  /** Waits until the namespace exists, checks its owner and writes its id maps. */
  ready(idMap: { readonly hostBase: number; readonly size: number }): Promise<void>;
  /** SIGKILL, resolved once it is gone (bounded; idempotent). */
  kill(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;

let installed = new Map<string, string>();

/** Writes the holder program to `<stateDir>/bin/` (once per state dir and process; the state dir is private). */
function installHolder(stateDir: string): string {
  const known = installed.get(stateDir);
  // Content is compared once per process; a removed file (state dir cleaned) is reinstalled.
  if (known !== undefined && existsSync(known)) return known;
  const dir = join(stateDir, 'bin');
  const path = join(dir, 'aegis-userns-holder');
  const elf = holderElf(USERNS_OWNER_BASE);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    let same = false;
    try {
      same = readFileSync(path).equals(elf);
    } catch {
      same = false;
    }
    if (!same) {
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, elf, { mode: 0o700 });
      renameSync(tmp, path);
    }
  } catch (e) {
    throw new SandboxError('sandbox.userns_failed', `cannot install the user namespace holder in ${dir}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  installed = new Map([...installed, [stateDir, path]]);
  return path;
}

/** Spawns the holder (returns at once; `ready()` completes it). Throws SandboxError('sandbox.userns_failed'). */
export function spawnUsernsHolder(stateDir: string): UsernsHolder {
  // LIMITATION: the holder is generated x86-64 machine code (holder-elf.ts), like the seccomp
  // profile's single architecture: on any other host, refuse rather than run without it.
  if (process.arch !== 'x64')
    throw new SandboxError('sandbox.userns_failed', `the user namespace holder is an x86-64 program; this host is ${process.arch}`);
  const child = spawn(installHolder(stateDir), [], { stdio: ['ignore', 'pipe', 'pipe'] });
  let spawnError: Error | null = null;
  child.once('error', (e) => (spawnError = e)); // also when spawn fails (pid undefined below)
  const pid = child.pid;
  if (pid === undefined) {
    throw new SandboxError(
      'sandbox.userns_failed',
      `cannot start the user namespace holder ${join(stateDir, 'bin', 'aegis-userns-holder')} (is the state dir on a noexec mount?)`,
    );
  }
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
      const timedOut = await Promise.race([
        lineOrExit.then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), READY_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (timedOut) throw fail('not ready in time');
      if (exited || out !== 'ready\n')
        throw fail(`exited before its namespace was made: ${(spawnError as Error | null)?.message ?? (err.trim() || out.trim())}`);
      // The namespace must be a new one, created by the owner uid (fail secure on any doubt).
      let uids: string | undefined;
      let gids: string | undefined;
      let caps: string[] = [];
      try {
        if (readlinkSync(`/proc/${pid}/ns/user`) === readlinkSync('/proc/self/ns/user')) throw fail('did not create a user namespace');
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        uids = /^Uid:\s+(.*)$/m.exec(status)?.[1];
        gids = /^Gid:\s+(.*)$/m.exec(status)?.[1];
        caps = ['CapPrm', 'CapEff', 'CapAmb'].map((k) => new RegExp(`^${k}:\\s+([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? 'missing');
      } catch (e) {
        if (e instanceof SandboxError) throw e;
        throw fail(`cannot inspect it: ${(e as Error).message}`);
      }
      const owner = String(ns.ownerUid);
      // In the host's namespace view, /proc shows host ids.
      if (uids?.split(/\s+/).some((u) => u !== owner) !== false || gids?.split(/\s+/).some((g) => g !== owner) !== false) {
        throw fail(`runs as uid ${uids ?? '?'} gid ${gids ?? '?'}, expected ${owner}`);
      }
      if (caps.some((c) => !/^0+$/.test(c))) throw fail(`holds capabilities (${caps.join(' ')})`);
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

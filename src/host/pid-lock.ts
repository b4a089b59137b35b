/**
 * Pid-file locks (adapter), the one implementation every area uses: the audit store's writer
 * lock, the image store's tag lock, the gateway's address slots and the sandbox run records.
 *
 * A lock is a file created with O_EXCL holding its owner as JSON: the pid, the process's start
 * time (field 22 of /proc/<pid>/stat) and whatever the caller adds. An owner is alive only if
 * a process with that pid exists AND started at that time, so a lock left by a killed process
 * is not kept alive by an unrelated process that later got the same pid (pid reuse).
 *
 * LIMITATION: taking over a stale lock is check-then-unlink: two processes that find the same
 * stale lock at the same instant can both remove it, and one may remove the other's fresh lock.
 * Callers that write under the lock re-check their own preconditions (the audit store re-reads
 * the file length); the others only guard short, idempotent work.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, stat, unlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export interface LockOwner {
  readonly pid: number;
  /** Start time of `pid` in clock ticks since boot, or null when unknown (an old lock file). */
  readonly start: string | null;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or null if gone. */
export function processStartTime(pid: number): string | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether a process with `pid` exists (EPERM: it exists, owned by someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let self: LockOwner | undefined;

/**
 * This process as a lock owner. Read once: a process's pid and start time never change, and
 * the audit store takes a lock per batch (a /proc read each time showed in its profile).
 */
export function selfOwner(): LockOwner {
  self ??= { pid: process.pid, start: processStartTime(process.pid) };
  return self;
}

/** Whether `owner` still runs: same pid and, when recorded, same start time. */
export function ownerAlive(owner: LockOwner): boolean {
  if (owner.start === null) return pidAlive(owner.pid);
  return processStartTime(owner.pid) === owner.start;
}

/**
 * Parses a lock file's text (untrusted: anyone who could write the state dir wrote it).
 * Accepts the JSON form and a bare pid (lock files written before the JSON form).
 */
export function parseLockOwner<E extends object = Record<string, never>>(text: string): (LockOwner & Partial<E>) | null {
  const t = text.trim();
  if (/^[0-9]{1,10}$/.test(t)) {
    const pid = Number(t);
    return pid > 0 ? ({ pid, start: null } as LockOwner & Partial<E>) : null;
  }
  try {
    const o = JSON.parse(t) as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || !Number.isSafeInteger(o['pid']) || (o['pid'] as number) <= 0) return null;
    const start = typeof o['start'] === 'string' && /^[0-9]{1,20}$/.test(o['start']) ? o['start'] : null;
    return { ...o, pid: o['pid'] as number, start } as LockOwner & Partial<E>;
  } catch {
    return null;
  }
}

/** The owner recorded in lock file `path`, or null (missing, unreadable, or not a lock). */
export async function readLockOwner<E extends object = Record<string, never>>(path: string): Promise<(LockOwner & Partial<E>) | null> {
  try {
    return parseLockOwner<E>(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Creates lock file `path` for this process (O_EXCL, mode 0600), with `extra` fields beside
 * the owner. Resolves false when it exists; rejects on any other error.
 */
export async function tryCreateLock(path: string, extra: Record<string, unknown> = {}): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.writeFile(JSON.stringify({ ...extra, ...selfOwner() }));
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Whether lock file `path` is stale: its owner is dead, or it has no readable owner and is
 * older than `unwrittenMs` (its creator died between creating and writing it).
 */
export async function lockIsStale(path: string, unwrittenMs = 2000): Promise<boolean> {
  const owner = await readLockOwner(path);
  if (owner !== null) return !ownerAlive(owner);
  const st = await stat(path).catch(() => undefined);
  return st !== undefined && Date.now() - st.mtimeMs > unwrittenMs;
}

export interface WithLockOptions {
  /** How long to wait for a live owner before giving up (default 15 s). */
  readonly timeoutMs?: number;
  /** The error to throw on timeout (or when the lock cannot be created), given the holder. */
  readonly error: (message: string, cause?: unknown) => Error;
}

/** Runs `fn` holding lock file `path`, taking over a stale lock; removes the lock afterwards. */
export async function withPidLock<T>(path: string, fn: () => Promise<T> | T, opts: WithLockOptions): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let wait = 1;
  for (;;) {
    let created: boolean;
    try {
      created = await tryCreateLock(path);
    } catch (err) {
      throw opts.error(`cannot create lock ${path}: ${(err as Error).message}`, err);
    }
    if (created) break;
    if (await lockIsStale(path)) {
      await unlink(path).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) {
      const owner = await readLockOwner(path);
      throw opts.error(`lock ${path} is held by ${owner ? `pid ${owner.pid}` : 'a process that has not written it yet'}`);
    }
    await sleep(wait);
    wait = Math.min(wait * 2, 20);
  }
  try {
    return await fn();
  } finally {
    await unlink(path).catch(() => undefined);
  }
}

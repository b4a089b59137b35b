/**
 * A cross-process writer lock for the embedded store: an O_EXCL lock file holding the owner's
 * pid. Held only for the duration of one write (one batch), so concurrent `aegis run` processes
 * interleave their batches. A lock left behind by a killed process is taken over when its pid
 * no longer exists.
 *
 * LIMITATION: stale-lock takeover is pid-based. Two processes that both find the same stale lock
 * at the same instant can, in a narrow window, both believe they hold it; pid reuse can make a
 * stale lock look alive until the timeout. Appends stay safe against both because each append
 * re-checks the file length under the lock, but a stuck lock ends in AuditError('store-io').
 */
import { constants } from 'node:fs';
import { open, readFile, stat, unlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { AuditError } from '../errors.js';

const TIMEOUT_MS = 15_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + TIMEOUT_MS;
  let wait = 1;
  for (;;) {
    try {
      const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new AuditError('store-io', `cannot create lock ${path}`, { cause: err });
    }
    const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (Number.isSafeInteger(owner) && owner > 0 && owner !== process.pid && !alive(owner)) {
      await unlink(path).catch(() => undefined);
      continue;
    }
    if (!(Number.isSafeInteger(owner) && owner > 0)) {
      // Created but never written: its creator died between open and write.
      const st = await stat(path).catch(() => undefined);
      if (st !== undefined && Date.now() - st.mtimeMs > 2000) {
        await unlink(path).catch(() => undefined);
        continue;
      }
    }
    if (Date.now() > deadline) throw new AuditError('store-io', `audit store lock ${path} is held by pid ${owner}`);
    await sleep(wait);
    wait = Math.min(wait * 2, 5);
  }
  try {
    return await fn();
  } finally {
    await unlink(path).catch(() => undefined);
  }
}

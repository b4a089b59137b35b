/**
 * The monitor daemon's process (daemon.ts), started detached by client.ts as
 * `node daemon-main.js --dir <dir> --idle-ms <ms> [--bpftrace <path>]`. Its messages go to
 * `<dir>/monitor.log` (the client opens it as this process's stderr).
 */
import { startDaemon } from './daemon.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<number> {
  const dir = arg('--dir');
  const idleMs = Number(arg('--idle-ms') ?? '60000');
  const bpftrace = arg('--bpftrace');
  if (dir === undefined || !dir.startsWith('/') || !Number.isSafeInteger(idleMs) || idleMs < 0) {
    process.stderr.write('usage: daemon-main.js --dir <absolute dir> [--idle-ms <ms>] [--bpftrace <path>]\n');
    return 2;
  }
  const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} aegis monitor[${process.pid}]: ${line}\n`);
  let d: Awaited<ReturnType<typeof startDaemon>> = null;
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => void d?.close());
  try {
    d = await startDaemon({ dir, idleMs, ...(bpftrace !== undefined ? { bpftrace } : {}), log });
  } catch (err) {
    log(`cannot start: ${(err as Error).message}`);
    return 1;
  }
  if (d === null) {
    log('another monitor daemon holds the lock: exiting');
    return 0;
  }
  await d.stopped;
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`aegis monitor: internal error: ${String(err)}\n`);
    process.exitCode = 1;
  },
);

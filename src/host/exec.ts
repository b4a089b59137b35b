/**
 * Running host tools (adapter): where AEGIS looks for them and how it runs them. Every area
 * (sandbox drivers, gateway, doctor, image builds) uses these two, so `aegis doctor` and the
 * runtime can never disagree about which binary is meant.
 *
 * ARCHITECTURE NOTE: tools AEGIS runs as root (crun, runc, runsc, ip, nft, debootstrap,
 * apt-get, mount) are looked up only in the system directories below, never through `$PATH`:
 * a `$PATH` entry writable by someone else would otherwise choose the binary root runs. An
 * absolute path is used as given.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { isAbsolute, join } from 'node:path';

/** Where host tools are looked up, in order. */
export const SYSTEM_DIRS: readonly string[] = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The absolute path of executable `name` (in SYSTEM_DIRS unless absolute), or null. */
export function findExecutable(name: string, dirs: readonly string[] = SYSTEM_DIRS): string | null {
  const candidates = isAbsolute(name) ? [name] : name.includes('/') ? [] : dirs.map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {
      /* next */
    }
  }
  return null;
}

export interface CommandOptions {
  /** Killed with SIGKILL after this long (every command has a bound). */
  readonly timeoutMs: number;
  /** The whole environment of the command (default: this process's, plus `extraEnv`). */
  readonly env?: NodeJS.ProcessEnv;
  /** Variables added to this process's environment (ignored when `env` is given). */
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** Written to the command's stdin, which is then closed (default: no stdin). */
  readonly input?: string;
  /** An open file descriptor handed to the command as its stdin instead (e.g. a socket to inspect). */
  readonly stdinFd?: number;
  /** Called with each complete output line (stdout and stderr), e.g. for progress. */
  readonly onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** How much of stdout and of stderr is kept (the tail; default 1 MiB each). */
  readonly maxOutputBytes?: number;
}

export interface CommandResult {
  /** Exit code, or null when the command was killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/** `argv[0] argv[1..]` as one line for messages. */
export function commandLine(argv: readonly string[]): string {
  return argv.join(' ');
}

/**
 * Runs `argv` to completion. Resolves with what happened (a non-zero exit is a result, not an
 * error); rejects only when the command could not be started at all (not found, not
 * executable), with the spawn error.
 */
export function runCommand(argv: readonly string[], opts: CommandOptions): Promise<CommandResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) return Promise.reject(new Error('runCommand: empty argv'));
  const limit = opts.maxOutputBytes ?? 1 << 20;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: [opts.stdinFd ?? (opts.input === undefined ? 'ignore' : 'pipe'), 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : opts.extraEnv ? { env: { ...process.env, ...opts.extraEnv } } : {}),
    });
    const out = { stdout: '', stderr: '' };
    const partial = { stdout: '', stderr: '' };
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    const feed = (stream: 'stdout' | 'stderr') => (b: Buffer) => {
      const text = b.toString('utf8');
      out[stream] = (out[stream] + text).slice(-limit);
      if (opts.onLine) {
        const lines = (partial[stream] + text).split('\n');
        partial[stream] = lines.pop() ?? '';
        for (const l of lines) opts.onLine(l, stream);
      }
    };
    child.stdout?.on('data', feed('stdout'));
    child.stderr?.on('data', feed('stderr'));
    child.stdin?.on('error', () => undefined); // a command that exits without reading its input
    child.stdin?.end(opts.input);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (opts.onLine) {
        if (partial.stdout !== '') opts.onLine(partial.stdout, 'stdout');
        if (partial.stderr !== '') opts.onLine(partial.stderr, 'stderr');
      }
      resolve({ code, signal, timedOut, stdout: out.stdout, stderr: out.stderr });
    });
  });
}

/** One line saying how a command that did not succeed ended. */
export function describeFailure(argv: readonly string[], r: CommandResult): string {
  const how = r.timedOut ? 'timed out' : r.signal !== null ? `killed by ${r.signal}` : `exited ${r.code}`;
  const detail = r.stderr.trim() || r.stdout.trim();
  return `${commandLine(argv)} ${how}${detail ? `: ${detail.slice(-2000)}` : ''}`;
}

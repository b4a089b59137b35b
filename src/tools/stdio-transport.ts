/**
 * The MCP client transport to a local (stdio) tool server, started by AEGIS outside the agent's
 * sandbox. The SDK's own StdioClientTransport cannot confine the server, so this one spawns it
 * itself; framing (newline-delimited JSON-RPC) is the SDK's (ReadBuffer, serializeMessage).
 *
 * ARCHITECTURE NOTE: the server runs
 *  - in namespaces of its own (util-linux `unshare`): an empty network namespace (no interface
 *    up: a local tool server has no network at all; a tool that needs the network is a remote
 *    server), its own pid namespace (it sees only its own processes; killed with `unshare` by
 *    `--kill-child`), ipc, uts and mount namespaces (a /proc of its own);
 *  - as an unprivileged user (`setpriv`: uid/gid 65534 "nobody" by default, no supplementary
 *    groups, no capabilities in any set, bounding set empty, no_new_privs), never as root;
 *  - with a clean environment (PATH and LANG only: nothing of AEGIS's, no secrets), in the
 *    manifest's folder (relative arguments such as `server.mjs` are taken from there);
 *  - in a process group of its own, killed as a whole (TERM, then KILL after 1 s) by close();
 *  - with no listener the agent could reach: it speaks only on its pipes to AEGIS; the agent,
 *    in its own network namespace, reaches it only through the broker.
 * LIMITATION: this is not a full AEGIS sandbox (no seccomp profile, no cgroup limits, no
 * filesystem view of its own): it reads the host's filesystem as user nobody does. docs/tools.md.
 *
 * Hostile output: a line that is not a JSON-RPC message is reported (onerror) and skipped; a line
 * longer than `maxMessageBytes` ends the connection (the broker answers every pending call with
 * an error and starts the server again on the next call).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { findExecutable } from '../host/exec.js';
import { ToolsError } from './errors.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { ReadBuffer, serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

export interface StdioServerOptions {
  /** Absolute path of the program and its arguments. */
  readonly argv: readonly string[];
  readonly uid: number;
  readonly gid: number;
  readonly maxMessageBytes: number;
  /** Working directory (the manifest's folder under `aegis run`); default `/`. */
  readonly cwd?: string;
}

/** The clean environment of a local tool server. */
export const STDIO_SERVER_ENV: Readonly<Record<string, string>> = { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' };

/** The confining command line: `unshare <namespaces> -- setpriv <drop everything> -- <server argv>`. */
export function confinedArgv(o: Pick<StdioServerOptions, 'argv' | 'uid' | 'gid'>): string[] {
  const unshare = findExecutable('unshare');
  const setpriv = findExecutable('setpriv');
  if (unshare === null || setpriv === null)
    throw new ToolsError('tools.command_not_found', 'local tool servers need unshare and setpriv (util-linux) in the system directories');
  return [
    unshare,
    '--net',
    '--pid',
    '--ipc',
    '--uts',
    '--mount',
    '--fork',
    '--kill-child',
    '--mount-proc',
    '--',
    setpriv,
    `--reuid=${o.uid}`,
    `--regid=${o.gid}`,
    '--clear-groups',
    '--no-new-privs',
    '--bounding-set=-all',
    '--inh-caps=-all',
    '--',
    ...o.argv,
  ];
}

export class UnprivilegedStdioTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private child: ChildProcess | null = null;
  private readonly buffer: ReadBuffer;
  private closed = false;

  constructor(private readonly o: StdioServerOptions) {
    this.buffer = new ReadBuffer({ maxBufferSize: o.maxMessageBytes });
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const argv = confinedArgv(this.o);
      const child = spawn(argv[0]!, argv.slice(1), {
        env: { ...STDIO_SERVER_ENV },
        cwd: this.o.cwd ?? '/',
        detached: true,
        stdio: ['pipe', 'pipe', 'ignore'],
        windowsHide: true,
      });
      this.child = child;
      child.once('error', (err) => {
        reject(err);
        this.onerror?.(err);
        this.finish();
      });
      child.once('spawn', () => resolve());
      child.once('close', () => this.finish());
      child.stdin!.on('error', (err) => this.onerror?.(err));
      child.stdout!.on('data', (chunk: Buffer) => this.receive(chunk));
    });
  }

  private receive(chunk: Buffer): void {
    try {
      this.buffer.append(chunk);
    } catch (err) {
      // One message larger than the limit: the stream can no longer be framed; end the server.
      this.onerror?.(err as Error);
      void this.close();
      return;
    }
    for (;;) {
      let msg: JSONRPCMessage | null;
      try {
        msg = this.buffer.readMessage();
      } catch (err) {
        this.onerror?.(err as Error); // a malformed line: skipped, the next one may be fine
        continue;
      }
      if (msg === null) return;
      this.onmessage?.(msg);
    }
  }

  send(message: JSONRPCMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      const stdin = this.child?.stdin;
      if (!stdin || this.closed) return reject(new Error('the tool server is not running'));
      if (stdin.write(serializeMessage(message))) resolve();
      else stdin.once('drain', () => resolve());
    });
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.buffer.clear();
    this.onclose?.();
  }

  async close(): Promise<void> {
    const child = this.child;
    this.finish();
    if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const pid = child.pid;
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    const kill = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-pid, sig); // the whole process group
      } catch {
        /* gone */
      }
    };
    child.stdin?.end();
    kill('SIGTERM');
    const t = setTimeout(() => kill('SIGKILL'), 1000);
    await exited;
    clearTimeout(t);
  }
}

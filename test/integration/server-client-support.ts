/**
 * A real `aegis serve` for the client tests (server-sdk, server-cli): the built bin on a free
 * loopback port and on a unix socket in a temporary folder, with a temporary --data and
 * AEGIS_HOME (created first), the first admin key made offline with `aegis keys create`, and
 * agent folders written by the tests. `stop()` sends SIGTERM and removes everything.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Aegis } from '../../sdk/src/index.js';
import { resolveImage } from '../../src/images/index.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { sandboxUnavailable } from './sandbox-conformance.js';

export interface TestServer {
  readonly work: string;
  readonly home: string;
  readonly data: string;
  readonly url: string;
  readonly socket: string;
  readonly adminKey: string;
  /** The server's stderr so far (for failure messages). */
  log(): string;
  /** An environment for CLI runs against this server (AEGIS_HOME, AEGIS_SERVER; AEGIS_API_KEY if given). */
  env(apiKey?: string, server?: string): NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

/** Why the client tests cannot run here (no sandboxes, no python:3.11 image), or null. */
export async function serverTestsUnavailable(): Promise<string | null> {
  const why = await sandboxUnavailable();
  if (why !== null) return why;
  try {
    await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
  } catch (e) {
    return `python:3.11 image missing: ${(e as Error).message}`;
  }
  return null;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Runs the CLI to its end (stdin closed). */
export function cli(args: readonly string[], env: NodeJS.ProcessEnv, opts: { input?: string; uid?: number; gid?: number } = {}) {
  const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
    env,
    input: opts.input ?? '',
    encoding: 'utf8',
    timeout: 120_000,
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export async function startServer(opts: { tls?: { certFile: string; keyFile: string; ca: string } } = {}): Promise<TestServer> {
  // /var/tmp, world-traversable: the sandbox's own uid reads the extracted code under --data.
  const work = mkdtempSync('/var/tmp/aegis-client-');
  chmodSync(work, 0o755);
  const home = join(work, 'home');
  const data = join(work, 'data');
  mkdirSync(home, { mode: 0o700 });
  mkdirSync(data, { mode: 0o755 });
  const socket = join(work, 'aegis.sock');
  const baseEnv: NodeJS.ProcessEnv = { ...process.env, AEGIS_HOME: home, AEGIS_ALERT_RULES: 'none' };
  delete baseEnv['AEGIS_SERVER'];
  delete baseEnv['AEGIS_API_KEY'];
  const made = cli(['keys', 'create', '--role', 'admin', '--data', data], baseEnv);
  assert.equal(made.code, 0, `aegis keys create: ${made.stderr}`);
  const adminKey = made.stdout.trim();
  assert.ok(adminKey.length > 10 && !adminKey.includes('\n'), `one key on stdout: ${JSON.stringify(made.stdout)}`);

  const port = await freePort();
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const tlsFlags = opts.tls ? ['--tls-cert', opts.tls.certFile, '--tls-key', opts.tls.keyFile] : [];
  let stderr = '';
  const child: ChildProcess = spawn(
    process.execPath,
    [AEGIS_BIN, 'serve', '--listen', `127.0.0.1:${port}`, ...tlsFlags, '--socket', socket, '--data', data],
    {
      env: baseEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  child.stdout?.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const aegis = new Aegis({ url, apiKey: adminKey, timeoutMs: 2000, ...(opts.tls ? { ca: opts.tls.ca } : {}) });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`aegis serve exited (${child.exitCode}): ${stderr}`);
    const up = await aegis.health().catch(() => false);
    if (up) break;
    if (Date.now() > deadline) assert.fail(`aegis serve did not answer /healthz in 60 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    work,
    home,
    data,
    url,
    socket,
    adminKey,
    log: () => stderr,
    env: (apiKey, server) => {
      const env: NodeJS.ProcessEnv = { ...baseEnv, AEGIS_SERVER: server ?? url };
      if (apiKey !== undefined) env['AEGIS_API_KEY'] = apiKey;
      return env;
    },
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(killer);
      }
      rmSync(work, { recursive: true, force: true });
    },
  };
}

/**
 * An agent folder (world-readable: the sandbox's uid reads it) whose entrypoint is `main.sh`
 * run by /bin/sh with the execution's args; `script` is main.sh's text. Returns the manifest path.
 */
export function writeAgent(root: string, name: string, script: string, extra = ''): string {
  const dir = join(root, 'agents', name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'main.sh'), script, { mode: 0o644 });
  writeFileSync(join(dir, 'data.txt'), `data of ${name}\n`, { mode: 0o644 });
  const manifest = join(dir, 'agent.yaml');
  writeFileSync(
    manifest,
    `version: "1.0"\nagent:\n  name: ${name}\n  runtime: "python:3.11"\n  entrypoint: ["/bin/sh", "main.sh"]\n  isolation: crun\npermissions:\n  fs:\n    write: ["/data/out"]\n  execution_time: 60s\n${extra}`,
    { mode: 0o644 },
  );
  return manifest;
}

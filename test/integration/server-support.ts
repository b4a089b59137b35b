/**
 * Starting a real `aegis serve` (the built bin) for the server integration tests: a temp data
 * folder, a temp AEGIS_HOME (created first), a private sandbox state dir, 127.0.0.1:0 and a
 * socket in the temp folder. The server prints one JSON line with its URL once it listens.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { CheckedApi } from '../../src/test-support/api.js';

export interface ServerDirs {
  readonly work: string;
  readonly home: string;
  readonly data: string;
  readonly state: string;
  readonly socket: string;
  readonly env: NodeJS.ProcessEnv;
}

export function serverDirs(prefix: string): ServerDirs {
  // Under /var/tmp with 0755 so that the sandboxes' user (and a non-root test user) can traverse it.
  const work = mkdtempSync(`/var/tmp/${prefix}-`);
  chmodSync(work, 0o755);
  const home = join(work, 'home');
  mkdirSync(home, { mode: 0o700 });
  const env = { ...process.env, AEGIS_HOME: home, AEGIS_ALERT_RULES: 'none', AEGIS_BASELINE: 'off' };
  return { work, home, data: join(work, 'data'), state: join(work, 'state'), socket: join(work, 'aegis.sock'), env };
}

export interface RunningServer {
  readonly url: string;
  readonly socket: string;
  readonly proc: ChildProcess;
  readonly api: CheckedApi;
  stderr(): string;
  /** Sends `signal` and waits for the exit; returns the exit code (null after a kill). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startServer(d: ServerDirs, extra: readonly string[] = [], tls?: { ca: string }): Promise<RunningServer> {
  const proc = spawn(
    process.execPath,
    [
      AEGIS_BIN,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--socket',
      d.socket,
      '--data',
      d.data,
      '--state-dir',
      d.state,
      '--worker',
      'it',
      ...extra,
    ],
    { env: d.env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    proc.once('exit', (code) => reject(new Error(`aegis serve exited ${code}: ${err}`)));
  });
  const info = JSON.parse(line) as { url: string; socket: string };
  const api = await CheckedApi.connect({ url: info.url, ...(tls !== undefined ? { ca: tls.ca } : {}) });
  return {
    url: info.url,
    socket: info.socket,
    proc,
    api,
    stderr: () => err,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** `aegis keys create` (offline) against the data folder: the key printed alone on stdout. */
export function createKey(d: ServerDirs, role: string, expires?: string): string {
  const r = spawnSync(
    process.execPath,
    [AEGIS_BIN, 'keys', 'create', '--role', role, '--data', d.data, ...(expires ? ['--expires', expires] : [])],
    {
      env: d.env,
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `stdout holds the key alone: ${r.stdout}`);
  assert.match(lines[0]!, /^ak_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
  return lines[0]!;
}

/** What an execution could leave behind on the host: cgroups, run records, mounts, namespaces. */
export function leftovers(d: ServerDirs, id: string): string[] {
  const out = runCgroupDirs(id).map((c) => `cgroup ${c}`);
  try {
    if (readFileSync(join(d.state, 'runs', id, 'record.json'), 'utf8') !== '') out.push(`run record ${id}`);
  } catch {
    /* none */
  }
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (l.includes(id)) out.push(`mount ${l}`);
  return out;
}

/** The host's network namespaces (compared before and after: the tests hold the global lock). */
export function netnsNames(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((l) => l !== '')
    .sort();
}

export function removeDirs(d: ServerDirs): void {
  rmSync(d.work, { recursive: true, force: true });
}

/** A code folder archive with one shell script (the sandbox's python:3.11 image has /bin/sh). */
export function agentManifest(name: string, extra = ''): string {
  return [
    'version: "1.0"',
    'agent:',
    `  name: ${name}`,
    '  runtime: "python:3.11"',
    '  entrypoint: ["/bin/sh", "run.sh"]',
    '  isolation: crun',
    'permissions:',
    '  fs:',
    '    write: ["/data/out"]',
    '  execution_time: 60s',
    extra,
  ].join('\n');
}

/**
 * Docker backend benchmark (a script, not a timed test): median wall time of whole commands
 * running `true` and `python3 -c pass`, interleaved (one run of each per round, after 2 warm-ups):
 *   - `aegis run --isolation docker` (the bundle through the engine's API, docs/sandbox.md)
 *   - `docker run --rm --network none` of the same engine image (AEGIS's import of the store
 *     image, `aegis-image:<digest>`) and the same command: the engine alone, no policy
 *   - `aegis run --isolation docker` with AEGIS_DOCKER_ENGINE=remote (the engine used through its
 *     API only, as Docker Desktop is: volumes, a keeper container, the limits in HostConfig)
 *   - `aegis run --isolation crun` (the default backend), for comparison
 * and in-process `runSandbox` on docker vs crun (what the server would pay).
 *
 *   npm run build && node dist/bench/docker.js [--runs N]
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveImage } from '../src/images/index.js';
import type { Isolation, Policy } from '../src/policy/types.js';
import { IMAGE_REPO } from '../src/sandbox/docker/engine.js';
import { runSandbox } from '../src/sandbox/run.js';
import { AEGIS_BIN } from '../src/test-support/repo.js';

const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 0) || 11;
const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};
const out = (s: string): void => void process.stdout.write(s + '\n');

type Task = () => Promise<unknown>;

async function timeAll(tasks: Record<string, Task>): Promise<Record<string, number>> {
  const names = Object.keys(tasks);
  const xs: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let round = 0; round < RUNS + 2; round++) {
    for (const n of names) {
      const t = performance.now();
      await tasks[n]!();
      if (round >= 2) xs[n]!.push(performance.now() - t);
    }
  }
  return Object.fromEntries(names.map((n) => [n, median(xs[n]!)]));
}

/** Runs a command to completion with pipes (never the host's /dev/null, see bench/sandbox.ts). */
function exec(cmd: string, argv: string[], env?: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], ...(env !== undefined ? { env: { ...process.env, ...env } } : {}) });
    c.stdin.end();
    c.stdout.resume();
    let err = '';
    c.stderr.on('data', (b: Buffer) => void (err += b.toString()));
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(0) : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}: ${err.slice(-400)}`))));
  });
}

function policy(entrypoint: string[]): Policy {
  return {
    version: '1.0',
    agent: { name: 'bench', runtime: PY, entrypoint, env: {}, secretRefs: {}, isolation: null, code: '.' },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: [], write: ['/data/outputs'] },
    limits: { timeoutMs: 30_000, memoryBytes: 256 * 1024 * 1024, cpu: { quotaUs: 100_000, periodUs: 100_000, cores: 1 }, pids: 64 },
    syscalls: { deny: [] },
  };
}

async function main(): Promise<void> {
  const image = await resolveImage(PY);
  const work = mkdtempSync('/var/tmp/aegis-bench-docker-');
  chmodSync(work, 0o755);
  const state = join(work, 'state');
  const home = join(work, 'home');
  mkdirSync(home, { mode: 0o700 });
  process.env['AEGIS_HOME'] = home; // for the aegis children only (the bench is not src/)
  const tag = `${IMAGE_REPO}:${image.digest.replace(/^sha256:/, '')}`;
  try {
    out(`AEGIS docker benchmark: median of ${RUNS} runs (after 2 warm-ups), image ${image.ref} ${image.digest.slice(0, 19)}`);
    const workloads: [string, string[]][] = [
      ['true', ['true']],
      ['python3 -c pass', ['python3', '-c', 'pass']],
    ];
    const times: Record<string, Record<string, number>> = {};
    for (const [name, argv] of workloads) {
      const dir = join(work, name.replace(/\W+/g, '-'));
      mkdirSync(dir, { mode: 0o755 });
      writeFileSync(
        join(dir, 'agent.yaml'),
        `version: "1.0"\nagent:\n  name: bench\n  runtime: "python:3.11"\n  entrypoint: ${JSON.stringify(argv)}\npermissions:\n  memory: 256MiB\n`,
      );
      const run =
        (isolation: Isolation, env?: Record<string, string>): Task =>
        () =>
          exec(process.execPath, [AEGIS_BIN, 'run', join(dir, 'agent.yaml'), '--isolation', isolation, '--state-dir', state], env);
      // The first aegis docker run imports the image; the plain docker run uses that import.
      await run('docker')();
      const inProcess =
        (isolation: Isolation): Task =>
        async () => {
          const r = await runSandbox({
            policy: policy(argv),
            manifestDir: dir,
            imageRootfs: image.rootfs,
            isolation,
            stateDir: state,
            stdout: 'ignore',
            stderr: 'ignore',
          });
          if (r.status !== 'exited' || r.exitCode !== 0)
            throw new Error(`${isolation}: ${r.status} ${r.exitCode} ${r.error?.message ?? ''}`);
        };
      times[name] = await timeAll({
        'aegis run --isolation docker': run('docker'),
        'aegis run docker, remote engine': run('docker', { AEGIS_DOCKER_ENGINE: 'remote' }),
        'docker run --rm --network none': () => exec('docker', ['run', '--rm', '--network', 'none', '--memory', '256m', tag, ...argv]),
        'aegis run --isolation crun': run('crun'),
        'runSandbox docker': inProcess('docker'),
        'runSandbox crun': inProcess('crun'),
      });
      for (const [k, v] of Object.entries(times[name]!)) out(`${name.padEnd(16)} ${k.padEnd(32)} ${v.toFixed(1)} ms`);
    }
    out('\n== ratios ==');
    for (const [name] of workloads) {
      const t = times[name]!;
      const d = t['aegis run --isolation docker']!;
      out(
        `${name.padEnd(16)} aegis docker / docker run      ${(d / t['docker run --rm --network none']!).toFixed(2)}x (AEGIS's overhead on this backend)`,
      );
      out(`${name.padEnd(16)} aegis docker / aegis crun      ${(d / t['aegis run --isolation crun']!).toFixed(2)}x`);
      out(
        `${name.padEnd(16)} remote engine / local engine   ${(t['aegis run docker, remote engine']! / d).toFixed(2)}x (the API-only delivery: volumes, keeper, archive copies)`,
      );
      out(`${name.padEnd(16)} runSandbox docker / crun       ${(t['runSandbox docker']! / t['runSandbox crun']!).toFixed(2)}x`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();

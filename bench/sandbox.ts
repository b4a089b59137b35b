/**
 * Sandbox start-up benchmark (a script, not a timed test): median wall time to start and finish
 * a sandbox running `true` and `python3 -c pass`.
 *
 *   node dist/bench/sandbox.js [--runs N] [--skip-docker] [--skip-srt] [--skip-inprocess] [--monitor] [--before BIN]
 *
 * 1. In-process, through runSandbox() as the server calls it, per runtime, vs the bare process
 *    (the same binary of the same image, started with chroot).
 * 2. Whole commands (interleaved): `aegis run` (without network, and with a one-host allowlist:
 *    `aegis +net`) vs `docker run` of the same image (when a Docker engine is
 *    available; the rootfs is `docker import`ed) vs `srt` (@anthropic-ai/sandbox-runtime,
 *    installed into /var/tmp for the benchmark only; needs Debian ripgrep bubblewrap socat).
 *    `aegis run` writes to a throw-away AEGIS_HOME (a fresh audit log, so the end-of-run
 *    baseline reads the same small history in every run of the benchmark) with the runtime
 *    monitor off (AEGIS_MONITOR=off: bpftrace's attach and detach cost about 1.5 s per run, and
 *    srt and docker have no such monitor); `--monitor` adds a row with it on (auto);
 *    `--before BIN` adds the same rows for another build's bin/aegis.js (a before/after in one run).
 * Targets (issue 3): crun adds <= 15 ms over the bare process, gVisor < 200 ms in total,
 * `aegis run` faster than docker. Issue 18: `aegis run` of `true` <= 0.25x srt's time without
 * network, <= 0.33x with the one-host allowlist.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveImage } from '../src/images/index.js';
import type { Isolation, Policy } from '../src/policy/types.js';
import { driverFor } from '../src/sandbox/drivers/index.js';
import { runSandbox } from '../src/sandbox/run.js';
import { AEGIS_BIN } from '../src/test-support/repo.js';

const args = process.argv.slice(2);
/** Issue 18's targets: aegis run's time as a share of srt's (`true`). */
const TARGET_SHARE_OF_SRT: Readonly<Record<string, number>> = { aegis: 0.25, 'aegis +net': 0.33 };
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 0) || 21;
const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

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

type Task = () => Promise<unknown>;

/**
 * Median wall time of each task. The tasks are interleaved (one run of each per round, after
 * 2 warm-up rounds), so a noisy, shared machine slows every candidate alike.
 */
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

/**
 * Runs a command to completion. Its streams are pipes, never `'ignore'`: Node would hand the
 * child the host's /dev/null, and an OCI runtime chowns the stdio it is given to the sandbox's
 * uid (issue 8), which breaks /dev/null for the whole host.
 */
function exec(cmd: string, argv: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], ...(env !== undefined ? { env } : {}) });
    c.stdin.end();
    c.stdout.resume();
    c.stderr.resume();
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(0) : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}`))));
  });
}

const fmt = (ms: number): string => `${ms.toFixed(1)} ms`;
const out = (s: string): void => void process.stdout.write(s + '\n');

async function main(): Promise<void> {
  const image = await resolveImage(PY);
  const work = mkdtempSync('/var/tmp/aegis-bench-');
  chmodSync(work, 0o755);
  try {
    await bench(image, work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function bench(image: { ref: string; digest: string; rootfs: string }, work: string): Promise<void> {
  const state = join(work, 'state');
  const workloads: [string, string[]][] = [
    ['true', ['true']],
    ['python3 -c pass', ['python3', '-c', 'pass']],
  ];
  out(`AEGIS sandbox benchmark: median of ${RUNS} runs (after 2 warm-ups), image ${image.ref} ${image.digest.slice(0, 19)}`);

  if (!args.includes('--skip-inprocess')) await inProcess(image, work, workloads);
  await wholeCommands(image, work, state, workloads);
}

async function inProcess(image: { rootfs: string }, work: string, workloads: [string, string[]][]): Promise<void> {
  const state = join(work, 'state');
  out('\n== in-process (runSandbox) vs bare process ==');
  const runtimes = (['crun', 'runc', 'gvisor'] as Isolation[]).filter((iso) => {
    const why = driverFor(iso).unavailableReason();
    if (why !== null) out(`${iso.padEnd(8)} unavailable: ${why}`);
    return why === null;
  });
  // Each runtime is interleaved with the bare process only (a gVisor teardown still running in
  // the background must not be charged to crun).
  for (const [name, argv] of workloads) {
    for (const iso of runtimes) {
      const t = await timeAll({
        bare: () => exec('chroot', [image.rootfs, ...argv]),
        [iso]: async () => {
          const r = await runSandbox({
            policy: policy(argv),
            manifestDir: work,
            imageRootfs: image.rootfs,
            isolation: iso,
            stateDir: state,
            stdout: 'ignore',
            stderr: 'ignore',
          });
          if (r.status !== 'exited' || r.exitCode !== 0)
            throw new Error(`${iso} ${name}: ${r.status} ${r.exitCode} ${r.error?.message ?? ''}`);
        },
      });
      const ms = t[iso]!;
      const over = ms - t['bare']!;
      const target =
        iso === 'crun'
          ? ` (target: +15 ms: ${over <= 15 ? 'met' : 'NOT met'})`
          : iso === 'gvisor'
            ? ` (target: < 200 ms total: ${ms < 200 ? 'met' : 'NOT met'})`
            : '';
      out(`${iso.padEnd(8)} ${name.padEnd(16)} ${fmt(ms)}  bare ${fmt(t['bare']!)}  +${fmt(over)}${target}`);
    }
  }
}

async function wholeCommands(image: { rootfs: string }, work: string, state: string, workloads: [string, string[]][]): Promise<void> {
  out('\n== whole command: aegis run vs docker run vs srt (interleaved) ==');
  // A throw-away AEGIS_HOME and no runtime monitor (see the header); the rest of the environment as given.
  const home = join(work, 'home');
  mkdirSync(home, { mode: 0o700 });
  const aegisEnv = { ...process.env, AEGIS_HOME: home, AEGIS_MONITOR: 'off' };
  const monitoredEnv = { ...aegisEnv, AEGIS_MONITOR: 'auto' };
  const aegisBin = AEGIS_BIN;
  const docker = args.includes('--skip-docker') ? null : dockerReady(image.rootfs);
  if (docker === null) out('docker    unavailable (no running Docker engine, or --skip-docker); skipped');
  const srt = args.includes('--skip-srt') ? null : srtReady();
  if (srt === null) out('srt       unavailable (see above, or --skip-srt); skipped');
  // srt runs host binaries (the host's /bin/true and python3) under its default, restrictive policy.
  const hostPy = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const cmdTimes: Record<string, Record<string, number>> = {};
  for (const [name, argv] of workloads) {
    const dir = join(work, name.replace(/\W+/g, '-'));
    mkdirSync(dir, { mode: 0o755 });
    const manifest = `version: "1.0"\nagent:\n  name: bench\n  runtime: "python:3.11"\n  entrypoint: ${JSON.stringify(argv)}\npermissions:\n  fs:\n    write: ["/data/outputs"]\n  memory: 256MiB\n`;
    writeFileSync(join(dir, 'agent.yaml'), manifest);
    // The same with a network allowlist of one host: the gateway and the sandbox's network are set up (issue 18).
    mkdirSync(join(dir, 'net'), { mode: 0o755 });
    writeFileSync(join(dir, 'net', 'agent.yaml'), `${manifest}  network:\n    allow: ["example.com"]\n`);
    const tasks: Record<string, Task> = {
      // Where a command's time goes before any sandbox work: Node itself, and the CLI's module loading.
      'node -e 0': () => exec(process.execPath, ['-e', '0']),
      'aegis --version': () => exec(process.execPath, [aegisBin, '--version'], aegisEnv),
      aegis: () => exec(process.execPath, [aegisBin, 'run', join(dir, 'agent.yaml'), '--state-dir', state], aegisEnv),
      'aegis +net': () => exec(process.execPath, [aegisBin, 'run', join(dir, 'net', 'agent.yaml'), '--state-dir', state], aegisEnv),
    };
    const before = args.includes('--before') ? args[args.indexOf('--before') + 1] : undefined;
    if (before !== undefined) {
      tasks['before --version'] = () => exec(process.execPath, [before, '--version'], aegisEnv);
      tasks['before aegis'] = () => exec(process.execPath, [before, 'run', join(dir, 'agent.yaml'), '--state-dir', state], aegisEnv);
      tasks['before +net'] = () => exec(process.execPath, [before, 'run', join(dir, 'net', 'agent.yaml'), '--state-dir', state], aegisEnv);
    }
    if (args.includes('--monitor'))
      tasks['aegis +monitor'] = () =>
        exec(process.execPath, [aegisBin, 'run', join(dir, 'agent.yaml'), '--state-dir', state], monitoredEnv);
    if (docker !== null) tasks['docker'] = () => exec('docker', ['run', '--rm', '--network', 'none', '--memory', '256m', docker, ...argv]);
    if (srt !== null) tasks['srt'] = () => exec(process.execPath, [srt, '-c', name === 'true' ? '/bin/true' : `${hostPy} -c pass`]);
    cmdTimes[name] = await timeAll(tasks);
    for (const [k, v] of Object.entries(cmdTimes[name]!))
      out(`${name.padEnd(16)} ${(k === 'aegis' ? 'aegis run' : k === 'docker' ? 'docker run' : k).padEnd(16)} ${fmt(v)}`);
  }

  out('\n== ratios: aegis run time / other time (< 1 means aegis is faster) ==');
  for (const [name] of workloads) {
    const t = cmdTimes[name]!;
    for (const mine of ['aegis', 'aegis +net', 'aegis +monitor', 'before aegis', 'before +net'])
      for (const other of ['docker', 'srt']) {
        if (t[other] === undefined || t[mine] === undefined) continue;
        const share = t[mine]! / t[other]!;
        const goal =
          other === 'srt' && name === 'true' ? TARGET_SHARE_OF_SRT[mine] : other === 'docker' && !mine.startsWith('before') ? 1 : undefined;
        const target = goal === undefined ? '' : `  (target <= ${goal}x: ${share <= goal ? 'met' : 'NOT met'})`;
        out(`${name.padEnd(16)} ${mine.padEnd(14)} / ${other.padEnd(6)} ${share.toFixed(2)}x${target}`);
      }
  }
}

/** Imports the rootfs into Docker once (tag aegis-bench/python:3.11); null when no engine. */
function dockerReady(rootfs: string): string | null {
  if (spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 }).status !== 0) return null;
  const tag = 'aegis-bench/python:3.11';
  if (spawnSync('docker', ['image', 'inspect', tag], { stdio: 'ignore' }).status !== 0) {
    execFileSync('sh', ['-c', `tar -C "${rootfs}" -c . | docker import - ${tag}`], { stdio: 'ignore' });
  }
  return tag;
}

/** Installs @anthropic-ai/sandbox-runtime into /var/tmp/aegis-bench-srt (not a project dependency). */
function srtReady(): string | null {
  const dir = '/var/tmp/aegis-bench-srt';
  const cli = join(dir, 'node_modules', '@anthropic-ai', 'sandbox-runtime', 'dist', 'cli.js');
  if (!existsSync(cli)) {
    mkdirSync(dir, { recursive: true });
    const r = spawnSync(
      'npm',
      ['install', '--prefix', dir, '--no-audit', '--no-fund', '--loglevel=error', '@anthropic-ai/sandbox-runtime'],
      { stdio: 'inherit' },
    );
    if (r.status !== 0) return null;
  }
  // srt needs Debian ripgrep, bubblewrap and socat; it says what is missing.
  const probe = spawnSync(process.execPath, [cli, '-c', 'true'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    out(`srt       cannot run: ${probe.stderr.trim()} (apt-get install ripgrep bubblewrap socat)`);
    return null;
  }
  return cli;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});

/**
 * microVM benchmark (a script, not a timed test), under software emulation on hosts without a
 * working KVM (these: HOST-NOTES). Medians of N runs of `true`:
 *   1. boot to the agent's first instruction: from run.spawn (the launcher started) to run.start
 *      (the guest's init reported "started" just before exec'ing the agent; the pid file appears);
 *   2. the whole in-process run (runSandbox), and the same for crun, for scale;
 *   3. the whole command `aegis run` of a manifest with `isolation: microvm`;
 *   4. the same with a network allowlist: the gateway's namespace, the tap, the guest's NIC.
 *
 *   node dist/bench/microvm.js [--runs N]      (default 5; each microVM run takes seconds)
 *
 * Published reference: Firecracker boots to the guest's init in ~125 ms with KVM.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveImage } from '../src/images/index.js';
import type { Isolation, Policy } from '../src/policy/types.js';
import { DEFAULT_MICROVM_SETTINGS } from '../src/sandbox/drivers/index.js';
import { runSandbox } from '../src/sandbox/run.js';
import { AEGIS_BIN } from '../src/test-support/repo.js';

const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 0) || 5;
const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;
// The guest from AEGIS_MICROVM_GUEST when set (as `aegis run` takes it), else the default.
const microvm = { guestDir: process.env['AEGIS_MICROVM_GUEST'] ?? DEFAULT_MICROVM_SETTINGS.guestDir, allowEmulation: true };

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};
const fmt = (ms: number): string => `${ms.toFixed(0)} ms`;

function policy(entrypoint: string[]): Policy {
  return {
    version: '1.0',
    agent: { name: 'bench', runtime: PY, entrypoint, env: {}, secretRefs: {}, isolation: null, code: '.' },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: [], write: ['/data/outputs'] },
    limits: { timeoutMs: 120_000, memoryBytes: 256 * 1024 * 1024, cpu: { quotaUs: 100_000, periodUs: 100_000, cores: 1 }, pids: 64 },
    syscalls: { deny: [] },
  };
}

function exec(cmd: string, argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], env });
    c.stdin.end();
    c.stdout.resume();
    c.stderr.resume();
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(0) : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}`))));
  });
}

async function main(): Promise<void> {
  const image = await resolveImage(PY);
  const work = mkdtempSync('/var/tmp/aegis-bench-microvm-');
  chmodSync(work, 0o755);
  const code = join(work, 'agent');
  mkdirSync(code, { mode: 0o755 });
  const state = join(work, 'state');
  const out = (s: string): void => void process.stdout.write(s + '\n');
  try {
    out(`== microVM (QEMU microvm, TCG) vs crun: ${RUNS} runs of true, medians ==`);
    const boot: number[] = [];
    const whole: Record<Isolation, number[]> = { crun: [], runc: [], gvisor: [], docker: [], microvm: [] };
    for (let i = 0; i < RUNS; i++) {
      for (const isolation of ['microvm', 'crun'] as const) {
        const at: Record<string, number> = {};
        const t = performance.now();
        const r = await runSandbox({
          policy: policy(['true']),
          manifestDir: code,
          imageRootfs: image.rootfs,
          isolation,
          stateDir: state,
          microvm,
          stdout: 'ignore',
          stderr: 'ignore',
          audit: { append: (e) => void (at[e.action] ??= performance.now()) },
        });
        if (r.status !== 'exited' || r.exitCode !== 0) throw new Error(`${isolation}: ${r.status} ${r.exitCode} ${r.error?.message ?? ''}`);
        whole[isolation].push(performance.now() - t);
        const spawned = at['run.spawn'];
        const started = at['run.start'];
        if (isolation === 'microvm' && spawned !== undefined && started !== undefined) boot.push(started - spawned);
      }
    }
    out(`microvm  boot to the agent's first instruction  ${fmt(median(boot))}  (run.spawn -> run.start)`);
    out(`microvm  whole run (runSandbox)                 ${fmt(median(whole.microvm))}`);
    out(`crun     whole run (runSandbox)                 ${fmt(median(whole.crun))}`);

    const home = join(work, 'home');
    mkdirSync(home, { mode: 0o700 });
    writeFileSync(
      join(code, 'agent.yaml'),
      'version: "1.0"\nagent:\n  name: bench\n  runtime: "python:3.11"\n  entrypoint: ["true"]\n  isolation: microvm\npermissions:\n  memory: 256MiB\n',
    );
    const env: NodeJS.ProcessEnv = { ...process.env, AEGIS_HOME: home, AEGIS_MICROVM_ALLOW_EMULATION: '1', AEGIS_ALERT_RULES: 'none' };
    const cmd: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      await exec(process.execPath, [AEGIS_BIN, 'run', join(code, 'agent.yaml'), '--state-dir', state], env);
      cmd.push(performance.now() - t);
    }
    out(`microvm  whole command (aegis run)              ${fmt(median(cmd))}`);

    writeFileSync(
      join(code, 'agent-net.yaml'),
      'version: "1.0"\nagent:\n  name: bench\n  runtime: "python:3.11"\n  entrypoint: ["true"]\n  isolation: microvm\npermissions:\n  memory: 256MiB\n  network:\n    allow: ["api.openai.com"]\n',
    );
    const net: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      await exec(process.execPath, [AEGIS_BIN, 'run', join(code, 'agent-net.yaml'), '--state-dir', state], env);
      net.push(performance.now() - t);
    }
    out(`microvm  whole command with network (aegis run) ${fmt(median(net))}  (gateway namespace, tap, virtio-net)`);
    out('reference: Firecracker boots to the guest init in ~125 ms with KVM (no working KVM here)');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();

/**
 * Orchestrator benchmark (a script, not a timed test; root, crun, the python:3.11 image):
 *
 *   node dist/bench/orchestrator.js [--runs N] [--net] [--seconds S]
 *
 * 1. Start latency: wall time from `engine.execute()` to the agent's first instruction, cold
 *    (no pool) and warm (a pool of 1, refilled between runs). The agent's entrypoint IS its first
 *    instruction: `/bin/date +%s%N` (CLOCK_REALTIME, compared with this process's
 *    performance.timeOrigin + performance.now()). p50 and p99 over N runs (default 21).
 * 2. Throughput: executions per second sustained for S seconds (default 10) with a pool of 2
 *    and 2 executions in flight (the machine has 2 cores), of an agent that prints one line.
 * `--net`: the agent has a one-host allowlist, so each sandbox gets the gateway's network
 * namespace, veth, nft tables and listeners (what a warm sandbox has prepared).
 * Targets (issue 11): warm <= 5 ms p50, cold <= 60 ms including the network namespace, >= 20/s.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/config/index.js';
import { createEngine } from '../src/orchestrator/index.js';
import type { AgentVersionRef, ExecutionObserver } from '../src/orchestrator/types.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) || dflt : dflt;
};
const RUNS = opt('--runs', 21);
const SECONDS = Math.min(opt('--seconds', 10), 60);
const NET = args.includes('--net');

const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};
const nowNs = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));

const work = mkdtempSync('/var/tmp/aegis-bench-orch-');
chmodSync(work, 0o755);
const home = join(work, 'home');
mkdirSync(home);
const config = loadConfig({ ...process.env, AEGIS_HOME: home, AEGIS_ALERT_RULES: 'none' });
const { openAuditLog } = await import('../src/audit/index.js');
const log = await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true });
const engine = createEngine({ config, audit: log, stateDir: join(work, 'state') });

function agent(name: string, entrypoint: string[]): AgentVersionRef {
  const dir = join(work, name);
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  const net = NET ? '  network:\n    allow: ["example.com"]\n' : '';
  const manifestPath = join(dir, 'agent.yaml');
  writeFileSync(
    manifestPath,
    `version: "1.0"\nagent:\n  name: ${name}\n  runtime: "python:3.11"\n  entrypoint: ${JSON.stringify(entrypoint)}\n  isolation: crun\npermissions:\n${net}  execution_time: 30s\n`,
  );
  return { name, version: 1, manifestDigest: `sha256:${name}`, codeDigest: `sha256:${name}`, manifestPath };
}

let seq = 0;
/** One execution; resolves with the ms from execute() to the agent's first instruction. */
async function firstInstruction(ref: AgentVersionRef): Promise<{ ms: number; warm: boolean }> {
  const out: Buffer[] = [];
  const obs: ExecutionObserver = { started: () => undefined, stdout: (c) => out.push(c), stderr: () => undefined, audit: () => undefined };
  const outputsDir = join(work, 'out', String(++seq));
  mkdirSync(outputsDir, { recursive: true });
  const t0 = nowNs();
  const s = await engine.execute(
    { executionId: `bench-${seq}`, agent: ref, input: { args: [] }, outputsDir, principal: { kind: 'bench' } },
    obs,
  ).done;
  if (s.status !== 'exited') throw new Error(`run ${seq}: ${JSON.stringify(s)}`);
  const agentNs = BigInt(Buffer.concat(out).toString().trim());
  return { ms: Number(agentNs - t0) / 1e6, warm: s.warm };
}

async function waitWarm(agentName: string, n: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if ((engine.pools().find((p) => p.agent === agentName)?.warm ?? 0) >= n) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('the pool did not fill within 10 s');
}

try {
  const ref = agent('clock', ['/bin/date', '+%s%N']);
  const cold: number[] = [];
  const warm: number[] = [];
  await firstInstruction(ref); // loads the manifest and the image once (cached by the engine)
  for (let i = 0; i < RUNS; i++) cold.push((await firstInstruction(ref)).ms);
  engine.setPool(ref, 1);
  for (let i = 0; i < RUNS; i++) {
    await waitWarm('clock', 1);
    const r = await firstInstruction(ref);
    if (!r.warm) throw new Error('expected a warm sandbox');
    warm.push(r.ms);
  }
  engine.setPool(ref, 0);

  // Throughput: 2 in flight, pool of 2, for SECONDS.
  const echo = agent('echo', ['/bin/echo', 'ok']);
  engine.setPool(echo, 2);
  await waitWarm('echo', 2);
  let done = 0;
  const until = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    [0, 1].map(async () => {
      while (performance.now() < until) {
        const outputsDir = join(work, 'out', String(++seq));
        mkdirSync(outputsDir, { recursive: true });
        const obs: ExecutionObserver = {
          started: () => undefined,
          stdout: () => undefined,
          stderr: () => undefined,
          audit: () => undefined,
        };
        const s = await engine.execute({ executionId: `bench-${seq}`, agent: echo, input: { args: [] }, outputsDir, principal: {} }, obs)
          .done;
        if (s.status !== 'exited') throw new Error(JSON.stringify(s));
        done++;
      }
    }),
  );
  const perSecond = done / ((performance.now() - t0) / 1000);
  const f = (x: number): string => x.toFixed(1).padStart(7);
  process.stdout.write(`orchestrator start latency, execute() -> first instruction (${RUNS} runs each${NET ? ', with network' : ''}):\n`);
  process.stdout.write(`  cold  p50 ${f(quantile(cold, 0.5))} ms  p99 ${f(quantile(cold, 0.99))} ms   (target p50 <= 60 ms)\n`);
  process.stdout.write(`  warm  p50 ${f(quantile(warm, 0.5))} ms  p99 ${f(quantile(warm, 0.99))} ms   (target p50 <= 5 ms)\n`);
  process.stdout.write(`throughput with a pool of 2, 2 in flight, ${SECONDS} s: ${perSecond.toFixed(1)} executions/s (target >= 20)\n`);
} finally {
  await engine.shutdown();
  await log.close();
  rmSync(work, { recursive: true, force: true });
}

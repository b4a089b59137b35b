/**
 * Sandbox network setup and teardown benchmark (issue 18): how long `startSandboxNetwork` and
 * `close()` take for one sandbox whose policy allows one host, and the namespace/veth/nftables
 * work alone (the adapter, src/gateway/netns/adapter.ts: `createSandboxNet` + `applyHostRules`,
 * then `destroySandboxNet`). Needs root, ip and nft. Nothing is resolved or connected.
 *
 *   npm run build && flock /tmp/aegis-it.lock node dist/bench/netns.js [--rounds 15]
 *
 * Prints medians (and min/max) in ms over ROUNDS rounds, after one warm-up round.
 * Target (issue 18): setup + teardown of one sandbox network <= 15 ms.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { startSandboxNetwork } from '../src/gateway/index.js';
import { applyHostRules, claimSlot, createSandboxNet, destroySandboxNet, releaseSlot } from '../src/gateway/netns/adapter.js';
import { planSandboxNet } from '../src/gateway/netns/plan.js';
import { MemorySink, networkPolicy } from '../test/integration/gateway-support.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const ROUNDS = Number(arg('--rounds', '15'));
if (!(ROUNDS >= 1)) throw new Error('usage: netns.js [--rounds N]');

const STATE_DIR = `/run/aegis-bench-netns-${process.pid}`;
const SUBNET = '10.201.0.0/16';
const config = { upstreamDns: { host: '198.51.100.53', port: 53 }, sandboxSubnet: SUBNET, stateDir: STATE_DIR };

type Row = Record<string, number>;

async function gatewayRound(): Promise<Row> {
  const t0 = performance.now();
  const net = await startSandboxNetwork({
    network: networkPolicy(['example.test']),
    executionId: 'bench-netns',
    audit: new MemorySink(),
    config,
  });
  const t1 = performance.now();
  await net.close();
  const t2 = performance.now();
  return { 'gateway start': t1 - t0, 'gateway close': t2 - t1, 'gateway start+close': t2 - t0 };
}

async function adapterRound(): Promise<Row> {
  const id = randomBytes(4).toString('hex');
  const slotDir = `${STATE_DIR}/net-slots`;
  const slot = await claimSlot(slotDir, SUBNET, id);
  const plan = planSandboxNet(id, slot, SUBNET);
  const runDir = `${STATE_DIR}/net/${plan.id}`;
  try {
    const t0 = performance.now();
    await createSandboxNet(plan, [], false);
    await applyHostRules(plan, {
      dns: 40001,
      httpProxy: 40002,
      socks: 40003,
      transparentHttp: 40004,
      transparentTls: 40005,
      tcp: new Map(),
    });
    const t1 = performance.now();
    await destroySandboxNet(plan, runDir);
    const t2 = performance.now();
    return { 'netns setup': t1 - t0, 'netns teardown': t2 - t1, 'netns setup+teardown': t2 - t0 };
  } finally {
    await destroySandboxNet(plan, runDir);
    await releaseSlot(slotDir, slot);
  }
}

function stats(rows: Row[]): Array<[string, number, number, number]> {
  return Object.keys(rows[0]!).map((k) => {
    const xs = rows.map((r) => r[k]!).sort((a, b) => a - b);
    return [k, xs[Math.floor(xs.length / 2)]!, xs[0]!, xs[xs.length - 1]!];
  });
}

async function main(): Promise<void> {
  try {
    await adapterRound(); // warm-up: page cache, nft modules
    await gatewayRound();
    const adapter: Row[] = [];
    const gateway: Row[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      adapter.push(await adapterRound());
      gateway.push(await gatewayRound());
    }
    console.log(`sandbox network, ${ROUNDS} rounds (ms)      median      min      max`);
    for (const [k, med, min, max] of [...stats(adapter), ...stats(gateway)]) {
      console.log(`${k.padEnd(34)} ${med.toFixed(1).padStart(10)} ${min.toFixed(1).padStart(8)} ${max.toFixed(1).padStart(8)}`);
    }
    const total = stats(adapter).find(([k]) => k === 'netns setup+teardown')![1];
    console.log(`target: netns setup+teardown <= 15 ms: ${total.toFixed(1)} ms (${(total / 15).toFixed(2)}x the target)`);
  } finally {
    await rm(STATE_DIR, { recursive: true, force: true });
  }
}

await main();

/**
 * Sandbox network setup and teardown benchmark (issue 18): how long `startSandboxNetwork` and
 * `close()` take for one sandbox whose policy allows one host, and the namespace/veth/nftables
 * work alone (the adapter, src/gateway/netns/adapter.ts), each two ways:
 * - built at start (`netnsPool` 0, as before the pool): `createSandboxNet` + `applyHostRules`,
 *   then the final drop-counter reading and `destroySandboxNet` waited for (`teardown: 'wait'`);
 * - pooled (src/gateway/netns/pool.ts): `claimPooledNet` + `applyHostRules`, then
 *   the final drop-counter reading while `startBackgroundTeardown` starts, then its `release()` (what `aegis run` does: `teardown: 'background'`); the pool is refilled
 *   between rounds, untimed (a run refills while its sandbox runs).
 * Needs root, ip and nft. Nothing is resolved or connected.
 *
 *   npm run build && flock /tmp/aegis-it.lock node dist/bench/netns.js [--rounds 15]
 *
 * Prints medians (and min/max) in ms over ROUNDS rounds, after one warm-up round.
 * Target (issue 18): setup + teardown of one sandbox network <= 15 ms.
 */
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { startSandboxNetwork } from '../src/gateway/index.js';
import {
  applyHostRules,
  blockedCounterReader,
  claimSlot,
  createSandboxNet,
  destroySandboxNet,
  releaseSlot,
  sweepStaleSandboxNets,
  startBackgroundTeardown,
} from '../src/gateway/netns/adapter.js';
import { planSandboxNet, type ListenerPorts } from '../src/gateway/netns/plan.js';
import { claimPooledNet, drainNetPool, refillNetPool, type PoolKey } from '../src/gateway/netns/pool.js';
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
const PORTS: ListenerPorts = { dns: 40001, httpProxy: 40002, socks: 40003, transparentHttp: 40004, transparentTls: 40005, tcp: new Map() };
const KEY: PoolKey = { tcpPorts: [], anyTcpPort: false, tools: false };

/** Wait until background teardowns are done (their slot locks gone but the pool's), so they do not overlap the next round. */
async function settle(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const locks = await readdir(`${STATE_DIR}/net-slots`).catch(() => [] as string[]);
    const ready = await readdir(`${STATE_DIR}/net-pool`).catch(() => [] as string[]);
    if (locks.filter((n) => /^[0-9]+$/.test(n)).length <= ready.filter((n) => n.endsWith('.ready')).length) return;
    await sleep(5);
  }
}

async function gatewayRound(pool: boolean): Promise<Row> {
  const name = pool ? 'gateway pooled' : 'gateway';
  const t0 = performance.now();
  const net = await startSandboxNetwork({
    network: networkPolicy(['example.test']),
    executionId: 'bench-netns',
    audit: new MemorySink(),
    config: { ...config, ...(pool ? { netnsPool: 1 } : {}) },
    ...(pool ? { teardown: 'background' as const } : {}),
  });
  const t1 = performance.now();
  await sleep(100); // the sandbox's run, untimed (the pool is refilled meanwhile)
  const t2 = performance.now();
  await net.close();
  const t3 = performance.now();
  await settle();
  return { [`${name} start`]: t1 - t0, [`${name} close`]: t3 - t2, [`${name} start+close`]: t1 - t0 + (t3 - t2) };
}

async function pooledRound(): Promise<Row> {
  await refillNetPool(STATE_DIR, SUBNET, KEY, 1);
  const slotDir = `${STATE_DIR}/net-slots`;
  const t0 = performance.now();
  const plan = await claimPooledNet(STATE_DIR, SUBNET, KEY, 'bench-netns');
  if (plan === null) throw new Error('the pool gave nothing');
  const runDir = `${STATE_DIR}/net/${plan.id}`;
  await applyHostRules(plan, PORTS);
  const t1 = performance.now();
  // as close() does it: the script starts while the final drop counters are read
  const [bg] = await Promise.all([startBackgroundTeardown(plan, runDir, slotDir, 'bench-netns'), blockedCounterReader(plan)()]);
  await bg.release();
  const t2 = performance.now();
  await settle();
  return { 'pooled setup': t1 - t0, 'pooled teardown': t2 - t1, 'pooled setup+teardown': t2 - t0 };
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
    await applyHostRules(plan, PORTS);
    const t1 = performance.now();
    await blockedCounterReader(plan)(); // the final drop-counter reading, as close() makes it
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
    await pooledRound();
    await gatewayRound(false);
    await gatewayRound(true);
    const rows: Row[][] = [[], [], [], []];
    for (let i = 0; i < ROUNDS; i++) {
      rows[0]!.push(await adapterRound());
      rows[1]!.push(await pooledRound());
      rows[2]!.push(await gatewayRound(false));
      rows[3]!.push(await gatewayRound(true));
    }
    console.log(`sandbox network, ${ROUNDS} rounds (ms)      median      min      max`);
    for (const [k, med, min, max] of rows.flatMap(stats)) {
      console.log(`${k.padEnd(34)} ${med.toFixed(1).padStart(10)} ${min.toFixed(1).padStart(8)} ${max.toFixed(1).padStart(8)}`);
    }
    for (const k of ['netns setup+teardown', 'pooled setup+teardown']) {
      const total = rows.flatMap(stats).find(([name]) => name === k)![1];
      console.log(`target: ${k} <= 15 ms: ${total.toFixed(1)} ms (${(total / 15).toFixed(2)}x the target)`);
    }
  } finally {
    await settle();
    await drainNetPool(STATE_DIR, SUBNET);
    await sweepStaleSandboxNets(STATE_DIR, SUBNET);
    await rm(STATE_DIR, { recursive: true, force: true });
  }
}

await main();

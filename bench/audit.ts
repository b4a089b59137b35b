/**
 * Audit log benchmark (issue 5): sustained appends/s with batched concurrent writers (every
 * batch fsync'd before its events are acknowledged), append latency percentiles, full
 * verification of a 1M-event log, log open time, inclusion and consistency proof generation —
 * for the embedded store and, when a URL is given, PostgreSQL.
 *
 *   npm run build && node dist/bench/audit.js [--events 300000] [--big 1000000] [--runs 3]
 *                                             [--pg <postgres URL>] [--pg-events 100000]
 *                                             [--open-only]  (only build the big log, time opening)
 *                                             [--rates 1000,10000,50000] (open-loop offered rates)
 *                                             [--no-big]  (skip the big log: no verify/open/proofs)
 *
 * Prints medians; nothing here is asserted (timings never belong in tests).
 */
import { constants } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type AuditEventInput, type AuditStore, openAuditLog, openStore, trustedVerifier, verifyLog } from '../src/audit/index.js';
import { PgStore } from '../src/audit/store/pg-store.js';
import { workerAnalyzer } from '../src/audit/verify-pool.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '300000' },
    big: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    writers: { type: 'string', default: '8192' },
    pg: { type: 'string' },
    'pg-events': { type: 'string', default: '100000' },
    'open-only': { type: 'boolean', default: false },
    /** Offered rates (events/s) of the open-loop latency runs, comma-separated. */
    rates: { type: 'string', default: '1000,10000,50000' },
    /** Only the sustained and latency figures (no big log, verification, open or proofs). */
    'no-big': { type: 'boolean', default: false },
  },
});
const EVENTS = Number(values.events);
const BIG = Number(values.big);
const RUNS = Number(values.runs);
const WRITERS = Number(values.writers);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const pct = (xs: ArrayLike<number>, p: number): number => {
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
};
const fmt = (n: number, d = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

function event(i: number): AuditEventInput {
  return {
    actor: { agent: 'bench-agent', execution: 'exec-0001' },
    action: 'net.connect',
    decision: i % 10 === 0 ? 'deny' : 'allow',
    reason: 'host-allowed',
    payload: { host: 'api.example.com', port: 443, bytes: i * 7, path: '/v1/things' },
  };
}

interface Target {
  readonly name: string;
  /** A fresh, empty log home plus the environment selecting the store. */
  fresh(): Promise<{ home: string; env: Record<string, string>; cleanup(): Promise<void> }>;
}

/** N events through `writers` concurrent closed-loop writers; returns events/s and latencies. */
async function sustained(
  home: string,
  env: Record<string, string>,
  n: number,
  writers: number,
): Promise<{ rate: number; lat: Float64Array; cpuUs: number }> {
  const log = await openAuditLog({ home, env });
  // A typed array: a large `new Array(n)` would be a slow dictionary and distort the figures.
  const lat = new Float64Array(n);
  let next = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const writer = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const t = performance.now();
      await log.append(event(i));
      lat[i] = performance.now() - t;
    }
  };
  await Promise.all(Array.from({ length: writers }, writer));
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(c0);
  await log.close();
  return { rate: n / secs, lat, cpuUs: (cpu.user + cpu.system) / n };
}

/** The same with writers that hand over batches (appendMany: one acknowledgement per batch). */
async function sustainedBatches(home: string, env: Record<string, string>, n: number, writers: number, size: number): Promise<number> {
  const log = await openAuditLog({ home, env });
  let next = 0;
  const t0 = performance.now();
  const writer = async (): Promise<void> => {
    while (next < n) {
      const batch: AuditEventInput[] = [];
      for (let k = 0; k < size && next < n; k++) batch.push(event(next++));
      await log.appendMany(batch);
    }
  };
  await Promise.all(Array.from({ length: writers }, writer));
  const rate = n / ((performance.now() - t0) / 1000);
  await log.close();
  return rate;
}

/**
 * Open-loop load at `rate` events/s for `warm` + `secs` seconds: latency of each append made after
 * the first `warm` seconds (steady state: the encoder threads have started and the code is
 * compiled; what a log that is already open sees).
 */
async function paced(home: string, env: Record<string, string>, rate: number, secs: number, warm = 1): Promise<number[]> {
  const log = await openAuditLog({ home, env });
  const lat: number[] = [];
  const pending: Promise<void>[] = [];
  const t0 = performance.now();
  let sent = 0;
  while (performance.now() - t0 < (warm + secs) * 1000) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    for (; sent < due; sent++) {
      const t = performance.now();
      const counted = t - t0 >= warm * 1000;
      pending.push(log.append(event(sent)).then(() => void (counted && lat.push(performance.now() - t))));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  await log.close();
  return lat;
}

/**
 * The disk's own floor for append latency: 300 writes of 30 KB (a batch at 50,000 events/s is
 * about that) with O_DSYNC, as the embedded store writes, in the same directory.
 */
async function diskFloor(dir: string): Promise<number[]> {
  const fh = await open(join(dir, 'floor.dat'), constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC, 0o600);
  const buf = Buffer.alloc(30_000, 0x61);
  const lat: number[] = [];
  try {
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      await fh.write(buf, 0, buf.length, i * buf.length);
      lat.push(performance.now() - t);
    }
  } finally {
    await fh.close();
  }
  return lat;
}

async function verifyTime(home: string, env: Record<string, string>): Promise<{ secs: number; size: number }> {
  const store: AuditStore = await openStore(home, env);
  const { verifier } = await trustedVerifier(home, env);
  const analyzer = workerAnalyzer(); // as `aegis audit verify` does
  const t0 = performance.now();
  const r = await verifyLog({ store, verifier, origin: verifier.name, analyze: analyzer.analyze });
  const secs = (performance.now() - t0) / 1000;
  await analyzer.close();
  await store.close();
  if (!r.ok) throw new Error(`benchmark log does not verify: ${r.problem}`);
  return { secs, size: r.size };
}

/**
 * Time to open the log for appending (what every `aegis run` pays), RUNS times each: from the
 * saved frontier (catching up nothing: the log was closed cleanly), then with the frontier made
 * unreadable, which makes the log rebuild the tree from every leaf hash, the only way before the
 * frontier existed.
 */
async function openTimes(home: string, env: Record<string, string>): Promise<{ frontier: number[]; full: number[] }> {
  const once = async (): Promise<number> => {
    const t0 = performance.now();
    const log = await openAuditLog({ home, env, inlineEncoding: true });
    const secs = (performance.now() - t0) / 1000;
    await log.close();
    return secs;
  };
  const frontier: number[] = [];
  for (let r = 0; r < RUNS; r++) frontier.push(await once());
  const store = await openStore(home, env);
  await store.writeFrontier(0, new Uint8Array(0)); // unreadable: the next opens rebuild from the leaves
  await store.close();
  const full: number[] = [];
  for (let r = 0; r < RUNS; r++) full.push(await once());
  return { frontier, full };
}

async function proofs(home: string, env: Record<string, string>): Promise<{ loadSecs: number; incl: number; cons: number }> {
  const log = await openAuditLog({ home, env });
  const n = log.size;
  // The first proof loads every leaf hash from the store (the log was opened from its frontier).
  const t0 = performance.now();
  await log.inclusionProof(0, 1);
  const loadSecs = (performance.now() - t0) / 1000;
  const incl: number[] = [];
  const cons: number[] = [];
  for (let k = 0; k < 1000; k++) {
    const size = 1 + Math.floor(Math.random() * n);
    const index = Math.floor(Math.random() * size);
    let t = performance.now();
    await log.inclusionProof(index, size);
    incl.push(performance.now() - t);
    const s1 = 1 + Math.floor(Math.random() * size);
    t = performance.now();
    await log.consistencyProof(s1, size);
    cons.push(performance.now() - t);
  }
  await log.close();
  return { loadSecs, incl: median(incl) * 1000, cons: median(cons) * 1000 };
}

async function openBench(home: string, env: Record<string, string>, big: number): Promise<void> {
  const o = await openTimes(home, env);
  const runs = (xs: number[]): string => xs.map((x) => fmt(x * 1000, 0)).join(', ');
  console.log(
    `open log for append, ${fmt(big)} events, from the saved frontier: median ${fmt(median(o.frontier) * 1000, 1)} ms  (runs: ${runs(o.frontier)} ms)`,
  );
  console.log(
    `open log for append, ${fmt(big)} events, full rebuild from every leaf hash (frontier unreadable; the only way before): median ${fmt(median(o.full) * 1000, 0)} ms  (runs: ${runs(o.full)} ms)`,
  );
}

async function bench(t: Target, n: number, big: number): Promise<void> {
  if (values['open-only'] === true) {
    console.log(`\n== ${t.name} ==`);
    const { home, env, cleanup } = await t.fresh();
    const tb = performance.now();
    const s = await sustained(home, env, big, WRITERS);
    console.log(`built a ${fmt(big)}-event log in ${fmt((performance.now() - tb) / 1000, 1)} s (${fmt(s.rate)} events/s)`);
    await openBench(home, env, big);
    await cleanup();
    return;
  }
  console.log(`\n== ${t.name} ==`);
  const rates: number[] = [];
  const p99s: number[] = [];
  const p50s: number[] = [];
  const cpus: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const { home, env, cleanup } = await t.fresh();
    const s = await sustained(home, env, n, WRITERS);
    rates.push(s.rate);
    cpus.push(s.cpuUs);
    p50s.push(pct(s.lat, 50));
    p99s.push(pct(s.lat, 99));
    await cleanup();
  }
  console.log(
    `sustained appends (${fmt(n)} events, ${fmt(WRITERS)} concurrent writers, fsync per batch): median ${fmt(median(rates))} events/s  (runs: ${rates.map((x) => fmt(x)).join(', ')})`,
  );
  console.log(`  latency at saturation: p50 ${fmt(median(p50s), 1)} ms, p99 ${fmt(median(p99s), 1)} ms`);
  console.log(`  CPU time of this process (all threads) per event: median ${fmt(median(cpus), 1)} µs`);
  const brates: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const { home, env, cleanup } = await t.fresh();
    brates.push(await sustainedBatches(home, env, n, 16, 256));
    await cleanup();
  }
  console.log(
    `sustained appends, 16 writers x appendMany(256 events): median ${fmt(median(brates))} events/s  (runs: ${brates.map((x) => fmt(x)).join(', ')})`,
  );
  {
    const { home, cleanup } = await t.fresh();
    const floor = await diskFloor(home);
    console.log(
      `  the disk alone, 30 KB write with O_DSYNC: p50 ${fmt(pct(floor, 50), 2)} ms, p99 ${fmt(pct(floor, 99), 2)} ms, max ${fmt(pct(floor, 100), 1)} ms`,
    );
    await cleanup();
  }
  for (const rate of values.rates.split(',').map(Number)) {
    const { home, env, cleanup } = await t.fresh();
    const lat = await paced(home, env, rate, 3);
    console.log(
      `  latency at ${fmt(rate)} events/s offered (3 s after 1 s of warm-up): p50 ${fmt(pct(lat, 50), 2)} ms, p99 ${fmt(pct(lat, 99), 2)} ms, max ${fmt(pct(lat, 100), 1)} ms`,
    );
    await cleanup();
  }
  if (values['no-big'] === true) return;
  const { home, env, cleanup } = await t.fresh();
  const tb = performance.now();
  const s = await sustained(home, env, big, WRITERS);
  console.log(`built a ${fmt(big)}-event log in ${fmt((performance.now() - tb) / 1000, 1)} s (${fmt(s.rate)} events/s)`);
  const v: number[] = [];
  for (let r = 0; r < Math.min(RUNS, 3); r++) v.push((await verifyTime(home, env)).secs);
  console.log(
    `full verification of ${fmt(big)} events (recompute every leaf, tree, checkpoints): median ${fmt(median(v), 2)} s  (runs: ${v.map((x) => fmt(x, 2)).join(', ')})`,
  );
  await openBench(home, env, big);
  const p = await proofs(home, env);
  console.log(
    `proofs: first one loads ${fmt(big)} leaf hashes in ${fmt(p.loadSecs, 2)} s; then inclusion proof: median ${fmt(p.incl, 1)} µs; consistency proof: median ${fmt(p.cons, 1)} µs`,
  );
  await cleanup();
}

const embedded: Target = {
  name: 'embedded (files under $AEGIS_HOME/audit, ext4)',
  async fresh() {
    const home = await mkdtemp(join(tmpdir(), 'aegis-bench-'));
    return {
      home,
      env: { AEGIS_AUDIT_PUBLISH: `file:${join(home, 'published')}` },
      cleanup: () => rm(home, { recursive: true, force: true }),
    };
  },
};

function pgTarget(url: string): Target {
  let k = 0;
  return {
    name: 'PostgreSQL',
    async fresh() {
      const home = await mkdtemp(join(tmpdir(), 'aegis-bench-'));
      const schema = `aegis_bench_${process.pid}_${k++}`;
      return {
        home,
        env: { AEGIS_AUDIT_STORE: url, AEGIS_AUDIT_PG_SCHEMA: schema, AEGIS_AUDIT_PUBLISH: `file:${join(home, 'published')}` },
        cleanup: async () => {
          await PgStore.dropSchema(url, schema);
          await rm(home, { recursive: true, force: true });
        },
      };
    },
  };
}

const os = await import('node:os');
console.log(
  `AEGIS audit benchmark: node ${process.version}, ${os.availableParallelism()} CPUs, load average ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
await bench(embedded, EVENTS, BIG);
const pgUrl = values.pg ?? process.env['AEGIS_TEST_PG_URL'];
if (pgUrl !== undefined && pgUrl !== '') {
  const n = Number(values['pg-events']);
  await bench(pgTarget(pgUrl), n, Math.min(BIG, n * 2));
} else {
  console.log('\n(PostgreSQL skipped: pass --pg <url> or set AEGIS_TEST_PG_URL)');
}

/**
 * Runtime monitor benchmark (a script, not a timed test; docs/monitoring.md): the slowdown of a
 * system-call-heavy agent with the monitor on vs off, and the events per second the monitor
 * counts without loss.
 *
 *   node dist/bench/monitor.js [--runs N] [--opens N] [--execs N] [--isolation crun|runc] [--no-refused|--per-call]
 *
 * One host-wide monitor serves every monitored run (as `aegis serve` keeps it): the first attach
 * starts bpftrace, the next ones only register the run's cgroup; both are printed.
 * `--no-refused` leaves out the refused-call probe (raw_syscalls:sys_exit), to measure its share;
 * `--per-call` traces refused calls with one exit tracepoint per call of the default profile.
 *
 * The agent (python:3.11 under crun by default) times itself from the inside: open/read/close
 * of a small file N times, then fork/exec of `true` M times (posix_spawn + wait). Runs with and
 * without the monitor are interleaved (one of each per round, after a warm-up round), so a
 * noisy, shared machine slows both alike; medians are printed. The monitor's attach time
 * (bpftrace compiles and loads its program before the agent starts) is printed separately: it
 * is a start-up cost, not a slowdown of the agent.
 * Targets (issue 15): <= 5 % slowdown, >= 100,000 events/s before aggregation.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditEventInput } from '../src/audit/event.js';
import { resolveImage } from '../src/images/index.js';
import { createMonitor, monitorSupport, type Monitor } from '../src/monitor/index.js';
import type { Isolation, Policy } from '../src/policy/types.js';
import { runSandbox } from '../src/sandbox/run.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) || dflt : dflt;
};
const RUNS = opt('--runs', 5);
const OPENS = opt('--opens', 300_000);
const EXECS = opt('--execs', 300);
const isolation = (args.includes('--isolation') ? args[args.indexOf('--isolation') + 1] : 'crun') as Isolation;
const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;

const AGENT = `import os, sys, time
n_open, n_exec = int(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
for i in range(n_open):
    fd = os.open('/agent/agent.py', os.O_RDONLY)
    os.read(fd, 64)
    os.close(fd)
t_open = time.perf_counter() - t
t = time.perf_counter()
for i in range(n_exec):
    os.waitpid(os.posix_spawn('/bin/true', ['true'], {}), 0)
t_exec = time.perf_counter() - t
print(t_open, t_exec)
`;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

function policy(): Policy {
  return {
    version: '1.0',
    agent: {
      name: 'bench-monitor',
      runtime: PY,
      entrypoint: ['python3', 'agent.py', String(OPENS), String(EXECS)],
      env: {},
      secretRefs: {},
      isolation: null,
      code: '.',
    },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: [], write: [] },
    limits: { timeoutMs: 300_000, memoryBytes: 256 * 1024 * 1024, cpu: { quotaUs: 100_000, periodUs: 100_000, cores: 1 }, pids: 64 },
    syscalls: { deny: [] },
  };
}

interface Sample {
  openS: number;
  execS: number;
  totalMs: number;
  events: AuditEventInput[];
}

async function main(): Promise<void> {
  const support = monitorSupport();
  if (support.missing.length > 0) throw new Error(`monitor unsupported: ${support.missing.join('; ')}`);
  const rootfs = (await resolveImage(PY)).rootfs;
  const work = mkdtempSync('/var/tmp/aegis-bench-monitor-');
  chmodSync(work, 0o755);
  const code = join(work, 'agent');
  mkdirSync(code);
  writeFileSync(join(code, 'agent.py'), AGENT);
  // One host-wide monitor (as `aegis serve` keeps it). Each round: no bpftrace on the host at all
  // (`none`), a monitored run that starts it (its attach is the cold one), a run that is not
  // registered while it runs (`unwatched`: what every other process of the host pays), and a
  // monitored run with it warm (`on`).
  const hub = createMonitor({
    idleMs: 600_000,
    attachTimeoutMs: 120_000,
    ...(args.includes('--no-refused') ? { traceRefused: false } : args.includes('--per-call') ? { traceRefused: 'per-call' as const } : {}),
  });
  const coldAttachMs: number[] = [];
  const warmAttachMs: number[] = [];
  let cold = true;
  const monitor: Monitor = {
    attach: async (target, sink) => {
      const t = performance.now();
      const s = await hub.attach(target, sink);
      (cold ? coldAttachMs : warmAttachMs).push(performance.now() - t);
      cold = false;
      return s;
    },
  };
  const once = async (on: boolean): Promise<Sample> => {
    let out = '';
    const events: AuditEventInput[] = [];
    const t = performance.now();
    const r = await runSandbox({
      policy: policy(),
      manifestDir: code,
      imageRootfs: rootfs,
      isolation,
      stateDir: join(work, 'state'),
      stdout: (b) => void (out += b.toString()),
      stderr: (b) => void (out += b.toString()),
      audit: { append: (e) => void events.push(e) },
      ...(on ? { monitor } : {}),
    });
    if (r.status !== 'exited' || r.exitCode !== 0) throw new Error(`agent failed: ${r.status} ${r.exitCode} ${out}`);
    const [openS, execS] = out.trim().split(/\s+/).map(Number) as [number, number];
    return { openS, execS, totalMs: performance.now() - t, events };
  };
  try {
    const off: Sample[] = [];
    const on: Sample[] = [];
    const unwatched: Sample[] = [];
    for (let round = 0; round < RUNS + 1; round++) {
      await hub.close();
      cold = true;
      const a = await once(false);
      await once(true);
      const u = await once(false);
      const b = await once(true);
      if (round > 0) {
        off.push(a);
        unwatched.push(u);
        on.push(b);
      }
    }
    const m = (xs: Sample[], f: (s: Sample) => number): number => median(xs.map(f));
    const pct = (a: number, b: number): string => `${(((b - a) / a) * 100).toFixed(1)} %`;
    const agentOff = m(off, (s) => s.openS + s.execS);
    const agentOn = m(on, (s) => s.openS + s.execS);
    console.log(`runtime monitor benchmark: ${isolation}, ${OPENS} open/read/close + ${EXECS} fork/exec of true, ${RUNS} rounds (medians)`);
    console.log(
      `  open loop      off ${m(off, (s) => s.openS).toFixed(3)} s   on ${m(on, (s) => s.openS).toFixed(3)} s   slowdown ${pct(
        m(off, (s) => s.openS),
        m(on, (s) => s.openS),
      )}`,
    );
    console.log(
      `  exec loop      off ${m(off, (s) => s.execS).toFixed(3)} s   on ${m(on, (s) => s.execS).toFixed(3)} s   slowdown ${pct(
        m(off, (s) => s.execS),
        m(on, (s) => s.execS),
      )}`,
    );
    console.log(
      `  agent total    off ${agentOff.toFixed(3)} s   on ${agentOn.toFixed(3)} s   slowdown ${pct(agentOff, agentOn)} (target <= 5 %)`,
    );
    console.log(
      `  unwatched      agent ${m(unwatched, (s) => s.openS + s.execS).toFixed(3)} s: slowdown ${pct(
        agentOff,
        m(unwatched, (s) => s.openS + s.execS),
      )} for a process the monitor does not watch (every other process of the host)`,
    );
    console.log(
      `  whole run      off ${m(off, (s) => s.totalMs).toFixed(0)} ms   on ${m(on, (s) => s.totalMs).toFixed(0)} ms (on: warm attach and detach)`,
    );
    // Events the kernel side counted (opens, reads, execs, exits) per second of the agent's open loop, and what was lost.
    const summaries = on.map((s) => s.events.find((e) => e.action === 'monitor.summary')!.payload);
    const opens = median(summaries.map((p) => Number(p['opens'])));
    const lost = Math.max(...summaries.map((p) => Number(p['lost'])));
    const perSec = median(on.map((s, i) => (Number(summaries[i]!['opens']) + OPENS) /* reads */ / s.openS));
    console.log(
      `  events         ${opens} opens counted per run; ${Math.round(perSec)} events/s (opens + reads) sustained, lost ${lost} (target >= 100,000/s, 0 lost)`,
    );
    console.log(`  audit events   ${median(on.map((s) => s.events.length))} per monitored run (aggregated)`);
    console.log(
      `  attach         cold ${median(coldAttachMs).toFixed(0)} ms (bpftrace started), warm ${median(warmAttachMs).toFixed(1)} ms (cgroup registered with the running monitor) (medians)`,
    );
  } finally {
    await hub.close();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();

/**
 * The host's shared runtime monitor (src/monitor/daemon.ts, client.ts): one daemon and one
 * bpftrace per state dir serve every run; the first run starts it (two starting at once still
 * make one), the next ones only register their cgroup; runs never see each other's events; a
 * monitor that dies while an agent runs stops that agent (fail secure) and the next run starts a
 * new one; the daemon and its bpftrace are gone once idle. Real agents under crun. Requires
 * bpftrace and tracefs (scripts/setup.sh); under CI=true a missing requirement fails.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditEventInput } from '../../src/audit/event.js';
import { parseLockOwner, pidAlive } from '../../src/host/pid-lock.js';
import { hostMonitor } from '../../src/monitor/client.js';
import { monitorSupport, type Monitor } from '../../src/monitor/index.js';
import { runSandbox, type RunResult } from '../../src/sandbox/run.js';
import { requireOrSkip, sandboxRequirements, testPolicy } from './sandbox-conformance.js';

type Ran = RunResult & { events: AuditEventInput[]; out: string };

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((x) => x !== '')
      .map(Number);
  } catch {
    return [];
  }
}

describe('the host’s shared runtime monitor', { timeout: 300_000 }, () => {
  let work = '';
  let dir = '';
  let unavailable: string | null = null;
  let rootfs = '';
  const started = new Set<number>();
  const IDLE_MS = 1500;

  const daemon = (): { pid: number; bpftrace: number[] } | null => {
    try {
      const o = parseLockOwner(readFileSync(join(dir, 'monitor.pid'), 'utf8'));
      if (o === null || !pidAlive(o.pid)) return null;
      started.add(o.pid);
      return { pid: o.pid, bpftrace: children(o.pid) };
    } catch {
      return null;
    }
  };
  const run = async (monitor: Monitor, code: string, onEvent?: (e: AuditEventInput) => void): Promise<Ran> => {
    const events: AuditEventInput[] = [];
    let out = '';
    const r = await runSandbox({
      policy: testPolicy({ entrypoint: ['python3', '-c', code] }),
      manifestDir: work,
      imageRootfs: rootfs,
      isolation: 'crun',
      stateDir: join(work, 'state'),
      stdout: (b) => void (out += b.toString()),
      stderr: (b) => void (out += b.toString()),
      audit: {
        append: (e) => {
          events.push(e);
          onEvent?.(e);
        },
      },
      monitor,
    });
    return { ...r, events, out };
  };
  const of = (r: Ran, action: string): AuditEventInput[] => r.events.filter((e) => e.action === action);
  const marker = (n: string): string => `open('/tmp/marker-${n}', 'w').close(); import subprocess; subprocess.run(['/bin/true', '${n}'])`;

  before(async () => {
    const req = await sandboxRequirements('crun');
    const support = monitorSupport();
    unavailable =
      req.unavailable ?? (support.missing.length > 0 ? `runtime monitor unsupported here: ${support.missing.join('; ')}` : null);
    rootfs = req.rootfs;
    work = mkdtempSync('/var/tmp/aegis-monitor-host-');
    chmodSync(work, 0o755);
    dir = join(work, 'state', 'monitor');
  });
  after(async () => {
    // Nothing of ours may outlive the file, whatever failed.
    for (const pid of started) {
      for (const c of children(pid)) if (pidAlive(c)) process.kill(c, 'SIGKILL');
      if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('two runs that start at once start ONE monitor, and never see each other’s events', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    assert.equal(daemon(), null, 'no monitor before the first run');
    // Two clients, as two `aegis run` processes would be.
    const [a, b] = await Promise.all([
      run(hostMonitor({ dir, idleMs: IDLE_MS }), marker('a')),
      run(hostMonitor({ dir, idleMs: IDLE_MS }), marker('b')),
    ]);
    for (const r of [a, b]) assert.equal(r.status, 'exited', r.out);
    const paths = (r: Ran): string[] => of(r, 'fs.open').map((e) => String(e.payload['path']));
    assert.ok(paths(a).includes('/tmp/marker-a') && !paths(a).includes('/tmp/marker-b'), JSON.stringify(paths(a)));
    assert.ok(paths(b).includes('/tmp/marker-b') && !paths(b).includes('/tmp/marker-a'), JSON.stringify(paths(b)));
    const argv = (r: Ran): string => JSON.stringify(of(r, 'process.exec').map((e) => e.payload['argv']));
    assert.ok(argv(a).includes('["/bin/true","a"]') && !argv(a).includes('"b"]'), argv(a));
    assert.ok(argv(b).includes('["/bin/true","b"]') && !argv(b).includes('"a"]'), argv(b));
    for (const r of [a, b]) {
      for (const e of r.events) if (e.actor.execution !== undefined) assert.equal(e.actor.execution, r.executionId);
      assert.equal(of(r, 'monitor.summary')[0]?.payload['complete'], true);
    }
    const d = daemon();
    assert.ok(d !== null, 'the monitor outlives the runs for its idle time');
    assert.equal(d.bpftrace.length, 1, 'one bpftrace for both');
    const log = readFileSync(join(dir, 'monitor.log'), 'utf8');
    assert.equal(log.match(/listening on/g)?.length, 1, log);
  });

  it('a warm monitor: the next run only registers its cgroup (attach time reported, not asserted)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const m = hostMonitor({ dir, idleMs: IDLE_MS });
    let spawnAt = 0;
    const t0 = performance.now();
    const r = await run(m, marker('c'), (e) => {
      if (e.action === 'run.spawn' && spawnAt === 0) spawnAt = performance.now();
    });
    assert.equal(r.status, 'exited', r.out);
    assert.ok(of(r, 'fs.open').some((e) => e.payload['path'] === '/tmp/marker-c'));
    t.diagnostic(`start to run.spawn with a warm monitor: ${(spawnAt - t0).toFixed(0)} ms; whole run ${r.durationMs.toFixed(0)} ms`);
    assert.equal(readFileSync(join(dir, 'monitor.log'), 'utf8').match(/listening on/g)?.length, 1, 'the same daemon');
  });

  it('a monitor that dies while the agent runs stops the agent (fail secure), and the next run starts a new one', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const before = daemon();
    assert.ok(before !== null);
    const m = hostMonitor({ dir, idleMs: IDLE_MS });
    const r = await run(m, "print('up', flush=True); import time; time.sleep(60)", (e) => {
      // Once the agent runs, its monitor's bpftrace is killed.
      if (e.action === 'run.start') for (const c of before.bpftrace) process.kill(c, 'SIGKILL');
    });
    assert.equal(r.status, 'killed', r.out);
    assert.ok(r.durationMs < 30_000, 'stopped, not run to its end');
    const lost = of(r, 'monitor.lost');
    assert.equal(lost.length, 1);
    assert.equal(lost[0]!.decision, 'deny');
    assert.equal(of(r, 'monitor.summary')[0]?.payload['complete'], false);
    // The daemon went with its bpftrace; the next run starts a new monitor and is monitored.
    const end = Date.now() + 10_000;
    while (pidAlive(before.pid) && Date.now() < end) await sleep(50);
    assert.equal(pidAlive(before.pid), false);
    const next = await run(m, marker('d'));
    assert.equal(next.status, 'exited', next.out);
    assert.ok(of(next, 'fs.open').some((e) => e.payload['path'] === '/tmp/marker-d'));
    const after = daemon();
    assert.ok(after !== null && after.pid !== before.pid, 'a new daemon');
  });

  it('once idle, the daemon and its bpftrace are gone', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const d = daemon();
    assert.ok(d !== null);
    const end = Date.now() + IDLE_MS + 10_000;
    while ((pidAlive(d.pid) || d.bpftrace.some(pidAlive)) && Date.now() < end) await sleep(100);
    assert.equal(pidAlive(d.pid), false, 'the daemon stopped');
    for (const p of d.bpftrace) assert.equal(pidAlive(p), false, `bpftrace ${p} stopped`);
    assert.equal(existsSync(join(dir, 'monitor.pid')), false);
    assert.equal(existsSync(join(dir, 'monitor.sock')), false);
  });

  it('a monitor that cannot start means the agent does not start', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = await run(
      hostMonitor({ dir: join(work, 'broken'), bpftrace: '/bin/false', startTimeoutMs: 20_000 }),
      "open('/tmp/ran', 'w')",
    );
    assert.equal(r.status, 'failed_to_start');
    assert.equal(r.error?.code, 'sandbox.monitor_failed');
    assert.deepEqual(of(r, 'run.spawn'), [], 'the runtime was never spawned');
    assert.match(r.error.message, /did not start: .*cannot start: bpftrace did not attach/);
    assert.match(readFileSync(join(work, 'broken', 'monitor.log'), 'utf8'), /cannot start: bpftrace did not attach/);
  });
});

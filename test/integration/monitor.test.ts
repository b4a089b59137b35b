/**
 * The runtime monitor (src/monitor, docs/monitoring.md) with real agents under crun and runc,
 * and under gVisor as far as it goes: what the agent did arrives as audit events, refusals
 * included, bounded, and attributed to the right execution. Requires bpftrace and tracefs
 * (scripts/setup.sh installs and mounts them); under CI=true a missing requirement fails.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../src/audit/event.js';
import { createMonitor, monitorSupport } from '../../src/monitor/index.js';
import type { Isolation } from '../../src/policy/types.js';
import { runSandbox, type RunResult, type RunSandboxOptions } from '../../src/sandbox/run.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { requireOrSkip, sandboxRequirements, testPolicy } from './sandbox-conformance.js';
import { DENIED_PROBES, syscallElf } from './sandbox-probes.js';

const sha256 = (b: string | Buffer): string => createHash('sha256').update(b).digest('hex');

const INPUT = 'granted input\n';

/** Reads its input, writes its output, tries three refused opens, runs a shell and two denied calls. */
const AGENT = `import os, subprocess, sys
data = open('/data/inputs/in.txt', 'rb').read()
open('/data/outputs/out.txt', 'wb').write(data.upper())
for path, mode in [('/etc/shadow', 'r'), (sys.argv[1], 'r'), ('/agent/main.py', 'a')]:
    try:
        open(path, mode).close()
        print('OPENED', path)
    except OSError as e:
        print('refused', path, e.errno)
subprocess.run(['/bin/sh', '-c', 'id; ls'], check=True)
for probe in ['probe-mount', 'probe-ptrace_traceme']:
    subprocess.run(['/agent/' + probe])
`;

const MILLION = `import os
for i in range(1000000):
    os.close(os.open('/agent/main.py', os.O_RDONLY))
`;

type Ran = RunResult & { out: string; events: AuditEventInput[] };

const of = (r: Ran, action: string): AuditEventInput[] => r.events.filter((e) => e.action === action);

describe('runtime monitor', { timeout: 600_000 }, () => {
  let work = '';
  let code = '';
  let inputs = '';
  let outside = '';
  const support = monitorSupport();
  /** One host-wide monitor (one bpftrace) for every run of this file, as on a host. */
  const monitor = createMonitor();
  const missing = support.missing.length > 0 ? `runtime monitor unsupported here: ${support.missing.join('; ')}` : null;

  before(() => {
    work = mkdtempSync('/var/tmp/aegis-monitor-');
    chmodSync(work, 0o755);
    code = join(work, 'agent');
    inputs = join(work, 'inputs');
    mkdirSync(code);
    mkdirSync(inputs);
    chmodSync(inputs, 0o755);
    writeFileSync(join(inputs, 'in.txt'), INPUT, { mode: 0o644 });
    writeFileSync(join(code, 'main.py'), AGENT);
    writeFileSync(join(code, 'million.py'), MILLION);
    for (const name of ['mount', 'ptrace_traceme'] as const) {
      const p = DENIED_PROBES[name]!;
      writeFileSync(join(code, `probe-${name}`), syscallElf(p.nr, p.args), { mode: 0o755 });
    }
    // A host file outside every grant: the agent names it, the sandbox has no such path.
    outside = join(work, 'outside-secret.txt');
    writeFileSync(outside, 'not for the agent');
  });
  after(async () => {
    await monitor.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const run = async (
    t: { skip(msg: string): void },
    isolation: Isolation,
    entrypoint: string[],
    extra: Partial<RunSandboxOptions> = {},
  ): Promise<Ran | null> => {
    const { unavailable, rootfs } = await sandboxRequirements(isolation);
    if (!requireOrSkip(t, unavailable ?? missing)) return null;
    const out = mkdtempSync(join(work, 'out-'));
    let text = '';
    const events: AuditEventInput[] = [];
    const r = await runSandbox({
      policy: testPolicy({ entrypoint, fs: { read: ['/data/inputs'], write: ['/data/outputs'] } }),
      manifestDir: code,
      imageRootfs: rootfs,
      isolation,
      stateDir: join(work, 'state'),
      volumes: [
        { host: inputs, sandbox: '/data/inputs', mode: 'ro' },
        { host: out, sandbox: '/data/outputs', mode: 'rw', sizeBytes: 16 * 1024 * 1024 },
      ],
      stdout: (b) => void (text += b.toString()),
      stderr: (b) => void (text += b.toString()),
      audit: { append: (e) => void events.push(e) },
      monitor,
      ...extra,
    });
    return { ...r, out: text, events };
  };

  for (const isolation of ['crun', 'runc'] as const) {
    describe(`under ${isolation}`, () => {
      it('records the agent reading its input and writing its output, with fs.changes hashes', async (t) => {
        const r = await run(t, isolation, ['python3', 'main.py', outside]);
        if (!r) return;
        assert.equal(r.status, 'exited', r.out);
        assert.equal(r.exitCode, 0, r.out);
        const opens = of(r, 'fs.open').map((e) => e.payload);
        assert.ok(opens.some((p) => p['path'] === '/data/inputs/in.txt' && p['access'] === 'read' && p['result'] === 'ok'));
        assert.ok(opens.some((p) => p['path'] === '/data/outputs/out.txt' && p['access'] === 'write' && p['result'] === 'ok'));
        const changes = of(r, 'fs.changes');
        assert.equal(changes.length, 1);
        assert.deepEqual(changes[0]!.payload, {
          volumes: [
            {
              path: '/data/outputs',
              changes: [{ path: '/data/outputs/out.txt', change: 'created', size: INPUT.length, sha256: sha256(INPUT.toUpperCase()) }],
            },
          ],
        });
        // Everything the monitor says comes before the run's own closing events, and is this run's.
        for (const e of r.events) if (e.actor.execution !== undefined) assert.equal(e.actor.execution, r.executionId);
        const order = r.events.map((e) => e.action);
        assert.ok(order.indexOf('monitor.summary') < order.indexOf('run.exit'));
        assert.deepEqual(of(r, 'monitor.summary')[0]!.payload['folded'], {});
        assert.equal(of(r, 'monitor.summary')[0]!.payload['lost'], 0);
      });

      it('records the refusals: /etc/shadow, a path outside the grants, a write to the read-only code', async (t) => {
        const r = await run(t, isolation, ['python3', 'main.py', outside]);
        if (!r) return;
        assert.match(r.out, /refused \/etc\/shadow 13/);
        const opens = of(r, 'fs.open');
        const find = (path: string): AuditEventInput | undefined => opens.find((e) => e.payload['path'] === path);
        const shadow = find('/etc/shadow');
        assert.deepEqual([shadow?.decision, shadow?.payload['access'], shadow?.payload['result']], ['deny', 'read', 'EACCES']);
        assert.equal(find(outside)?.payload['result'], 'ENOENT', 'outside the grants, the path does not exist for the agent');
        const w = opens.find((e) => e.payload['path'] === '/agent/main.py' && e.payload['access'] === 'write');
        assert.equal(w?.decision, 'deny', JSON.stringify(w));
        assert.ok(['EROFS', 'EACCES'].includes(String(w.payload['result'])), String(w.payload['result']));
      });

      it("records /bin/sh -c 'id; ls' as exec events, the agent's entrypoint first", async (t) => {
        const r = await run(t, isolation, ['python3', 'main.py', outside]);
        if (!r) return;
        const execs = of(r, 'process.exec').map((e) => e.payload);
        // Attached before the agent's first instruction: its entrypoint is the first exec seen.
        assert.match(String(execs[0]?.['path']), /python3/);
        assert.deepEqual((execs[0]?.['argv'] as string[]).slice(1), ['main.py', outside]);
        const sh = execs.find((p) => p['path'] === '/bin/sh');
        assert.deepEqual(sh?.['argv'], ['/bin/sh', '-c', 'id; ls']);
        assert.equal(sh?.['uid'], 1000, 'the uid as the agent sees it');
        const id = execs.find((p) => String(p['path']).endsWith('/id'));
        const ls = execs.find((p) => String(p['path']).endsWith('/ls'));
        assert.equal(id?.['ppid'], sh?.['pid']);
        assert.equal(ls?.['ppid'], sh?.['pid']);
        const exits = of(r, 'process.exit').map((e) => e.payload['pid']);
        for (const p of [sh, id, ls]) assert.ok(exits.includes(p?.['pid']), `exit of ${String(p?.['path'])}`);
      });

      it('records mount and ptrace as refused system calls', async (t) => {
        const r = await run(t, isolation, ['python3', 'main.py', outside]);
        if (!r) return;
        const denied = of(r, 'syscall.denied');
        for (const name of ['mount', 'ptrace']) {
          const e = denied.find((d) => d.payload['syscall'] === name);
          assert.ok(e, `${name} in ${JSON.stringify(denied.map((d) => d.payload))}`);
          assert.equal(e.decision, 'deny');
          assert.equal(e.payload['errno'], 'EPERM');
        }
        assert.ok(!denied.some((d) => d.payload['syscall'] === 'clone3'), 'the ENOSYS answer to clone3 is not a refusal');
      });

      it('aggregates a million opens of one file into one event, bounded', async (t) => {
        const r = await run(t, isolation, ['python3', 'million.py']);
        if (!r) return;
        assert.equal(r.status, 'exited', r.out);
        const mine = of(r, 'fs.open').filter((e) => e.payload['path'] === '/agent/main.py');
        assert.equal(mine.length, 1);
        assert.equal(mine[0]!.payload['count'], 1_000_000);
        assert.ok(r.events.length < 500, `${r.events.length} events`);
        const summary = of(r, 'monitor.summary')[0]!.payload;
        assert.equal(summary['lost'], 0);
        assert.ok(Number(summary['opens']) >= 1_000_000, JSON.stringify(summary));
      });
    });
  }

  it('two concurrent executions never see each other’s events', async (t) => {
    const marker = (n: string): string[] => ['python3', '-c', `open('/tmp/marker-${n}', 'w').close(); import time; time.sleep(1)`];
    const [a, b] = await Promise.all([run(t, 'crun', marker('a')), run(t, 'runc', marker('b'))]);
    if (!a || !b) return;
    const paths = (r: Ran): string[] => of(r, 'fs.open').map((e) => String(e.payload['path']));
    assert.ok(paths(a).includes('/tmp/marker-a') && !paths(a).includes('/tmp/marker-b'));
    assert.ok(paths(b).includes('/tmp/marker-b') && !paths(b).includes('/tmp/marker-a'));
    const pids = (r: Ran): unknown[] => of(r, 'process.exec').map((e) => e.payload['pid']);
    assert.ok(pids(a).length > 0 && pids(b).length > 0);
    assert.ok(!pids(a).some((p) => pids(b).includes(p)));
    for (const r of [a, b]) for (const e of r.events) if (e.actor.execution !== undefined) assert.equal(e.actor.execution, r.executionId);
  });

  it('under gVisor: resource samples and fs.changes, and no host view of the agent’s calls (docs/monitoring.md)', async (t) => {
    const r = await run(t, 'gvisor', ['python3', '-c', "open('/data/outputs/g.txt', 'w').write('gvisor'); import time; time.sleep(1.5)"]);
    if (!r) return;
    assert.equal(r.status, 'exited', r.out);
    assert.deepEqual(of(r, 'fs.changes')[0]!.payload, {
      volumes: [
        { path: '/data/outputs', changes: [{ path: '/data/outputs/g.txt', change: 'created', size: 6, sha256: sha256('gvisor') }] },
      ],
    });
    assert.ok(of(r, 'resource.sample').length >= 1);
    assert.deepEqual(of(r, 'process.exec'), [], 'the Sentry runs the agent: no exec reaches the host kernel');
    assert.deepEqual(of(r, 'fs.open'), []);
  });

  describe('fail secure', () => {
    it('a monitor that cannot attach means the agent does not start', async (t) => {
      const r = await run(t, 'crun', ['python3', '-c', "open('/data/outputs/ran', 'w')"], {
        monitor: createMonitor({ bpftrace: '/bin/false' }),
      });
      if (!r) return;
      assert.equal(r.status, 'failed_to_start');
      assert.equal(r.error?.code, 'sandbox.monitor_failed');
      assert.deepEqual(of(r, 'run.spawn'), [], 'the runtime was never spawned');
      assert.deepEqual(
        r.events.map((e) => e.action),
        ['run.failed_to_start'],
      );
    });
  });

  it('aegis audit query --execution <id> shows the processes, files and refused calls of a run', async (t) => {
    const { unavailable } = await sandboxRequirements('crun');
    if (!requireOrSkip(t, unavailable ?? missing)) return;
    const home = mkdtempSync(join(work, 'home-'));
    const dir = mkdtempSync(join(work, 'cli-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'probe-mount'), syscallElf(DENIED_PROBES['mount']!.nr, DENIED_PROBES['mount']!.args), { mode: 0o755 });
    writeFileSync(
      join(dir, 'agent.yaml'),
      `version: "1.0"\nagent:\n  name: monitored\n  runtime: "python:3.11"\n  entrypoint: ["/bin/sh", "-c", "cat /etc/shadow; ./probe-mount; id"]\npermissions:\n  fs:\n    write: ["/data/outputs"]\n  execution_time: 20s\n  memory: 128MiB\n`,
    );
    const cli = (args: string[]): Promise<{ code: number | null; out: string; err: string }> =>
      new Promise((resolve) => {
        const c = spawn(process.execPath, [AEGIS_BIN, ...args], {
          stdio: ['ignore', 'pipe', 'pipe'],
          // The host monitor this run starts (state dir's monitor/) stops 1 s after it.
          env: { ...process.env, AEGIS_HOME: home, AEGIS_MONITOR: 'on', AEGIS_MONITOR_IDLE: '1s' },
        });
        let out = '';
        let err = '';
        c.stdout.on('data', (b: Buffer) => void (out += b.toString()));
        c.stderr.on('data', (b: Buffer) => void (err += b.toString()));
        c.on('close', (code) => resolve({ code, out, err }));
      });
    const summary = join(dir, 'summary.json');
    const ran = await cli(['run', join(dir, 'agent.yaml'), '--state-dir', join(work, 'state'), '--summary', summary]);
    assert.equal(existsSync(summary), true, ran.err);
    const id = (JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string }).executionId;
    const q = await cli(['audit', 'query', '--json', '--execution', id]);
    assert.equal(q.code, 0, q.err);
    const events = q.out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { event: AuditEventInput }).event);
    const actions = new Set(events.map((e) => e.action));
    for (const a of ['process.exec', 'process.exit', 'fs.open', 'syscall.denied', 'monitor.summary', 'run.exit'])
      assert.ok(actions.has(a), a);
    assert.ok(events.some((e) => e.action === 'fs.open' && e.payload['path'] === '/etc/shadow' && e.payload['result'] === 'EACCES'));
    assert.ok(events.some((e) => e.action === 'syscall.denied' && e.payload['syscall'] === 'mount'));
    const text = await cli(['audit', 'query', '--execution', id]);
    assert.match(text.out, /process\.exec/);
    assert.ok(readdirSync(home).length > 0);
    // The monitor `aegis run` started is gone once idle: nothing of it is left running.
    const lock = join(work, 'state', 'monitor', 'monitor.pid');
    const end = Date.now() + 15_000;
    while (existsSync(lock) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    assert.equal(existsSync(lock), false, 'the host monitor stopped after its idle time');
  });
});

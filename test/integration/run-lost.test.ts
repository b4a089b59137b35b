/**
 * `aegis run` killed with SIGKILL mid-run, on crun, runc and gVisor: the next `aegis run`
 * sweeps the sandbox left behind and logs `run.lost` for the lost execution, saying what it
 * removed; the log still verifies. Also checks the `run.spawn` payload (who ran what under
 * which rules) and that a live run's state is unreadable by another local user.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveImage } from '../../src/images/index.js';
import type { Isolation } from '../../src/policy/types.js';
import { MONITOR_ACTIONS } from '../../src/monitor/index.js';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { driverFor } from '../../src/sandbox/drivers/index.js';
import { UPSTREAM_DNS } from './gateway-fake-internet.js';
import { missingRequirements } from './gateway-support.js';
import { ensureHugetlbMount, requireOrSkip } from './sandbox-conformance.js';

const repo = new URL('../../..', import.meta.url).pathname;
const bin = join(repo, 'bin', 'aegis.js');

interface Ran {
  code: number | null;
  out: string;
  err: string;
}

interface LoggedEvent {
  action: string;
  decision: string;
  reason?: string;
  actor: { agent?: string; execution?: string };
  payload: Record<string, unknown>;
}

const home = mkdtempSync(join(tmpdir(), 'aegis-lost-home-'));
process.on('exit', () => rmSync(home, { recursive: true, force: true }));

function aegis(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, AEGIS_HOME: home, ...env },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => void (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

async function eventsOf(execution: string): Promise<LoggedEvent[]> {
  const q = await aegis(['audit', 'query', '--json', '--execution', execution]);
  assert.equal(q.code, 0, q.err);
  return q.out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { event: LoggedEvent }).event);
}

/** Starts `aegis run` and resolves once the agent printed "up". */
async function startUntilUp(args: string[], env: Record<string, string> = {}): Promise<ReturnType<typeof spawn>> {
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, AEGIS_HOME: home, ...env },
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => void (err += b.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start: ${err}`)), 30_000);
    child.stdout!.on('data', (b: Buffer) => {
      if (b.toString().includes('up')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

/** Runs `args` as nobody (uid/gid 65534, no groups); returns its exit status. */
function asNobody(args: string[]): number | null {
  return spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', ...args], { stdio: 'ignore' }).status;
}

describe('aegis run after a SIGKILLed aegis run: run.lost', { timeout: 300_000 }, () => {
  let work = '';
  let imageMissing: string | null = null;
  let hugetlb: string | null = null;
  before(async () => {
    try {
      ensureHugetlbMount();
    } catch (e) {
      hugetlb = `cannot mount the hugetlb hierarchy: ${(e as Error).message}`;
    }
    try {
      await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
    } catch (e) {
      imageMissing = `python:3.11 image missing: ${(e as Error).message}`;
    }
    work = mkdtempSync('/var/tmp/aegis-lost-');
    chmodSync(work, 0o755);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  for (const isolation of ['crun', 'runc', 'gvisor', 'docker'] as const satisfies readonly Isolation[]) {
    it(`${isolation}: logs run.lost with what the sweep removed, and the log verifies`, async (t) => {
      if (!requireOrSkip(t, imageMissing ?? (isolation === 'crun' ? hugetlb : null) ?? driverFor(isolation).unavailableReason())) return;
      const dir = mkdtempSync(join(work, `${isolation}-`));
      chmodSync(dir, 0o755);
      const state = join(dir, 'state');
      const inputs = join(dir, 'inputs');
      mkdirSync(inputs, { mode: 0o755 });
      const file = join(dir, 'agent.yaml');
      const agent = `lost-${isolation}`;
      writeFileSync(
        file,
        `version: "1.0"\nagent:\n  name: ${agent}\n  runtime: "python:3.11"\n  entrypoint: ["python3", "-c", "import sys, time\\nprint('up', sys.argv[1:], flush=True)\\ntime.sleep(float(sys.argv[1]))"]\npermissions:\n  fs:\n    read: ["/data/inputs"]\n  execution_time: 60s\n  memory: 128MiB\n`,
      );

      // 1. A run that AEGIS will not survive.
      const child = await startUntilUp([
        'run',
        file,
        '--isolation',
        isolation,
        '--state-dir',
        state,
        '--volume',
        `${inputs}:/data/inputs:ro`,
        '--',
        '60',
      ]);
      const [id, ...others] = readdirSync(join(state, 'runs'));
      assert.ok(id !== undefined && others.length === 0);
      const bundle = join(state, 'runs', id, 'bundle');

      // While it runs, its state is root's alone (the config holds the agent's environment).
      assert.ok(existsSync(join(bundle, 'config.json')));
      assert.notEqual(asNobody(['cat', join(bundle, 'config.json')]), 0, 'nobody reads config.json');
      assert.notEqual(asNobody(['cat', join(state, 'runs', id, 'record.json')]), 0, 'nobody reads record.json');
      assert.notEqual(asNobody(['ls', join(state, 'runs', id)]), 0, 'nobody lists the run dir');
      assert.notEqual(asNobody(['ls', join(state, 'runs')]), 0, 'nobody lists the runs');
      assert.notEqual(asNobody(['ls', join(state, isolation)]), 0, "nobody lists the runtime's state");

      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      assert.ok(runCgroupDirs(id).length > 0, 'the sandbox outlives AEGIS');

      // 2. The next aegis run sweeps it and logs what it removed.
      const next = await aegis(['run', file, '--isolation', isolation, '--state-dir', state, '--', '0']);
      assert.equal(next.code, 0, next.err);
      assert.deepEqual(runCgroupDirs(id), []);
      assert.equal(existsSync(join(state, 'runs', id)), false);

      const events = await eventsOf(id);
      assert.deepEqual(
        events.map((e) => e.action).filter((a) => !MONITOR_ACTIONS.has(a)),
        ['run.spawn', 'run.start', 'run.lost'],
      );
      const lost = events.find((e) => e.action === 'run.lost')!;
      assert.deepEqual(lost.actor, { agent, execution: id });
      assert.equal(lost.decision, 'deny');
      assert.equal(lost.reason, 'run.lost');
      assert.equal(lost.payload['isolation'], isolation);
      assert.equal(lost.payload['ownerPid'], child.pid);
      const removed = lost.payload['removed'] as {
        container: boolean;
        cgroups: string[];
        processes: number[];
        runDir: string;
        network: unknown;
      };
      assert.equal(removed.container, true);
      assert.ok(removed.cgroups.length > 0 && removed.cgroups.every((d) => d.endsWith(`/aegis/${id}`)), removed.cgroups.join(' '));
      assert.ok(removed.processes.length > 0, 'the agent was still running');
      assert.equal(removed.runDir, join(state, 'runs', id));
      assert.equal(removed.network, null);
      if (isolation === 'docker') {
        // The engine holds nothing of the lost run any more (its containers carry the run's label).
        const { engineClient } = await import('../../src/sandbox/docker/engine.js');
        const left = await engineClient().listContainers({ all: true, filters: { label: [`org.aegis.run=${id}`] } });
        assert.deepEqual(
          left.map((c) => c.Names),
          [],
        );
      }

      // 3. run.spawn says who ran what under which rules.
      const p = events[0]!.payload;
      assert.deepEqual(p['principal'], { kind: 'local', uid: process.getuid!(), gid: process.getgid!(), user: 'root' });
      assert.deepEqual(p['manifest'], { path: file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex') });
      assert.match((p['policy'] as { sha256: string }).sha256, /^[0-9a-f]{64}$/);
      const image = await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
      assert.deepEqual(p['image'], { ref: 'python:3.11', digest: image.digest });
      assert.deepEqual(p['volumes'], [{ host: realpathSync(inputs), sandbox: '/data/inputs', mode: 'ro' }]);
      assert.deepEqual((p['args'] as string[]).slice(0, 2), ['python3', '-c']);
      assert.equal((p['args'] as string[]).at(-1), '60');
      assert.equal(p['isolation'], isolation);

      const v = await aegis(['audit', 'verify']);
      assert.equal(v.code, 0, v.out + v.err);
    });
  }

  it("crun behind the egress gateway: run.lost also names the gateway's network it removed", async (t) => {
    if (
      !requireOrSkip(
        t,
        imageMissing ??
          hugetlb ??
          driverFor('crun').unavailableReason() ??
          missingRequirements(['ip', 'nft']).map((m) => `missing ${m}`)[0] ??
          null,
      )
    )
      return;
    const dir = mkdtempSync(join(work, 'net-'));
    chmodSync(dir, 0o755);
    const state = join(dir, 'state');
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `version: "1.0"\nagent:\n  name: lost-net\n  runtime: "python:3.11"\n  entrypoint: ["python3", "-c", "import sys, time\\nprint('up', flush=True)\\ntime.sleep(float(sys.argv[1]))"]\npermissions:\n  network:\n    allow: ["api.openai.com"]\n  execution_time: 60s\n  memory: 128MiB\n`,
    );
    // The gateway only forwards the agent's DNS questions there; this agent asks none.
    const env = { AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53` };
    const child = await startUntilUp(['run', file, '--state-dir', state, '--', '60'], env);
    const [id] = readdirSync(join(state, 'runs'));
    assert.ok(id !== undefined);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const next = await aegis(['run', file, '--state-dir', state, '--', '0'], env);
    assert.equal(next.code, 0, next.err);

    const events = await eventsOf(id);
    const lost = events.find((e) => e.action === 'run.lost');
    assert.ok(lost !== undefined, events.map((e) => e.action).join(' '));
    assert.deepEqual(lost.actor, { agent: 'lost-net', execution: id });
    const network = (
      lost.payload['removed'] as { network: { netns: string; hostInterface: string; hostTable: string; ownerPid: number } | null }
    ).network;
    assert.ok(network !== null, 'the network was removed and reported');
    assert.equal(network.ownerPid, child.pid);
    assert.match(network.netns, /^aegis-/);
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    assert.ok(!netns.split('\n').some((l) => l.split(' ')[0] === network.netns), `${network.netns} still exists`);
    assert.notEqual(spawnSync('nft', ['list', 'table', 'inet', network.hostTable], { stdio: 'ignore' }).status, 0, 'host table removed');
    const v = await aegis(['audit', 'verify']);
    assert.equal(v.code, 0, v.out + v.err);
  });
});

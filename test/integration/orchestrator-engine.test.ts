/**
 * The orchestrator's execution engine with real sandboxes (crun): a cold run, a warm run from a
 * pool, cancel mid-run, the timeout, 10 concurrent executions each with its own output, and a
 * shutdown with runs in progress that leaves nothing behind; then a new engine on the same state
 * dir finds nothing to recover. Every lifecycle transition is in the audit log.
 */
import assert from 'node:assert/strict';
import { useDockerEngine } from '../../src/sandbox/docker/host.js';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../src/audit/event.js';
import { openAuditLog, type AuditLog } from '../../src/audit/index.js';
import { loadConfig } from '../../src/config/index.js';
import { resolveImage } from '../../src/images/index.js';
import { createEngine, type Engine } from '../../src/orchestrator/index.js';
import type { AgentVersionRef, ExecutionObserver, ExecutionRequest, ExecutionSummary } from '../../src/orchestrator/types.js';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { UPSTREAM_DNS } from './gateway-fake-internet.js';
import { missingRequirements } from './gateway-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

/** A server process's engine, killed with SIGKILL by the test: a warm pool and a running execution, both behind the gateway. */
const CHILD = `
const [engineUrl, configUrl, auditUrl, stateDir, manifestPath, outputsDir] = process.argv.slice(2);
const { createEngine } = await import(engineUrl);
const { loadConfig } = await import(configUrl);
const { openAuditLog } = await import(auditUrl);
const config = loadConfig(process.env);
const log = await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true });
const engine = createEngine({ config, audit: log, stateDir });
const ref = { name: 'lost-net', version: 1, manifestDigest: 'sha256:l', codeDigest: 'sha256:l', manifestPath };
engine.setPool(ref, 1);
let up = false;
engine.execute(
  { executionId: 'exec-killed-' + process.pid, agent: ref, input: { args: [] }, outputsDir, principal: {} },
  { started: () => {}, stdout: () => (up = true), stderr: () => {}, audit: () => {} },
);
const timer = setInterval(() => {
  if (up && engine.pools()[0]?.warm === 1) {
    clearInterval(timer);
    process.stdout.write('ready\\n');
  }
}, 20);
`;

interface Seen {
  readonly out: Buffer[];
  readonly err: Buffer[];
  readonly audit: AuditEventInput[];
  started: { warm: boolean } | null;
}

function observer(): { seen: Seen; obs: ExecutionObserver } {
  const seen: Seen = { out: [], err: [], audit: [], started: null };
  return {
    seen,
    obs: {
      started: (i) => (seen.started = i),
      stdout: (c) => seen.out.push(c),
      stderr: (c) => seen.err.push(c),
      audit: (e) => seen.audit.push(e),
    },
  };
}

describe('orchestrator engine (real sandboxes)', { timeout: 300_000 }, () => {
  let work = '';
  let stateDir = '';
  let unavailable: string | null = null;
  let log: AuditLog | null = null;
  let engine: Engine | null = null;
  let n = 0;
  const refs: Record<string, AgentVersionRef> = {};

  /** An agent folder with its manifest; `script` is run by /bin/sh with the execution's args. */
  const agent = (name: string, script: string, extra = '', agentExtra = ''): AgentVersionRef => {
    const dir = join(work, 'agents', name);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755);
    const manifestPath = join(dir, 'agent.yaml');
    writeFileSync(
      manifestPath,
      `version: "1.0"\nagent:\n  name: ${name}\n  runtime: "python:3.11"\n  entrypoint: ["/bin/sh", "-c", ${JSON.stringify(script)}, "sh"]\n  isolation: crun\n${agentExtra}permissions:\n  fs:\n    write: ["/data/out"]\n${extra}`,
    );
    return { name, version: 1, manifestDigest: `sha256:${name}-m`, codeDigest: `sha256:${name}-c`, manifestPath };
  };
  const request = (ref: AgentVersionRef, args: string[], stdin?: string): ExecutionRequest => {
    const executionId = `exec-${process.pid}-${++n}`;
    const outputsDir = join(work, 'outputs', executionId);
    mkdirSync(outputsDir, { recursive: true });
    return { executionId, agent: ref, input: { args, ...(stdin !== undefined ? { stdin } : {}) }, outputsDir, principal: { kind: 'test' } };
  };
  const transitions = (seen: Seen): string[] =>
    seen.audit.filter((e) => e.action === 'sandbox.transition').map((e) => `${String(e.payload['from'])}->${String(e.payload['to'])}`);
  /** What a run could leave behind: its run dir, its cgroups. */
  const leftovers = (id: string): string[] => [
    ...runCgroupDirs(id).map((d) => `cgroup ${d}`),
    ...(existsSync(join(stateDir, 'runs', id)) ? [`run dir ${id}`] : []),
  ];

  before(async () => {
    unavailable = await sandboxUnavailable();
    if (unavailable === null)
      try {
        await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
      } catch (e) {
        unavailable = `python:3.11 image missing: ${(e as Error).message}`;
      }
    work = mkdtempSync('/var/tmp/aegis-orch-');
    chmodSync(work, 0o755);
    stateDir = join(work, 'state');
    const home = join(work, 'home');
    mkdirSync(home);
    const config = loadConfig({ ...process.env, AEGIS_HOME: home, AEGIS_ALERT_RULES: 'none' });
    log = await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true });
    engine = createEngine({ config, audit: log, stateDir, graceMs: 300 });
    refs['echo'] = agent('echo', 'echo "out:$1"; cat; echo "$1" > /data/out/result.txt; echo "err:$1" >&2');
    refs['sleeper'] = agent('sleeper', 'echo ready; sleep 60');
    refs['slow'] = agent('slow', 'echo ready; sleep 60', '  execution_time: 1s\n');
  });
  after(async () => {
    await engine?.shutdown();
    await log?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('recovers nothing on a clean state dir', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    assert.deepEqual(await engine!.recover(), []);
  });

  it('a cold run: output, stdin, the outputs folder, the audit events and the transitions cold -> hot -> terminated', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const { seen, obs } = observer();
    const req = request(refs['echo']!, ['one'], 'from-stdin\n');
    const s = await engine!.execute(req, obs).done;
    assert.equal(s.status, 'exited', JSON.stringify(s));
    assert.equal(s.exitCode, 0);
    assert.equal(s.warm, false);
    assert.deepEqual(seen.started, { warm: false });
    assert.equal(Buffer.concat(seen.out).toString(), 'out:one\nfrom-stdin\n');
    assert.equal(Buffer.concat(seen.err).toString(), 'err:one\n');
    assert.equal(readFileSync(join(req.outputsDir, 'data', 'out', 'result.txt'), 'utf8'), 'one\n');
    assert.deepEqual(transitions(seen), ['cold->hot', 'hot->terminated']);
    const tr = seen.audit.find((e) => e.action === 'sandbox.transition')!;
    assert.equal(tr.actor.execution, req.executionId);
    assert.deepEqual(
      [tr.payload['agent'], tr.payload['version'], tr.payload['manifestDigest'], tr.payload['codeDigest']],
      ['echo', 1, 'sha256:echo-m', 'sha256:echo-c'],
    );
    for (const a of ['run.spawn', 'run.start', 'run.exit'])
      assert.ok(
        seen.audit.some((e) => e.action === a && e.actor.execution === req.executionId),
        a,
      );
    assert.deepEqual(leftovers(req.executionId), []);
  });

  it('refuses environment additions the manifest does not allow, before any sandbox (failed_to_start, sandbox.env_refused)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const { seen, obs } = observer();
    const req = { ...request(refs['echo']!, ['x']), input: { args: ['x'], env: { HTTPS_PROXY: 'http://evil:1' } } };
    const s = await engine!.execute(req, obs).done;
    assert.equal(s.status, 'failed_to_start');
    assert.equal(s.error?.code, 'sandbox.env_refused');
    assert.equal(seen.started, null);
    assert.deepEqual(transitions(seen), []);
    assert.ok(seen.audit.some((e) => e.action === 'run.failed_to_start' && e.reason === 'sandbox.env_refused'));
  });

  it('a warm run from a pool: the pool refills, the warm sandbox is used once (cold -> warm -> hot -> terminated)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const ref = refs['echo']!;
    engine!.setPool(ref, 1);
    const waitWarm = async (): Promise<void> => {
      for (let i = 0; i < 200 && engine!.pools().find((p) => p.agent === 'echo')?.warm !== 1; i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(engine!.pools(), [{ agent: 'echo', version: 1, target: 1, warm: 1, preparing: 0 }]);
    };
    await waitWarm();
    const { seen, obs } = observer();
    const req = request(ref, ['two']);
    const s = await engine!.execute(req, obs).done;
    assert.equal(s.status, 'exited', JSON.stringify(s));
    assert.equal(s.warm, true);
    assert.deepEqual(seen.started, { warm: true });
    assert.equal(Buffer.concat(seen.out).toString(), 'out:two\n');
    assert.equal(readFileSync(join(req.outputsDir, 'data', 'out', 'result.txt'), 'utf8'), 'two\n');
    assert.deepEqual(transitions(seen), ['warm->hot', 'hot->terminated']);
    // Every event the execution saw carries the execution's id, also those of its services.
    assert.deepEqual(
      seen.audit.filter((e) => e.actor.execution !== req.executionId).map((e) => e.action),
      [],
    );
    await waitWarm(); // refilled in the background after the claim
    engine!.setPool(ref, 0);
    assert.deepEqual(engine!.pools(), []);
  });

  it('a warm execution (container created ahead, the shim) sees exactly the argv, environment and stdin a cold one sees', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const ref = agent('probe', 'env | sort; printf "[%s]" "$@"; echo; cat', '', '  env:\n    FROM_MANIFEST: "m v"\n');
    const hostile = ["it's", '$(id)', '`id`', 'two\nlines', 'back\\slash', ''];
    const input = { args: hostile, env: { EXTRA: "x'y\nz", FROM_MANIFEST: 'overridden' }, stdin: 'line one\nline two\n' };
    const once = async (): Promise<{ out: string; warm: boolean }> => {
      const { seen, obs } = observer();
      const req = { ...request(ref, []), input };
      const s = await engine!.execute(req, obs).done;
      assert.equal(s.status, 'exited', JSON.stringify(s));
      return { out: Buffer.concat(seen.out).toString(), warm: s.warm };
    };
    const cold = await once();
    assert.equal(cold.warm, false);
    engine!.setPool(ref, 1);
    for (let i = 0; i < 200 && engine!.pools().find((p) => p.agent === 'probe')?.warm !== 1; i++)
      await new Promise((r) => setTimeout(r, 50));
    const warm = await once();
    engine!.setPool(ref, 0);
    assert.equal(warm.warm, true);
    assert.equal(warm.out, cold.out);
    assert.ok(cold.out.includes(`[it's][$(id)][\`id\`][two\nlines][back\\slash][]\nline one\nline two\n`), cold.out);
    assert.ok(cold.out.includes("EXTRA=x'y\n") && cold.out.includes('\nz\n') && cold.out.includes('FROM_MANIFEST=overridden\n'), cold.out);
  });

  // The engine local, and the same engine used as a remote one (only its API: Docker Desktop's case).
  for (const mode of ['auto', 'remote'] as const)
    it(`docker (${mode} engine): a warm sandbox is a container prepared in the engine ahead, and runs as a cold one does`, async (t) => {
      if (!requireOrSkip(t, unavailable ?? (await sandboxUnavailable('docker')))) return;
      useDockerEngine(mode);
      t.after(() => useDockerEngine('auto'));
      const name = `dockerprobe-${mode}`;
      const ref = agent(name, 'printf "[%s]" "$@"; echo; echo "env:$EXTRA"; cat');
      writeFileSync(ref.manifestPath, readFileSync(ref.manifestPath, 'utf8').replace('isolation: crun', 'isolation: docker'));
      const input = { args: ["it's", '$(id)'], env: { EXTRA: 'e x' }, stdin: 'in\n' };
      const once = async (): Promise<{ out: string; warm: boolean; id: string }> => {
        const { seen, obs } = observer();
        const s = await engine!.execute({ ...request(ref, []), input }, obs).done;
        assert.equal(s.status, 'exited', JSON.stringify(s) + Buffer.concat(seen.err).toString());
        const spawn = seen.audit.find((e) => e.action === 'run.spawn');
        assert.equal(spawn?.payload['isolation'], 'docker');
        return { out: Buffer.concat(seen.out).toString(), warm: s.warm, id: String(spawn?.actor.execution) };
      };
      const cold = await once();
      assert.equal(cold.warm, false);
      const { engineClient } = await import('../../src/sandbox/docker/engine.js');
      const agents = async (): Promise<string[]> =>
        (await engineClient().listContainers({ all: true, filters: { label: ['org.aegis.role=agent'] } })).map(
          (c) => c.Labels['org.aegis.run'] ?? '',
        );
      const before = await agents();
      engine!.setPool(ref, 1);
      for (let i = 0; i < 400 && engine!.pools().find((p) => p.agent === name)?.warm !== 1; i++)
        await new Promise((r) => setTimeout(r, 50));
      const prepared = (await agents()).filter((id) => !before.includes(id));
      assert.equal(prepared.length, 1, 'the warm sandbox is a container in the engine before any execution claims it');
      // Remote: its code reached the engine as a volume, through a keeper container of the run.
      const keepers = await engineClient().listContainers({ all: true, filters: { label: ['org.aegis.role=keeper'] } });
      assert.equal(keepers.filter((c) => prepared.includes(c.Labels['org.aegis.run'] ?? '')).length, mode === 'remote' ? 1 : 0);
      const warm = await once();
      engine!.setPool(ref, 0);
      assert.equal(warm.warm, true);
      assert.equal(warm.out, cold.out);
      assert.equal(cold.out, "[it's][$(id)]\nenv:e x\nin\n");
      for (let i = 0; i < 100 && (await agents()).some((id) => prepared.includes(id)); i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(
        (await agents()).filter((id) => prepared.includes(id) || id === cold.id),
        [],
        'nothing of the runs is left in the engine',
      );
    });

  it('cancel mid-run: TERM, grace, KILL, recorded killed; nothing left', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const { seen, obs } = observer();
    const req = request(refs['sleeper']!, []);
    const run = engine!.execute(req, { ...obs, stdout: (c) => (obs.stdout(c), run.cancel()) });
    const s = await run.done;
    assert.equal(s.status, 'killed', JSON.stringify(s));
    assert.equal(s.exitCode, 137);
    run.cancel(); // idempotent
    assert.equal(Buffer.concat(seen.out).toString(), 'ready\n');
    assert.deepEqual(leftovers(req.executionId), []);
  });

  it("the manifest's timeout ends the run with status timeout", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const { obs } = observer();
    const s = await engine!.execute(request(refs['slow']!, []), obs).done;
    assert.equal(s.status, 'timeout', JSON.stringify(s));
    assert.equal(s.exitCode, 137);
  });

  it('10 concurrent executions each finish with their own output', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const runs = Array.from({ length: 10 }, (_, i) => {
      const { seen, obs } = observer();
      const req = request(refs['echo']!, [`c${i}`], `in${i}\n`);
      return { i, req, seen, done: engine!.execute(req, obs).done };
    });
    const summaries: ExecutionSummary[] = await Promise.all(runs.map((r) => r.done));
    for (const r of runs) {
      assert.equal(summaries[r.i]!.status, 'exited', JSON.stringify(summaries[r.i]));
      assert.equal(summaries[r.i]!.executionId, r.req.executionId);
      assert.equal(Buffer.concat(r.seen.out).toString(), `out:c${r.i}\nin${r.i}\n`);
      assert.equal(readFileSync(join(r.req.outputsDir, 'data', 'out', 'result.txt'), 'utf8'), `c${r.i}\n`);
      assert.deepEqual(leftovers(r.req.executionId), []);
    }
    assert.equal(engine!.metrics().running, 0);
  });

  it('shutdown with runs in progress and a warm pool: runs killed, warm sandboxes destroyed, nothing left; a new engine recovers nothing', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    engine!.setPool(refs['sleeper']!, 2);
    const runs = [0, 1, 2].map(() => {
      const { seen, obs } = observer();
      const req = request(refs['sleeper']!, []);
      return { req, seen, started: new Promise<void>((r) => (obs.stdout = () => r())), run: engine!.execute(req, obs) };
    });
    await Promise.all(runs.map((r) => r.started));
    await engine!.shutdown();
    for (const r of runs) {
      const s = await r.run.done;
      assert.equal(s.status, 'killed', JSON.stringify(s));
      assert.deepEqual(leftovers(r.req.executionId), []);
    }
    assert.deepEqual(engine!.pools(), []);
    assert.deepEqual(readdirSync(join(stateDir, 'runs')), []);
    // After shutdown no execution starts.
    const { obs } = observer();
    const late = await engine!.execute(request(refs['echo']!, ['late']), obs).done;
    assert.equal(late.error?.code, 'orchestrator.shutting_down');
    // The gateway's network state of this test: none of its netns is left (they are named after runs).
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    for (const r of runs) assert.ok(!netns.includes(r.req.executionId));
    const config = loadConfig({ ...process.env, AEGIS_HOME: join(work, 'home'), AEGIS_ALERT_RULES: 'none' });
    const again = createEngine({ config, audit: { append: () => undefined }, stateDir });
    assert.deepEqual(await again.recover(), []);
    await again.shutdown();
  });

  it('the host budget: a cold start destroys a warm sandbox to make room; with no warm one left it fails (orchestrator.budget_exhausted)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const events: AuditEventInput[] = [];
    const config = loadConfig({ ...process.env, AEGIS_HOME: join(work, 'home'), AEGIS_ALERT_RULES: 'none' });
    const small = createEngine({ config, audit: { append: (e) => void events.push(e) }, stateDir, maxSandboxes: 2, graceMs: 300 });
    try {
      small.setPool(refs['sleeper']!, 5); // capped by the budget: 2
      for (let i = 0; i < 200 && small.pools()[0]?.warm !== 2; i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(small.pools(), [{ agent: 'sleeper', version: 1, target: 2, warm: 2, preparing: 0 }]);
      const first = observer();
      const hot = small.execute(request(refs['sleeper']!, []), { ...first.obs, stdout: () => undefined }); // a warm one: no eviction
      const second = observer();
      const cold = await small.execute(request(refs['echo']!, ['b']), second.obs).done; // evicts the other warm one
      assert.equal(cold.status, 'exited', JSON.stringify(cold));
      assert.equal(cold.warm, false);
      const destroyed = events.filter((e) => e.action === 'sandbox.transition' && e.payload['event'] === 'destroy');
      assert.equal(destroyed.length, 1);
      assert.deepEqual([destroyed[0]!.payload['from'], destroyed[0]!.payload['to']], ['warm', 'terminated']);
      // One hot sandbox (the sleeper) and, after the refill, one warm one: full. A cold start
      // evicts the warm one; two hot ones leave no room for a third.
      let thirdUp: () => void = () => undefined;
      const thirdStarted = new Promise<void>((r) => (thirdUp = r));
      const third = small.execute(request(refs['sleeper']!, []), { ...observer().obs, stdout: () => thirdUp() });
      await thirdStarted;
      const { seen, obs } = observer();
      const refused = await small.execute(request(refs['echo']!, ['c']), obs).done;
      assert.equal(refused.status, 'failed_to_start', JSON.stringify(refused));
      assert.equal(refused.error?.code, 'orchestrator.budget_exhausted');
      const denied = seen.audit.find((e) => e.action === 'sandbox.transition');
      assert.equal(denied?.decision, 'deny');
      assert.equal(denied?.reason, 'orchestrator.invalid_transition');
      hot.cancel();
      third.cancel();
      assert.equal((await hot.done).status, 'killed');
      assert.equal((await third.done).status, 'killed');
    } finally {
      await small.shutdown();
    }
  });

  it('after SIGKILL of the engine, a new engine sweeps its running and warm sandboxes (netns, veth, nft table) and returns the lost execution', async (t) => {
    const missing = missingRequirements(['ip', 'nft']).map((m) => `missing ${m}`)[0] ?? null;
    if (!requireOrSkip(t, unavailable ?? missing)) return;
    const dir = join(work, 'killed');
    mkdirSync(join(dir, 'agent'), { recursive: true });
    mkdirSync(join(dir, 'out'));
    mkdirSync(join(dir, 'home')); // the child's own audit log (this process holds the other one)
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'agent'), 0o755);
    const manifestPath = join(dir, 'agent', 'agent.yaml');
    writeFileSync(
      manifestPath,
      'version: "1.0"\nagent:\n  name: lost-net\n  runtime: "python:3.11"\n  entrypoint: ["/bin/sh", "-c", "echo up; sleep 60"]\n  isolation: crun\npermissions:\n  network:\n    allow: ["api.openai.com"]\n',
    );
    const script = join(dir, 'child.mjs');
    writeFileSync(script, CHILD);
    const url = (p: string): string => new URL(p, import.meta.url).href;
    // The gateway only forwards the agent's DNS questions there; this agent asks none.
    const env = { ...process.env, AEGIS_HOME: join(dir, 'home'), AEGIS_ALERT_RULES: 'none', AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53` };
    const stateKilled = join(dir, 'state');
    const child = spawn(
      process.execPath,
      [
        script,
        url('../../src/orchestrator/index.js'),
        url('../../src/config/index.js'),
        url('../../src/audit/index.js'),
        stateKilled,
        manifestPath,
        join(dir, 'out'),
      ],
      { env, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the engine process was not ready within 60 s')), 60_000);
        child.stdout.on('data', (c: Buffer) => {
          if (String(c).includes('ready')) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', (code) => reject(new Error(`the engine process exited (${code}) before it was ready`)));
      });
    } finally {
      child.kill('SIGKILL'); // the engine dies without any cleanup of its own
    }
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));

    const logged: AuditEventInput[] = [];
    const next = createEngine({ config: loadConfig(env), audit: { append: (e) => void logged.push(e) }, stateDir: stateKilled });
    const lost = await next.recover();
    await next.shutdown();
    assert.deepEqual(
      lost.filter((l) => l.executionId.startsWith('exec-')),
      [{ executionId: `exec-killed-${child.pid}`, agent: 'lost-net' }],
    );
    const nets = logged
      .filter((e) => e.action === 'run.lost')
      .map((e) => (e.payload['removed'] as { network: { netns: string; hostTable: string } | null }).network)
      .filter((n) => n !== null);
    assert.equal(nets.length, 2, 'the running and the warm sandbox had a network each: ' + JSON.stringify(logged));
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .stdout.split('\n')
      .map((l) => l.split(' ')[0]);
    for (const n of nets) {
      assert.ok(!netns.includes(n!.netns), `${n!.netns} still exists`);
      assert.notEqual(spawnSync('nft', ['list', 'table', 'inet', n!.hostTable], { stdio: 'ignore' }).status, 0, 'host table removed');
    }
    assert.deepEqual(readdirSync(join(stateKilled, 'runs')), []);
    assert.deepEqual(leftovers(`exec-killed-${child.pid}`), []);
    // No process of the killed engine's sandboxes is left (holders, runtimes, shims run from its state dir or in its sandboxes).
    const left = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(stateKilled);
        } catch {
          return false;
        }
      });
    assert.deepEqual(left, []);
  });
});

/**
 * The dispatcher against a real SQLite store, the real upload extractor and a scripted engine
 * (the engine is not under test here: test/integration/server-cluster.test.ts runs the real one).
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import type { AuditEventInput } from '../audit/event.js';
import type {
  AgentVersionRef,
  EngineMetrics,
  ExecutionEngine,
  ExecutionObserver,
  ExecutionRequest,
  ExecutionSummary,
  PoolStatus,
  RunningExecution,
} from '../orchestrator/types.js';
import { Dispatcher, type ExitData } from './dispatcher.js';
import { openSqliteStore } from './store/sqlite.js';
import type { OutputChunk, Store } from './store/types.js';
import { extractCodeArchive } from './upload/extract.js';

async function tgz(files: Record<string, string>): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const [name, data] of Object.entries(files)) {
    await new Promise<void>((resolve, reject) => {
      p.entry({ name, size: Buffer.byteLength(data), mode: 0o644 }, data, (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await done;
  return gzipSync(Buffer.concat(chunks));
}

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Plays an agent: reads its manifest, writes a file into the outputs folder, prints its args on
 * stdout (splitting a UTF-8 character across two chunks), a line on stderr, one audit event, and
 * exits 0; `hang` waits for cancel (killed), `fail` exits 3.
 */
class ScriptedEngine implements ExecutionEngine {
  readonly requests: ExecutionRequest[] = [];
  readonly pooled: { agent: string; version: number; warm: number }[] = [];
  active = 0;
  maxActive = 0;

  execute(req: ExecutionRequest, obs: ExecutionObserver): RunningExecution {
    this.requests.push(req);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    let cancel!: () => void;
    const cancelled = new Promise<void>((resolve) => (cancel = resolve));
    const done = (async (): Promise<ExecutionSummary> => {
      const base = { executionId: req.executionId, durationMs: 5, cpuMs: 1, maxMemoryBytes: 1024, warm: false };
      try {
        const manifest = await readFile(req.agent.manifestPath, 'utf8');
        await writeFile(join(req.outputsDir, 'out.txt'), `${req.executionId}\n`);
        obs.started({ warm: false });
        const text = Buffer.from(`${req.input.args.join(' ')} é\n`);
        obs.stdout(text.subarray(0, text.length - 2));
        obs.stdout(text.subarray(text.length - 2));
        obs.stderr(Buffer.from(`manifest ${manifest.length} bytes\n`));
        obs.audit({ actor: { execution: req.executionId }, action: 'run.start', decision: 'allow', payload: {} });
        if (req.input.args[0] === 'hang') {
          await cancelled;
          return { ...base, status: 'killed', exitCode: 137 };
        }
        await new Promise((r) => setTimeout(r, 20));
        return req.input.args[0] === 'fail' ? { ...base, status: 'exited', exitCode: 3 } : { ...base, status: 'exited', exitCode: 0 };
      } finally {
        this.active--;
      }
    })();
    return { executionId: req.executionId, cancel: () => cancel(), done };
  }
  setPool(agent: AgentVersionRef, warm: number): void {
    this.pooled.push({ agent: agent.name, version: agent.version, warm });
  }
  pools(): PoolStatus[] {
    return [];
  }
  metrics(): EngineMetrics {
    return { startLatency: { warm: [], cold: [] }, running: this.active };
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

class Collector {
  readonly events: AuditEventInput[] = [];
  append(e: AuditEventInput): void {
    this.events.push(e);
  }
}

interface Setup {
  dir: string;
  data: string;
  store: Store;
  engine: ScriptedEngine;
  audit: Collector;
  extractions: string[];
  dispatcher: (o?: { capacity?: number; workerId?: string; store?: Store; retentionMs?: number; now?: () => number }) => Dispatcher;
  deploy: (name: string, files: Record<string, string>, manifest?: string) => Promise<{ version: number }>;
}

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function setup(): Promise<Setup> {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-dispatch-'));
  const data = join(dir, 'data');
  const store = await openSqliteStore(join(data, 'aegis.db'));
  const engine = new ScriptedEngine();
  const audit = new Collector();
  const extractions: string[] = [];
  const dispatchers: Dispatcher[] = [];
  cleanups.push(async () => {
    for (const d of dispatchers) await d.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    dir,
    data,
    store,
    engine,
    audit,
    extractions,
    dispatcher: (o = {}) => {
      const d = new Dispatcher({
        store: o.store ?? store,
        engine,
        workerId: o.workerId ?? 'w1',
        dataDir: data,
        capacity: o.capacity ?? 4,
        audit,
        pollMs: 20,
        heartbeatMs: 50,
        staleMs: 500,
        flushMs: 5,
        ...(o.retentionMs === undefined ? {} : { retentionMs: o.retentionMs }),
        ...(o.now === undefined ? {} : { now: o.now }),
        extract: (archive, dest) => {
          extractions.push(dest);
          return extractCodeArchive(archive, dest);
        },
      });
      dispatchers.push(d);
      return d;
    },
    deploy: async (name, files, manifest = `version: "1.0"\nagent:\n  name: ${name}\n`) => {
      const codeArchive = await tgz(files);
      return store.putAgentVersion({
        name,
        manifestText: manifest,
        manifestDigest: sha(manifest),
        codeArchive,
        codeDigest: sha(codeArchive),
        createdAt: 1,
        createdBy: 'ak_t',
      });
    },
  };
}

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function ended(store: Store, id: string): Promise<void> {
  await waitFor(`${id} to end`, async () => {
    const r = await store.getExecution(id);
    return r !== null && !['queued', 'running'].includes(r.status);
  });
}

async function collect(it: AsyncIterable<OutputChunk>): Promise<OutputChunk[]> {
  const out: OutputChunk[] = [];
  for await (const c of it) out.push(c);
  return out;
}

const exec = (id: string, agent: string, version: number, args: string[] = []) => ({
  id,
  agent,
  version,
  args,
  stdin: null,
  env: {},
  createdAt: 1,
  createdBy: 'ak_t',
});

describe('Dispatcher', () => {
  it('runs a queued execution: output, audit and exit stored in order, record finished, outputs folder made', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': 'print(1)\n' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['hello', 'world']));
    const d = s.dispatcher();
    await d.start();
    d.kick();
    await ended(s.store, 'ex-1');
    const rec = await s.store.getExecution('ex-1');
    assert.equal(rec?.status, 'exited');
    assert.equal(rec?.exitCode, 0);
    assert.equal(rec?.worker, 'w1');
    assert.equal(rec?.summary?.['cpuMs'], 1);
    const out = await collect(d.follow('ex-1'));
    const text = (k: string): string =>
      out
        .filter((c) => c.kind === k)
        .map((c) => c.data)
        .join('');
    assert.equal(text('stdout'), 'hello world é\n', 'a UTF-8 character split across chunks arrives whole');
    assert.match(text('stderr'), /^manifest \d+ bytes\n$/u);
    assert.equal((JSON.parse(text('audit')) as { action: string }).action, 'run.start');
    const exit = out.at(-1);
    assert.equal(exit?.kind, 'exit');
    assert.equal(exit.seq, out.length);
    assert.deepEqual(JSON.parse(exit.data), rec?.summary, 'the exit chunk carries the summary');
    assert.deepEqual(
      out.map((c) => c.seq),
      out.map((_, i) => i + 1),
    );
    assert.equal(await readFile(join(s.data, 'outputs', 'ex-1', 'out.txt'), 'utf8'), 'ex-1\n');
    const req = s.engine.requests[0];
    assert.equal(req?.outputsDir, join(s.data, 'outputs', 'ex-1'));
    assert.deepEqual(req?.input.args, ['hello', 'world']);
  });

  it('extracts code once per code digest and writes each version manifest beside it', async () => {
    const s = await setup();
    const files = { 'main.py': 'print(2)\n', 'lib/util.py': 'x = 1\n' };
    await s.deploy('a', files, 'version: "1.0"\nagent:\n  name: a\n');
    await s.deploy('a', files, 'version: "1.0"\nagent:\n  name: a\n# v2\n');
    await s.deploy('b', files, 'version: "1.0"\nagent:\n  name: b\n');
    for (const [id, agent, v] of [
      ['ex-1', 'a', 1],
      ['ex-2', 'a', 2],
      ['ex-3', 'b', 1],
    ] as const)
      await s.store.createExecution(exec(id, agent, v));
    const d = s.dispatcher();
    await d.start();
    for (const id of ['ex-1', 'ex-2', 'ex-3']) await ended(s.store, id);
    assert.equal(s.extractions.length, 1);
    const paths = new Set(s.engine.requests.map((r) => r.agent.manifestPath));
    assert.equal(paths.size, 3, 'one manifest file per manifest digest');
    for (const r of s.engine.requests) {
      const codeDir = join(r.agent.manifestPath, '..');
      assert.equal(await readFile(join(codeDir, 'lib', 'util.py'), 'utf8'), 'x = 1\n');
      assert.equal(sha(await readFile(r.agent.manifestPath)), r.agent.manifestDigest);
    }
  });

  it('runs at most `capacity` executions at once and drains the queue', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    for (let i = 0; i < 7; i++) await s.store.createExecution(exec(`ex-${i}`, 'echo', 1, [`n${i}`]));
    const d = s.dispatcher({ capacity: 2 });
    await d.start();
    for (let i = 0; i < 7; i++) await ended(s.store, `ex-${i}`);
    assert.equal(s.engine.maxActive, 2);
    assert.equal(s.engine.requests.length, 7);
  });

  it('cancels a running execution on a cancel request (ends killed), and never starts one cancelled while queued', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['hang']));
    await s.store.createExecution(exec('ex-2', 'echo', 1, ['x']));
    await s.store.requestCancel('ex-2');
    const d = s.dispatcher();
    await d.start();
    await waitFor('ex-1 to run', () => Promise.resolve(d.isLocal('ex-1') && s.engine.active === 1));
    await ended(s.store, 'ex-2');
    assert.equal((await s.store.getExecution('ex-2'))?.status, 'killed');
    assert.deepEqual(
      s.engine.requests.map((r) => r.executionId),
      ['ex-1'],
      'the cancelled queued execution never reached the engine',
    );
    await s.store.requestCancel('ex-1');
    await ended(s.store, 'ex-1');
    assert.equal((await s.store.getExecution('ex-1'))?.status, 'killed');
    const last = (await s.store.readOutput('ex-1', 0, 100)).at(-1);
    assert.equal(last?.kind, 'exit');
    assert.equal((JSON.parse(last?.data ?? '{}') as ExitData).status, 'killed');
  });

  it('ends an execution whose code cannot be materialised failed_to_start, without the engine', async () => {
    const s = await setup();
    const notGzip = Buffer.from('not a tar.gz');
    const manifest = 'version: "1.0"\n';
    await s.store.putAgentVersion({
      name: 'bad',
      manifestText: manifest,
      manifestDigest: sha(manifest),
      codeArchive: notGzip,
      codeDigest: sha(notGzip),
      createdAt: 1,
      createdBy: 'ak_t',
    });
    await s.store.createExecution(exec('ex-1', 'bad', 1));
    const d = s.dispatcher();
    await d.start();
    await ended(s.store, 'ex-1');
    const rec = await s.store.getExecution('ex-1');
    assert.equal(rec?.status, 'failed_to_start');
    assert.deepEqual((rec?.summary?.['error'] as { code: string }).code, 'upload.not_gzip');
    assert.equal(s.engine.requests.length, 0);
    assert.equal((await s.store.readOutput('ex-1', 0, 10)).at(-1)?.kind, 'exit');
  });

  it("records a dead worker's running executions lost (once, audited with digests) and its own leftovers at start", async () => {
    const s = await setup();
    const v = await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-dead', 'echo', 1));
    await s.store.createExecution(exec('ex-mine', 'echo', 1));
    await s.store.heartbeat('w-dead', Date.now() - 60_000);
    await s.store.claimQueued('w-dead', 1, Date.now());
    await s.store.heartbeat('w1', Date.now());
    await s.store.claimQueued('w1', 1, Date.now()); // a previous process of w1, killed
    const d = s.dispatcher();
    await d.start();
    await waitFor('both lost', async () => (await s.store.listExecutions({ status: 'lost' })).length === 2);
    const lost = s.audit.events.filter((e) => e.action === 'execution.lost');
    assert.deepEqual(lost.map((e) => [e.actor.execution, e.reason]).sort(), [
      ['ex-dead', 'worker_dead'],
      ['ex-mine', 'worker_restarted'],
    ]);
    const agentV = await s.store.getAgentVersion('echo', v.version);
    for (const e of lost) {
      assert.equal(e.payload['manifestDigest'], agentV?.manifestDigest);
      assert.equal(e.payload['codeDigest'], agentV?.codeDigest);
    }
    const out = await collect(d.follow('ex-dead'));
    assert.deepEqual(
      out.map((c) => [c.kind, c.data]),
      [['exit', JSON.stringify({ executionId: 'ex-dead', status: 'lost', exitCode: null, durationMs: null })]],
    );
    await new Promise((r) => setTimeout(r, 150)); // a few more housekeeping rounds
    assert.equal(s.audit.events.filter((e) => e.action === 'execution.lost').length, 2, 'audited once');
  });

  it('feeds a local execution to a follower as it runs, then its exit', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['hang']));
    const d = s.dispatcher();
    await d.start();
    await waitFor('ex-1 to run', () => Promise.resolve(d.isLocal('ex-1') && s.engine.active === 1));
    const seen: OutputChunk[] = [];
    const iter = d.follow('ex-1')[Symbol.asyncIterator]();
    // Live: the stdout arrives while the execution still runs.
    for (;;) {
      const n = await iter.next();
      if (n.done === true) assert.fail('the feed ended before the execution did');
      seen.push(n.value);
      if (
        n.value.kind === 'stdout' &&
        seen
          .map((c) => c.data)
          .join('')
          .includes('\n')
      )
        break;
    }
    assert.equal(d.isLocal('ex-1'), true);
    assert.equal((await s.store.getExecution('ex-1'))?.status, 'running');
    assert.equal(d.cancel('ex-1'), true);
    for (;;) {
      const n = await iter.next();
      if (n.done === true) break;
      seen.push(n.value);
    }
    assert.equal(seen.at(-1)?.kind, 'exit');
    assert.deepEqual(
      seen.map((c) => c.seq),
      seen.map((_, i) => i + 1),
      'nothing missed, nothing twice',
    );
    assert.equal((await s.store.getExecution('ex-1'))?.status, 'killed');
  });

  it('stop() cancels what runs and records each end before it resolves', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['hang']));
    const d = s.dispatcher();
    await d.start();
    await waitFor('ex-1 to run', () => Promise.resolve(s.engine.active === 1));
    await d.stop();
    const rec = await s.store.getExecution('ex-1');
    assert.equal(rec?.status, 'killed');
    assert.equal((await s.store.readOutput('ex-1', 0, 100)).at(-1)?.kind, 'exit');
    await s.store.createExecution(exec('ex-2', 'echo', 1));
    d.kick();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await s.store.getExecution('ex-2'))?.status, 'queued', 'a stopped dispatcher claims nothing');
  });

  it('cancels everything it runs once it could not heartbeat for staleMs (fail secure)', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['hang']));
    let cut = false;
    // The database as this worker sees it: heartbeats stop reaching it once `cut`.
    const partitioned: Store = Object.create(s.store) as Store;
    partitioned.heartbeat = (w, at) => (cut ? Promise.reject(new Error('connection refused')) : s.store.heartbeat(w, at));
    const d = s.dispatcher({ store: partitioned });
    await d.start();
    await waitFor('ex-1 to run', () => Promise.resolve(s.engine.active === 1));
    cut = true;
    await ended(s.store, 'ex-1');
    assert.equal((await s.store.getExecution('ex-1'))?.status, 'killed');
  });

  it('cancels its executions that another worker recorded lost while it was stalled', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['hang']));
    let skew = 0;
    const d = s.dispatcher({ now: () => Date.now() + skew });
    await d.start();
    await waitFor('ex-1 to run', () => Promise.resolve(s.engine.active === 1));
    // Another worker takes this one for dead (its clock is past our staleness) and reaps ex-1.
    const reaped = await s.store.reapLost(Date.now() + 60_000, Date.now());
    assert.deepEqual(
      reaped.map((e) => e.id),
      ['ex-1'],
    );
    // Our next heartbeat comes after a gap longer than staleMs (500 ms here): a stall.
    skew = 10_000;
    await waitFor('ex-1 to be cancelled', () => Promise.resolve(s.engine.active === 0));
    await waitFor('ex-1 to leave the worker', () => Promise.resolve(!d.isLocal('ex-1')));
    const rec = await s.store.getExecution('ex-1');
    assert.equal(rec?.status, 'lost', "the reaper's end stands");
    const exit = (await s.store.readOutput('ex-1', 0, 100)).filter((c) => c.kind === 'exit');
    assert.deepEqual(exit, [], "the exit chunk is the reaper's to write, not a second one from this worker");
  });

  it("follows another worker's execution by polling the store until its exit", async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-1', 'echo', 1, ['far', 'away']));
    const other = await openSqliteStore(join(s.data, 'aegis.db'));
    cleanups.push(() => other.close());
    const watcher = s.dispatcher({ workerId: 'w-watch', capacity: 1 });
    // The watcher never runs it (not started): the follow goes through the store.
    const following = collect(watcher.follow('ex-1'));
    const runner = s.dispatcher({ workerId: 'w-run', store: other });
    await runner.start();
    const out = await following;
    assert.equal(out.at(-1)?.kind, 'exit');
    assert.equal(
      out
        .filter((c) => c.kind === 'stdout')
        .map((c) => c.data)
        .join(''),
      'far away é\n',
    );
  });

  it('removes outputs folders past retention, keeps recent ones, and unknown ones go', async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.createExecution(exec('ex-old', 'echo', 1));
    await s.store.createExecution(exec('ex-new', 'echo', 1));
    await s.store.finishExecution('ex-old', { status: 'exited', exitCode: 0, durationMs: 1, summary: null, at: 1000 });
    await s.store.finishExecution('ex-new', { status: 'exited', exitCode: 0, durationMs: 1, summary: null, at: 9000 });
    for (const n of ['ex-old', 'ex-new', 'ex-unknown']) await mkdir(join(s.data, 'outputs', n), { recursive: true });
    const d = s.dispatcher({ retentionMs: 5000, now: () => 10_000 });
    assert.equal(await d.applyRetention(), 2);
    assert.deepEqual(await readdir(join(s.data, 'outputs')), ['ex-new']);
    assert.equal(existsSync(join(s.data, 'outputs', 'ex-old')), false);
  });

  it("keeps the engine's warm pools in step with the store's pool table", async () => {
    const s = await setup();
    await s.deploy('echo', { 'main.py': '' });
    await s.store.setPool('echo', 2);
    const d = s.dispatcher();
    await d.syncPools();
    await s.deploy('echo', { 'main.py': 'v2' });
    await d.syncPools();
    await s.store.setPool('echo', 0);
    await d.syncPools();
    assert.deepEqual(s.engine.pooled, [
      { agent: 'echo', version: 1, warm: 2 },
      { agent: 'echo', version: 1, warm: 0 },
      { agent: 'echo', version: 2, warm: 2 },
      { agent: 'echo', version: 2, warm: 0 },
    ]);
  });
});

/**
 * Two workers on one PostgreSQL (issue 11, scale-out): two processes, each a Dispatcher with the
 * real engine (crun sandboxes) and its own data and state folders, share one queue and one audit
 * log (both on PostgreSQL). Executions spread over both; one worker is SIGKILLed mid-run and the
 * other records its execution `lost` (audited `execution.lost`); the killed worker restarts,
 * sweeps its orphaned sandbox and works again; `aegis audit verify` accepts the one log.
 * In CI (CI=true) a missing PostgreSQL server or sandbox requirement is a failure, never a skip.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import tar from 'tar-stream';
import { openAuditLog } from '../../src/audit/index.js';
import { loadConfig } from '../../src/config/index.js';
import { resolveImage } from '../../src/images/index.js';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { dropPostgresSchema, openPostgresStore } from '../../src/server/store/postgres.js';
import type { ExecutionRecord, Store } from '../../src/server/store/types.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import type { WorkerSettings } from './server-cluster-worker.js';

const pgUrl = process.env['AEGIS_TEST_PG_URL'] ?? '';
const inCi = process.env['CI'] === 'true';
const WORKER_MAIN = fileURLToPath(new URL('./server-cluster-worker.js', import.meta.url));

async function tgz(files: Record<string, string>): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const [name, data] of Object.entries(files))
    await new Promise<void>((resolve, reject) =>
      p.entry({ name, size: Buffer.byteLength(data), mode: 0o644 }, data, (err) => (err ? reject(err) : resolve())),
    );
  p.finalize();
  await done;
  return gzipSync(Buffer.concat(chunks));
}

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Worker {
  readonly id: string;
  readonly child: ChildProcess;
  readonly ready: Promise<{ ready: string; recovered: string[] }>;
  stderr: string;
}

describe('two workers on one PostgreSQL (real sandboxes)', { timeout: 300_000 }, () => {
  let unavailable: string | null = null;
  let work = '';
  let home = '';
  const schema = `aegis_cl_${randomBytes(5).toString('hex')}`;
  const auditSchema = `aegis_cla_${randomBytes(5).toString('hex')}`;
  let store: Store | null = null;
  const workers: Worker[] = [];
  const auditEnv = (): NodeJS.ProcessEnv => ({
    ...process.env,
    AEGIS_HOME: home,
    AEGIS_AUDIT_STORE: pgUrl,
    AEGIS_AUDIT_PG_SCHEMA: auditSchema,
  });

  const startWorker = (id: string): Worker => {
    const settings: WorkerSettings = {
      pgUrl,
      schema,
      auditSchema,
      workerId: id,
      dataDir: join(work, id, 'data'),
      stateDir: join(work, id, 'state'),
      home,
      capacity: 2,
    };
    mkdirSync(join(work, id), { recursive: true });
    chmodSync(join(work, id), 0o755); // the state dir must be reachable from a sandbox
    const child = spawn(process.execPath, [WORKER_MAIN], {
      env: { ...process.env, SERVER_CLUSTER_WORKER: JSON.stringify(settings) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const w: Worker = {
      id,
      child,
      stderr: '',
      ready: new Promise((resolve, reject) => {
        const lines = createInterface({ input: child.stdout! });
        lines.once('line', (l) => resolve(JSON.parse(l) as { ready: string; recovered: string[] }));
        child.once('exit', (code) => reject(new Error(`worker ${id} exited ${String(code)} before it was ready: ${w.stderr}`)));
      }),
    };
    child.stderr!.on('data', (d: Buffer) => (w.stderr += d.toString()));
    workers.push(w);
    return w;
  };
  const stopWorker = async (w: Worker): Promise<number | null> => {
    if (w.child.exitCode !== null || w.child.signalCode !== null) return w.child.exitCode;
    const exited = new Promise<number | null>((resolve) => w.child.once('exit', (code) => resolve(code)));
    w.child.kill('SIGTERM');
    return exited;
  };

  before(async () => {
    if (pgUrl === '') {
      unavailable = 'AEGIS_TEST_PG_URL is not set (run `eval "$(bash scripts/pg-test.sh)"`)';
      return;
    }
    unavailable = await sandboxUnavailable();
    if (unavailable === null)
      try {
        await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
      } catch (e) {
        unavailable = `python:3.11 image missing: ${(e as Error).message}`;
      }
    if (unavailable !== null) return;
    work = mkdtempSync('/var/tmp/aegis-cluster-');
    chmodSync(work, 0o755);
    home = join(work, 'home');
    mkdirSync(home);
    // The log's keys are made once, before two writers could race to make them.
    const config = loadConfig(auditEnv());
    await (await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true })).close();
    store = await openPostgresStore(pgUrl, { schema });
  });

  after(async () => {
    for (const w of workers) {
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    }
    await store?.close();
    if (pgUrl !== '') {
      await dropPostgresSchema(pgUrl, schema).catch(() => undefined);
      await dropPostgresSchema(pgUrl, auditSchema).catch(() => undefined);
    }
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  it('spreads executions, records a killed worker’s execution lost, and keeps one verifiable log', async (t) => {
    if (inCi && unavailable !== null) assert.fail(unavailable);
    if (!requireOrSkip(t, unavailable)) return;
    const s = store!;
    const manifest = [
      'version: "1.0"',
      'agent:',
      '  name: clustered',
      '  runtime: "python:3.11"',
      '  entrypoint: ["/bin/sh", "/agent/run.sh"]',
      '  isolation: crun',
      'permissions:',
      '  execution_time: 120s',
      '',
    ].join('\n');
    // The code comes from the store: each worker extracts it into its own cache.
    const code = await tgz({
      'run.sh': 'cat /agent/greeting.txt; echo "arg:$1"; if [ "$1" = hang ]; then sleep 100; fi; sleep 1\n',
      'greeting.txt': 'hi from the archive\n',
    });
    await s.putAgentVersion({
      name: 'clustered',
      manifestText: manifest,
      manifestDigest: sha(manifest),
      codeArchive: code,
      codeDigest: sha(code),
      createdAt: Date.now(),
      createdBy: 'ak_test',
    });
    const create = (id: string, args: string[]): Promise<ExecutionRecord> =>
      s.createExecution({ id, agent: 'clustered', version: 1, args, stdin: null, env: {}, createdAt: Date.now(), createdBy: 'ak_test' });

    const a = startWorker('wa');
    const b = startWorker('wb');
    await Promise.all([a.ready, b.ready]);

    // Spread: 6 one-second executions, capacity 2 per worker.
    for (let i = 0; i < 6; i++) await create(`quick-${i}`, [`q${i}`]);
    const quick = await waitFor('the quick executions', async () => {
      const rows = await Promise.all(Array.from({ length: 6 }, (_, i) => s.getExecution(`quick-${i}`)));
      return rows.every((r) => r !== null && !['queued', 'running'].includes(r.status)) ? (rows as ExecutionRecord[]) : null;
    });
    for (const r of quick) assert.equal(r.status, 'exited', `${r.id}: ${JSON.stringify(r.summary)} ${a.stderr} ${b.stderr}`);
    assert.deepEqual([...new Set(quick.map((r) => r.worker))].sort(), ['wa', 'wb'], 'both workers ran executions');
    const out = (await s.readOutput('quick-3', 0, 100))
      .filter((c) => c.kind === 'stdout')
      .map((c) => c.data)
      .join('');
    assert.equal(out, 'hi from the archive\narg:q3\n');

    // Kill a worker mid-run.
    await create('hang-1', ['hang']);
    const running = await waitFor('hang-1 to run', async () => {
      const r = await s.getExecution('hang-1');
      const started = (await s.readOutput('hang-1', 0, 100)).some((c) => c.kind === 'stdout' && c.data.includes('arg:hang'));
      return r?.status === 'running' && started ? r : null;
    });
    const victim = running.worker === 'wa' ? a : b;
    const survivor = victim === a ? b : a;
    victim.child.kill('SIGKILL');
    const lost = await waitFor('hang-1 to be recorded lost', async () => {
      const r = await s.getExecution('hang-1');
      return r?.status === 'lost' ? r : null;
    });
    assert.equal(lost.worker, victim.id);
    const exit = await waitFor('the lost exit chunk', async () => (await s.readOutput('hang-1', 0, 100)).find((c) => c.kind === 'exit'));
    assert.deepEqual(JSON.parse(exit?.data ?? '{}'), { executionId: 'hang-1', status: 'lost', exitCode: null, durationMs: null });

    // The survivor keeps working alone.
    await create('after-1', ['after']);
    const after1 = await waitFor('after-1', async () => {
      const r = await s.getExecution('after-1');
      return r !== null && r.status === 'exited' ? r : null;
    });
    assert.equal(after1.worker, survivor.id);

    // The killed worker restarts on its own state folder: its orphaned sandbox is swept.
    const again = startWorker(victim.id);
    const ready = await again.ready;
    assert.deepEqual(ready.recovered, ['hang-1']);
    assert.deepEqual(runCgroupDirs('hang-1'), [], 'no cgroup of the killed worker’s execution is left');

    assert.equal(await stopWorker(again), 0);
    assert.equal(await stopWorker(survivor), 0);

    // One log, verifiable, with the lost execution audited once by the survivor.
    const verify = spawnSync(process.execPath, [AEGIS_BIN, 'audit', 'verify', '--json'], {
      env: auditEnv(),
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    assert.equal((JSON.parse(verify.stdout) as { ok: boolean }).ok, true);
    const q = spawnSync(process.execPath, [AEGIS_BIN, 'audit', 'query', '--action', 'execution.lost', '--json'], {
      env: auditEnv(),
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(q.status, 0, q.stderr);
    const events = q.stdout
      .trim()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { event: { actor: { execution?: string }; payload: Record<string, unknown> } }).event);
    assert.deepEqual(
      events.map((e) => [e.actor.execution, e.payload['worker'], e.payload['reapedBy']]),
      [['hang-1', victim.id, survivor.id]],
    );
    assert.equal(events[0]?.payload['codeDigest'], sha(code));
    assert.equal(events[0]?.payload['manifestDigest'], sha(manifest));
    const runs = spawnSync(process.execPath, [AEGIS_BIN, 'audit', 'query', '--action', 'run.lost', '--json'], {
      env: auditEnv(),
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(runs.status, 0, runs.stderr);
    assert.match(runs.stdout, /hang-1/u, 'the restarted engine audited the sweep of the orphaned sandbox');
  });
});

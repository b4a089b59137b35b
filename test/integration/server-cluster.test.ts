/**
 * Two `aegis serve` workers on one PostgreSQL (issue 11, scale-out), with real sandboxes (crun):
 * each worker has its own data folder and state dir; they share the execution queue (schema
 * `aegis_server`) and one audit log (AEGIS_AUDIT_STORE on the same server). Executions created
 * through either API spread over both workers; a stream read from one worker follows an execution
 * the other runs; one worker is SIGKILLed mid-run and the other records its execution `lost`
 * (audited `execution.lost`, once); the killed worker restarts, sweeps its orphaned sandbox and
 * stops cleanly; `aegis audit verify` accepts the one log.
 * In CI (CI=true) a missing PostgreSQL server or sandbox requirement is a failure, never a skip.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openAuditLog } from '../../src/audit/index.js';
import { loadConfig } from '../../src/config/index.js';
import { resolveImage } from '../../src/images/index.js';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { DEFAULT_PG_SCHEMA, dropPostgresSchema, openPostgresStore } from '../../src/server/store/postgres.js';
import type { Store } from '../../src/server/store/types.js';
import { codeArchive } from '../../src/server/test-fixtures.js';
import { CheckedApi, deployForm, rawRequest } from '../../src/test-support/api.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

const pgUrl = process.env['AEGIS_TEST_PG_URL'] ?? '';
const inCi = process.env['CI'] === 'true';
const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 90_000): Promise<T> {
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
  readonly proc: ChildProcess;
  readonly api: CheckedApi;
  stderr(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

interface Execution {
  readonly id: string;
  readonly status: string;
  readonly exitCode: number | null;
  readonly summary: Record<string, unknown> | null;
}

describe('two aegis serve workers on one PostgreSQL (real sandboxes)', { timeout: 300_000 }, () => {
  let unavailable: string | null = null;
  let work = '';
  let env: NodeJS.ProcessEnv = {};
  let store: Store | null = null;
  let adminKey = '';
  const auditSchema = `aegis_cla_${randomBytes(5).toString('hex')}`;
  const procs: ChildProcess[] = [];

  const startWorker = async (id: string): Promise<Worker> => {
    const dir = join(work, id);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755); // the state dir must be reachable from a sandbox
    const proc = spawn(
      process.execPath,
      [
        AEGIS_BIN,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(dir, 'data'),
        '--state-dir',
        join(dir, 'state'),
        '--worker',
        id,
        '--database',
        pgUrl,
        '--capacity',
        '2',
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    procs.push(proc);
    let err = '';
    proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      proc.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(out.slice(0, nl));
      });
      proc.once('exit', (code) => reject(new Error(`aegis serve (${id}) exited ${String(code)}: ${err}`)));
    });
    const info = JSON.parse(line) as { url: string; worker: string };
    assert.equal(info.worker, id);
    return {
      id,
      proc,
      api: await CheckedApi.connect({ url: info.url }),
      stderr: () => err,
      stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
        return exited;
      },
    };
  };

  const execution = async (w: Worker, id: string): Promise<Execution> => {
    const r = await w.api.call('GET', `/v1/executions/${id}`, { key: adminKey });
    assert.equal(r.status, 200, r.text);
    return r.json as Execution;
  };
  const create = async (w: Worker, args: string[]): Promise<string> => {
    const r = await w.api.call('POST', '/v1/agents/clustered/executions', { key: adminKey, json: { args } });
    assert.equal(r.status, 201, r.text);
    return (r.json as { id: string }).id;
  };
  const ended = (s: string): boolean => !['queued', 'running'].includes(s);

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
    // `aegis serve --database` keeps its state in the default schema: start from none (this test
    // holds the global integration lock).
    await dropPostgresSchema(pgUrl, DEFAULT_PG_SCHEMA);
    work = mkdtempSync('/var/tmp/aegis-cluster-');
    chmodSync(work, 0o755);
    const home = join(work, 'home');
    mkdirSync(home, { mode: 0o700 });
    env = {
      ...process.env,
      AEGIS_HOME: home,
      AEGIS_ALERT_RULES: 'none',
      AEGIS_BASELINE: 'off',
      AEGIS_AUDIT_STORE: pgUrl,
      AEGIS_AUDIT_PG_SCHEMA: auditSchema,
    };
    // The log's keys are made once, before two writers could race to make them.
    const config = loadConfig(env);
    await (await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true })).close();
    const k = spawnSync(
      process.execPath,
      [AEGIS_BIN, 'keys', 'create', '--role', 'admin', '--data', join(work, 'keys'), '--database', pgUrl],
      { env, encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(k.status, 0, k.stderr);
    adminKey = k.stdout.trim();
    store = await openPostgresStore(pgUrl);
  });

  after(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await store?.close();
    if (pgUrl !== '' && unavailable === null) {
      await dropPostgresSchema(pgUrl, DEFAULT_PG_SCHEMA).catch(() => undefined);
      await dropPostgresSchema(pgUrl, auditSchema).catch(() => undefined);
    }
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  it('spreads executions, records a killed worker’s execution lost, and keeps one verifiable log', async (t) => {
    if (inCi && unavailable !== null) assert.fail(unavailable);
    if (!requireOrSkip(t, unavailable)) return;
    const s = store!;
    const a = await startWorker('wa');
    const b = await startWorker('wb');

    const code = await codeArchive({
      'run.sh': 'cat greeting.txt; echo "arg:$1"; if [ "$1" = hang ]; then sleep 100; fi; sleep 1\n',
      'greeting.txt': 'hi from the archive\n',
    });
    const manifest = [
      'version: "1.0"',
      'agent:',
      '  name: clustered',
      '  runtime: "python:3.11"',
      '  entrypoint: ["/bin/sh", "run.sh"]',
      '  isolation: crun',
      'permissions:',
      '  execution_time: 120s',
      '',
    ].join('\n');
    const form = deployForm(manifest, code);
    const dep = await a.api.call('POST', '/v1/agents', { key: adminKey, body: form.body, contentType: form.contentType });
    assert.equal(dep.status, 201, dep.text);

    // Spread: 6 one-second executions created through both APIs, capacity 2 per worker.
    const quick: string[] = [];
    for (let i = 0; i < 6; i++) quick.push(await create(i % 2 === 0 ? a : b, [`q${i}`]));
    const done = await waitFor('the quick executions', async () => {
      const rows = await Promise.all(quick.map((id) => execution(a, id)));
      return rows.every((r) => ended(r.status)) ? rows : null;
    });
    for (const r of done) assert.equal(r.status, 'exited', `${r.id}: ${JSON.stringify(r.summary)}\n${a.stderr()}\n${b.stderr()}`);
    const ranOn = await Promise.all(quick.map(async (id) => (await s.getExecution(id))?.worker));
    assert.deepEqual([...new Set(ranOn)].sort(), ['wa', 'wb'], 'both workers ran executions');

    // A stream read from one worker follows an execution that the other ran.
    const i = ranOn.indexOf('wa');
    const sse = await rawRequest(b.api.target, 'GET', `/v1/executions/${quick[i]!}/stream`, { key: adminKey });
    assert.equal(sse.status, 200);
    assert.match(sse.text, /event: stdout\nid: \d+\ndata: \{"data":"hi from the archive\\n/u);
    assert.match(sse.text, new RegExp(`arg:q${i}`, 'u'));
    assert.match(sse.text, /event: exit\n/u);

    // Kill a worker mid-run.
    const hang = await create(a, ['hang']);
    const running = await waitFor('the hanging execution to run', async () => {
      const r = await s.getExecution(hang);
      const started = (await s.readOutput(hang, 0, 100)).some((c) => c.kind === 'stdout' && c.data.includes('arg:hang'));
      return r?.status === 'running' && started ? r : null;
    });
    const victim = running.worker === 'wa' ? a : b;
    const survivor = victim === a ? b : a;
    assert.equal(await victim.stop('SIGKILL'), null);
    const lost = await waitFor('the execution to be recorded lost', async () => {
      const r = await execution(survivor, hang);
      return r.status === 'lost' ? r : null;
    });
    assert.equal(lost.exitCode, null);
    const sseLost = await rawRequest(survivor.api.target, 'GET', `/v1/executions/${hang}/stream`, { key: adminKey });
    assert.match(sseLost.text, /event: exit\n(id: \d+\n)?data: \{[^\n]*"status":"lost"/u);

    // The survivor keeps working alone.
    const after1 = await create(survivor, ['after']);
    const r1 = await waitFor('the execution after the kill', async () => {
      const r = await execution(survivor, after1);
      return ended(r.status) ? r : null;
    });
    assert.equal(r1.status, 'exited');
    assert.equal((await s.getExecution(after1))?.worker, survivor.id);

    // The killed worker restarts on its own state dir: its orphaned sandbox is swept.
    const again = await startWorker(victim.id);
    assert.deepEqual(runCgroupDirs(hang), [], 'no cgroup of the killed worker’s execution is left');
    assert.equal(await again.stop(), 0, again.stderr());
    assert.equal(await survivor.stop(), 0, survivor.stderr());

    // One log, verifiable, with the lost execution audited once, by the survivor.
    const verify = spawnSync(process.execPath, [AEGIS_BIN, 'audit', 'verify', '--json'], { env, encoding: 'utf8', timeout: 120_000 });
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    assert.equal((JSON.parse(verify.stdout) as { ok: boolean }).ok, true);
    const query = (action: string): { actor: { execution?: string }; payload: Record<string, unknown> }[] => {
      const q = spawnSync(process.execPath, [AEGIS_BIN, 'audit', 'query', '--action', action, '--json'], {
        env,
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(q.status, 0, q.stderr);
      return q.stdout
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => (JSON.parse(l) as { event: { actor: { execution?: string }; payload: Record<string, unknown> } }).event);
    };
    const lostEvents = query('execution.lost');
    assert.deepEqual(
      lostEvents.map((e) => [e.actor.execution, e.payload['worker'], e.payload['reapedBy']]),
      [[hang, victim.id, survivor.id]],
    );
    assert.equal(lostEvents[0]?.payload['codeDigest'], sha(code));
    assert.equal(lostEvents[0]?.payload['manifestDigest'], sha(manifest));
    assert.ok(
      query('run.lost').some((e) => e.actor.execution === hang),
      'the restarted worker audited the sweep of the orphaned sandbox',
    );
  });
});

/**
 * `aegis serve` with the runtime monitor required (AEGIS_MONITOR=on): the server starts the
 * host's shared monitor (one bpftrace, src/monitor/daemon.ts) at start-up, and every execution,
 * cold or from a warm pool, goes through the one execution path with it: its processes and files
 * land in the server's audit log attributed to that execution, and to no other. After the server
 * stops, the monitor stops after its idle time (AEGIS_MONITOR_IDLE): nothing is left running.
 * Requires bpftrace and tracefs (scripts/setup.sh); under CI=true a missing requirement fails.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditEventInput } from '../../src/audit/event.js';
import { openAuditReader } from '../../src/audit/index.js';
import { parseLockOwner, pidAlive } from '../../src/host/pid-lock.js';
import { resolveImage } from '../../src/images/index.js';
import { monitorSupport } from '../../src/monitor/index.js';
import { codeArchive } from '../../src/server/test-fixtures.js';
import { deployForm, type CheckedApi } from '../../src/test-support/api.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import {
  agentManifest,
  createKey,
  leftovers,
  removeDirs,
  serverDirs,
  startServer,
  type RunningServer,
  type ServerDirs,
} from './server-support.js';

const SCRIPT = 'cat /etc/shadow 2>/dev/null; id -u; echo "$1" > /data/out/result.txt\n';

/** The pids of `pid`'s children (the daemon's bpftrace). */
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

describe('aegis serve: executions under the runtime monitor', { timeout: 300_000 }, () => {
  let unavailable: string | null = null;
  let d: ServerDirs;
  let server: RunningServer | undefined;
  let api: CheckedApi;
  let operator = '';
  let deployer = '';
  let daemonPid = 0;
  const lockFile = (): string => join(d.state, 'monitor', 'monitor.pid');

  const events = async (id: string): Promise<AuditEventInput[]> => {
    const reader = await openAuditReader({ home: d.home, env: {} });
    const out: AuditEventInput[] = [];
    for await (const r of reader.read(0)) if (r.decoded?.event.actor.execution === id) out.push(r.decoded.event as AuditEventInput);
    await reader.close();
    return out;
  };
  const execute = async (name: string, args: string[]): Promise<{ id: string; warm: unknown }> => {
    const r = await api.call('POST', `/v1/agents/${name}/executions`, { key: operator, json: { args } });
    assert.equal(r.status, 201, r.text);
    const id = (r.json as { id: string }).id;
    const end = Date.now() + 120_000;
    for (;;) {
      const e = (await api.call('GET', `/v1/executions/${id}`, { key: operator })).json as {
        status: string;
        summary: Record<string, unknown> | null;
      };
      if (e.summary !== null && e.status !== 'running' && e.status !== 'queued') {
        assert.equal(e.status, 'exited', JSON.stringify(e.summary));
        return { id, warm: e.summary['warm'] };
      }
      if (Date.now() > end) assert.fail(`execution ${id} stuck in ${e.status}`);
      await sleep(50);
    }
  };
  const assertMonitored = (evs: AuditEventInput[], arg: string): void => {
    const execs = evs.filter((e) => e.action === 'process.exec').map((e) => e.payload);
    assert.ok(
      execs.some((p) => p['path'] === '/bin/sh' && JSON.stringify(p['argv']) === JSON.stringify(['/bin/sh', 'run.sh', arg])),
      JSON.stringify(execs),
    );
    assert.ok(
      execs.some((p) => String(p['path']).endsWith('/id')),
      JSON.stringify(execs),
    );
    const opens = evs.filter((e) => e.action === 'fs.open');
    const shadow = opens.find((e) => e.payload['path'] === '/etc/shadow');
    assert.deepEqual([shadow?.decision, shadow?.payload['result']], ['deny', 'EACCES'], JSON.stringify(shadow));
    assert.ok(opens.some((e) => e.payload['path'] === '/data/out/result.txt' && e.payload['access'] === 'write'));
    const summary = evs.find((e) => e.action === 'monitor.summary');
    assert.equal(summary?.payload['complete'], true);
    const order = evs.map((e) => e.action);
    assert.ok(order.indexOf('monitor.summary') < order.indexOf('run.exit'));
  };

  before(async () => {
    unavailable = await sandboxUnavailable();
    const support = monitorSupport();
    if (unavailable === null && support.missing.length > 0) unavailable = `runtime monitor unsupported here: ${support.missing.join('; ')}`;
    if (unavailable === null)
      try {
        await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
      } catch (e) {
        unavailable = `python:3.11 image missing: ${(e as Error).message}`;
      }
    d = serverDirs('aegis-server-monitor');
    d.env['AEGIS_MONITOR'] = 'on';
    d.env['AEGIS_MONITOR_IDLE'] = '1s';
    if (unavailable !== null) return;
    operator = createKey(d, 'operator');
    deployer = createKey(d, 'deployer');
    server = await startServer(d, ['--capacity', '4']);
    api = server.api;
    const f = deployForm(agentManifest('watched'), await codeArchive({ 'run.sh': SCRIPT }));
    const r = await api.call('POST', '/v1/agents', { key: deployer, body: f.body, contentType: f.contentType });
    assert.equal(r.status, 201, r.text);
  });
  after(async () => {
    await server?.stop();
    if (daemonPid > 0 && pidAlive(daemonPid)) process.kill(daemonPid, 'SIGKILL');
    removeDirs(d);
  });

  it('the server starts the host monitor with itself (one bpftrace), before any execution', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const end = Date.now() + 30_000;
    while (!existsSync(lockFile()) && Date.now() < end) await sleep(50);
    const owner = parseLockOwner(readFileSync(lockFile(), 'utf8'));
    assert.ok(owner !== null && pidAlive(owner.pid), 'the monitor daemon runs');
    daemonPid = owner.pid;
    assert.equal(children(daemonPid).length, 1, 'one bpftrace');
  });

  it('a cold execution: its processes and files in the server log, attributed to it', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const { id, warm } = await execute('watched', ['cold']);
    assert.equal(warm, false);
    assertMonitored(await events(id), 'cold');
    assert.deepEqual(leftovers(d, id), []);
  });

  it('an execution from a warm pool is monitored too (attached before the shim runs the agent), and two never mix', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = await api.call('PUT', '/v1/agents/watched/pool', { key: operator, json: { warm: 1 } });
    assert.equal(r.status, 200, r.text);
    const end = Date.now() + 60_000;
    for (;;) {
      const m = await api.call('GET', '/metrics', { key: operator });
      if (/aegis_pool_warm\{agent="watched"\} 1/.test(m.text)) break;
      if (Date.now() > end) assert.fail('the warm sandbox was never ready');
      await sleep(100);
    }
    const [a, b] = await Promise.all([execute('watched', ['warm-a']), execute('watched', ['cold-b'])]);
    assert.ok([a.warm, b.warm].includes(true), 'one of them claimed the warm sandbox');
    const [ea, eb] = [await events(a.id), await events(b.id)];
    assertMonitored(ea, 'warm-a');
    assertMonitored(eb, 'cold-b');
    const argvs = (evs: AuditEventInput[]): string =>
      JSON.stringify(evs.filter((e) => e.action === 'process.exec').map((e) => e.payload['argv']));
    assert.ok(!argvs(ea).includes('cold-b') && !argvs(eb).includes('warm-a'), 'each execution sees only its own processes');
    assert.equal((await api.call('PUT', '/v1/agents/watched/pool', { key: operator, json: { warm: 0 } })).status, 200);
    assert.equal(children(daemonPid).length, 1, 'still the one bpftrace');
  });

  it('after the server stops, the monitor stops after its idle time: no bpftrace left', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const bpf = children(daemonPid);
    assert.equal(await server!.stop(), 0);
    server = undefined;
    const end = Date.now() + 15_000;
    while ((pidAlive(daemonPid) || bpf.some((p) => pidAlive(p))) && Date.now() < end) await sleep(100);
    assert.equal(pidAlive(daemonPid), false, 'the daemon is gone');
    for (const p of bpf) assert.equal(pidAlive(p), false, `bpftrace ${p} is gone`);
    assert.equal(existsSync(lockFile()), false);
  });
});

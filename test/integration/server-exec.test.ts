/**
 * `aegis serve` running real agents (crun): deploy + execute with args and stdin, the SSE stream
 * (stdout, stderr, audit, then exit), the outputs as tar, cancel mid-run (recorded killed), a
 * burst of concurrent executions each with its own output, and the server stopped with runs in
 * progress: SIGTERM (runs killed and recorded) and SIGKILL (runs recorded lost after the
 * restart); nothing is left behind on the host either way.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { extract as tarExtract } from 'tar-stream';
import { openAuditReader } from '../../src/audit/index.js';
import { resolveImage } from '../../src/images/index.js';
import { codeArchive } from '../../src/server/test-fixtures.js';
import { deployForm, readSse, type CheckedApi } from '../../src/test-support/api.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import {
  agentManifest,
  createKey,
  leftovers,
  netnsNames,
  removeDirs,
  serverDirs,
  startServer,
  type RunningServer,
  type ServerDirs,
} from './server-support.js';

const BURST = 50;
const FINAL = ['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost'];

interface Exec {
  id: string;
  status: string;
  exitCode: number | null;
  summary: Record<string, unknown> | null;
}

async function untar(raw: Buffer): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  await new Promise<void>((resolve, reject) => {
    const x = tarExtract();
    x.on('entry', (h, stream, next) => {
      const parts: Buffer[] = [];
      stream.on('data', (b: unknown) => void parts.push(b as Buffer));
      stream.on('end', () => {
        if (h.type === 'file') files[h.name] = Buffer.concat(parts).toString();
        next();
      });
    });
    x.on('finish', resolve);
    x.on('error', reject);
    x.end(raw);
  });
  return files;
}

describe('aegis serve: executions with real sandboxes', { timeout: 600_000 }, () => {
  let unavailable: string | null = null;
  let d: ServerDirs;
  let server: RunningServer;
  let api: CheckedApi;
  let operator = '';
  let deployer = '';
  let nsBefore: string[] = [];

  const deploy = async (name: string, script: string): Promise<void> => {
    const f = deployForm(agentManifest(name), await codeArchive({ 'run.sh': script }));
    const r = await api.call('POST', '/v1/agents', { key: deployer, body: f.body, contentType: f.contentType });
    assert.equal(r.status, 201, r.text);
  };
  const execute = async (name: string, body: Record<string, unknown>): Promise<string> => {
    const r = await api.call('POST', `/v1/agents/${name}/executions`, { key: operator, json: body });
    assert.equal(r.status, 201, r.text);
    return (r.json as { id: string }).id;
  };
  const get = async (id: string): Promise<Exec> => (await api.call('GET', `/v1/executions/${id}`, { key: operator })).json as Exec;
  const waitFor = async (id: string, pred: (e: Exec) => boolean, ms = 60_000): Promise<Exec> => {
    const end = Date.now() + ms;
    for (;;) {
      const e = await get(id);
      if (pred(e)) return e;
      if (Date.now() > end) assert.fail(`execution ${id} stuck in ${e.status}`);
      await sleep(50);
    }
  };
  const start = async (): Promise<void> => {
    server = await startServer(d, ['--capacity', '16']);
    api = server.api;
  };

  before(async () => {
    unavailable = await sandboxUnavailable();
    if (unavailable === null)
      try {
        await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
      } catch (e) {
        unavailable = `python:3.11 image missing: ${(e as Error).message}`;
      }
    nsBefore = netnsNames();
    d = serverDirs('aegis-server-exec');
    operator = createKey(d, 'operator');
    deployer = createKey(d, 'deployer');
    await start();
  });
  after(async () => {
    await server?.stop();
    removeDirs(d);
  });

  it('deploys and executes an agent: SSE stdout/stderr/audit then exit, the summary, the outputs tar', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    await deploy('echoer', 'echo "out:$1"; cat; echo "err:$1" >&2; echo "$1" > /data/out/result.txt\n');
    const id = await execute('echoer', { args: ['one'], stdin: 'from-stdin\n' });
    const s = await readSse({ url: server.url }, `/v1/executions/${id}/stream`, operator);
    assert.equal(s.status, 200);
    assert.match(s.contentType, /^text\/event-stream/);
    const kinds = s.events.map((e) => e.event);
    assert.equal(kinds.at(-1), 'exit');
    assert.ok(kinds.includes('audit'));
    const text = (k: string): string =>
      s.events
        .filter((e) => e.event === k)
        .map((e) => (e.data as { data: string }).data)
        .join('');
    assert.equal(text('stdout'), 'out:one\nfrom-stdin\n');
    assert.equal(text('stderr'), 'err:one\n');
    const actions = s.events.filter((e) => e.event === 'audit').map((e) => (e.data as { action: string }).action);
    for (const a of ['sandbox.transition', 'run.spawn', 'run.exit']) assert.ok(actions.includes(a), a);
    const e = await get(id);
    assert.deepEqual([e.status, e.exitCode], ['exited', 0]);
    assert.equal(e.summary?.['status'], 'exited');
    const out = await api.call('GET', `/v1/executions/${id}/outputs`, { key: operator });
    assert.equal(out.status, 200);
    assert.equal((await untar(out.raw))['data/out/result.txt'], 'one\n');
    assert.deepEqual(leftovers(d, id), []);
  });

  it('cancels an execution mid-run: 202, recorded killed, stream ends with exit, nothing left', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    await deploy('sleeper', 'echo ready; sleep 60\n');
    const id = await execute('sleeper', {});
    let cancelled = false;
    const s = await readSse({ url: server.url }, `/v1/executions/${id}/stream`, operator, (e) => {
      if (e.event === 'stdout' && !cancelled) {
        cancelled = true;
        void api.call('DELETE', `/v1/executions/${id}`, { key: operator }).then((r) => assert.equal(r.status, 202));
      }
    });
    assert.equal(s.events.at(-1)?.event, 'exit');
    const e = await waitFor(id, (x) => FINAL.includes(x.status));
    assert.equal(e.status, 'killed');
    assert.equal(
      (await api.call('DELETE', `/v1/executions/${id}`, { key: operator })).status,
      409,
      'an ended execution cannot be cancelled',
    );
    assert.deepEqual(leftovers(d, id), []);
    const reader = await openAuditReader({ home: d.home, env: {} });
    let audited = false;
    for await (const r of reader.read(0))
      if (r.decoded?.event.action === 'execution.cancel' && r.decoded.event.actor.execution === id) audited = true;
    await reader.close();
    assert.ok(audited, 'execution.cancel audited');
  });

  it(`a burst of ${BURST} concurrent executions, each with its own right output, nothing leaked`, async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const ids = await Promise.all(Array.from({ length: BURST }, (_, i) => execute('echoer', { args: [`n${i}`], stdin: `in${i}\n` })));
    const ends = await Promise.all(ids.map((id) => waitFor(id, (x) => FINAL.includes(x.status), 300_000)));
    // On failure, say why each one did not exit (its summary carries the error code).
    assert.deepEqual(
      ends.filter((e) => e.status !== 'exited').map((e) => ({ id: e.id, status: e.status, summary: e.summary })),
      [],
    );
    for (const [i, id] of ids.entries()) {
      const s = await readSse({ url: server.url }, `/v1/executions/${id}/stream`, operator);
      const stdout = s.events
        .filter((e) => e.event === 'stdout')
        .map((e) => (e.data as { data: string }).data)
        .join('');
      assert.equal(stdout, `out:n${i}\nin${i}\n`, id);
      const out = await untar((await api.call('GET', `/v1/executions/${id}/outputs`, { key: operator })).raw);
      assert.equal(out['data/out/result.txt'], `n${i}\n`);
      assert.deepEqual(leftovers(d, id), []);
    }
  });

  it('SIGTERM with runs in progress: they are cancelled and recorded killed; the server exits 0; nothing left', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const ids = [await execute('sleeper', {}), await execute('sleeper', {})];
    for (const id of ids) await waitFor(id, (x) => x.status === 'running');
    // A client following one of them: its stream gets the exit (killed) and the server still stops.
    let streaming = false;
    const follower = readSse(
      { url: server.url },
      `/v1/executions/${ids[0]}/stream`,
      operator,
      (e) => void (e.event === 'stdout' && (streaming = true)),
    );
    for (const end = Date.now() + 30_000; !streaming && Date.now() < end;) await sleep(50);
    assert.ok(streaming, 'the follower sees the output');
    assert.equal(await server.stop('SIGTERM'), 0, server.stderr());
    const followed = await follower;
    assert.equal(followed.events.at(-1)?.event, 'exit');
    assert.equal((followed.events.at(-1)?.data as { status: string }).status, 'killed');
    await start();
    for (const id of ids) {
      const e = await get(id);
      assert.equal(e.status, 'killed', JSON.stringify(e));
      assert.deepEqual(leftovers(d, id), []);
    }
  });

  it('SIGKILL with runs in progress: after the restart they are recorded lost (audited), nothing orphaned', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const ids = [await execute('sleeper', {}), await execute('sleeper', {})];
    for (const id of ids) await waitFor(id, (x) => x.status === 'running');
    await sleep(500);
    await server.stop('SIGKILL');
    await start();
    for (const id of ids) {
      const e = await waitFor(id, (x) => FINAL.includes(x.status), 30_000);
      assert.equal(e.status, 'lost', JSON.stringify(e));
      assert.deepEqual(leftovers(d, id), []);
    }
    const reader = await openAuditReader({ home: d.home, env: {} });
    const lost = new Set<string>();
    for await (const r of reader.read(0)) if (r.decoded?.event.action === 'execution.lost') lost.add(r.decoded.event.actor.execution ?? '');
    await reader.close();
    for (const id of ids) assert.ok(lost.has(id), `execution.lost audited for ${id}`);
    assert.deepEqual(netnsNames(), nsBefore, 'no network namespace left behind');
  });
});

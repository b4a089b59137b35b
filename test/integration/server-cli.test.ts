/**
 * The CLI's client commands against a real `aegis serve` with real sandboxes: deploy (and a bad
 * manifest's positions), exec (streamed output, the agent's exit code, --stdin, --detach), ps,
 * logs, kill, pool set, keys create|ls|revoke through the API, clear errors for an unreachable
 * server, a bad key (401) and a role that may not (403), and `aegis run` by a user who is not
 * root going through the server's unix socket.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Aegis } from '../../sdk/src/index.js';
import { requireOrSkip } from './sandbox-conformance.js';
import { cli, serverTestsUnavailable, startServer, writeAgent, type TestServer } from './server-client-support.js';

describe('aegis deploy|exec|ps|logs|kill|pool|keys against aegis serve (real sandboxes)', { timeout: 600_000 }, () => {
  let unavailable: string | null = null;
  let srv: TestServer | undefined;
  let deployerKey = '';
  let operatorKey = '';

  before(async () => {
    unavailable = await serverTestsUnavailable();
    if (unavailable !== null) return;
    srv = await startServer();
    const admin = new Aegis({ url: srv.url, apiKey: srv.adminKey });
    deployerKey = (await admin.keys.create({ role: 'deployer' })).key;
    operatorKey = (await admin.keys.create({ role: 'operator' })).key;
  });
  after(async () => {
    await srv?.stop();
  });

  it('deploy prints the version and digests; a bad manifest gets file:line:col lines and exit 1', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const manifest = writeAgent(srv!.work, 'cli-echo', 'echo "out:$1"\ncat\necho "err:$1" >&2\nexit "${2:-0}"\n');
    const r = cli(['deploy', manifest], srv!.env(deployerKey));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^deployed cli-echo version 1 \(manifest sha256:[0-9a-f]{64}, code sha256:[0-9a-f]{64}\)\n$/);
    const j = cli(['deploy', manifest, '--json'], srv!.env(deployerKey));
    assert.equal(j.code, 0, j.stderr);
    assert.equal((JSON.parse(j.stdout) as { version: number }).version, 2);

    const bad = writeAgent(srv!.work, 'cli-bad', 'true\n', '  memory: lots\n');
    const b = cli(['deploy', bad], srv!.env(deployerKey));
    assert.equal(b.code, 1);
    assert.match(b.stderr, new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: permissions\\.memory: `));
  });

  it("exec streams the output and exits with the agent's code; --stdin and --detach; ps and logs", (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = cli(['exec', 'cli-echo', '--stdin', '--', 'hello', '7'], srv!.env(operatorKey), { input: 'piped\n' });
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'out:hello\npiped\n');
    assert.match(r.stderr, /err:hello\n/);

    const ok = cli(['exec', 'cli-echo', '--', 'again'], srv!.env(operatorKey));
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'out:again\n');

    const d = cli(['exec', 'cli-echo', '--detach', '--', 'bg'], srv!.env(operatorKey));
    assert.equal(d.code, 0, d.stderr);
    const id = d.stdout.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    const logs = cli(['logs', '-f', id], srv!.env(operatorKey));
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'out:bg\n');
    assert.match(logs.stderr, /err:bg/);

    const ps = cli(['ps', '--json', '--agent', 'cli-echo'], srv!.env(operatorKey));
    assert.equal(ps.code, 0, ps.stderr);
    const list = JSON.parse(ps.stdout) as { id: string; status: string; exitCode: number | null }[];
    assert.equal(list.find((e) => e.id === id)?.status, 'exited');
    assert.ok(list.some((e) => e.exitCode === 7));
    const text = cli(['ps'], srv!.env(operatorKey));
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^ID +AGENT +STATUS +EXIT +DURATION +CREATED\n/);
    assert.match(text.stdout, new RegExp(`${id} +cli-echo +exited +0 `));
  });

  it('kill cancels a running execution (recorded killed; its logs stay readable)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const manifest = writeAgent(srv!.work, 'cli-sleeper', 'echo ready\nsleep 60\n');
    assert.equal(cli(['deploy', manifest], srv!.env(deployerKey)).code, 0);
    const d = cli(['exec', 'cli-sleeper', '--detach'], srv!.env(operatorKey));
    assert.equal(d.code, 0, d.stderr);
    const id = d.stdout.trim();
    const operator = new Aegis({ url: srv!.url, apiKey: operatorKey });
    for (const deadline = Date.now() + 60_000; (await operator.executions.info(id)).status !== 'running';) {
      assert.ok(Date.now() < deadline, 'the execution started');
      await new Promise((r) => setTimeout(r, 100));
    }
    const k = cli(['kill', id], srv!.env(operatorKey));
    assert.equal(k.code, 0, k.stderr);
    assert.equal(k.stdout, `cancel requested: ${id}\n`);
    const info = await (await operator.executions.get(id)).wait({ timeoutMs: 60_000 });
    assert.equal(info.status, 'killed');
    const again = cli(['logs', id], srv!.env(operatorKey));
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^ready\n/);
  });

  it('pool set, and keys create|ls|revoke through the API', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const p = cli(['pool', 'set', 'cli-echo', '1'], srv!.env(operatorKey));
    assert.equal(p.code, 0, p.stderr);
    assert.equal(p.stdout, 'pool cli-echo: 1 warm\n');
    assert.equal(cli(['pool', 'set', 'cli-echo', '0'], srv!.env(operatorKey)).code, 0);
    assert.equal(cli(['pool', 'set', 'cli-echo', 'many'], srv!.env(operatorKey)).code, 2);

    const c = cli(['keys', 'create', '--role', 'auditor', '--expires', '1d', '--server', srv!.url], srv!.env(srv!.adminKey));
    assert.equal(c.code, 0, c.stderr);
    const key = c.stdout.trim();
    assert.ok(key.length > 10 && c.stdout === `${key}\n`, 'the key alone on stdout');
    const ls = cli(['keys', 'ls', '--json'], srv!.env(srv!.adminKey));
    assert.equal(ls.code, 0, ls.stderr);
    const keys = JSON.parse(ls.stdout) as { id: string; role: string; revoked: string | null }[];
    const mine = keys.find((k) => k.role === 'auditor' && k.revoked === null && key.startsWith(k.id));
    assert.ok(mine, `the new key is listed: ${ls.stdout}`);
    assert.ok(!ls.stdout.includes(key), 'never the key itself');
    const rv = cli(['keys', 'revoke', mine.id], srv!.env(srv!.adminKey));
    assert.equal(rv.code, 0, rv.stderr);
    const refused = cli(['ps'], srv!.env(key));
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^aegis ps: unauthorized: .*AEGIS_API_KEY/m);
  });

  it('says what is wrong: unreachable server (3), no key (401), a role that may not (403)', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const down = cli(['ps', '--server', 'http://127.0.0.1:1'], srv!.env(operatorKey));
    assert.equal(down.code, 3);
    assert.match(down.stderr, /^aegis ps: cannot reach the AEGIS server at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\).*aegis serve/m);
    const noSock = cli(['ps'], srv!.env(operatorKey, `unix:${join(srv!.work, 'none.sock')}`));
    assert.equal(noSock.code, 3);
    const exec = cli(['exec', 'cli-echo'], srv!.env(operatorKey, 'http://127.0.0.1:1'));
    assert.equal(exec.code, 125, 'exec: 125 when it cannot run at all');
    const anon = cli(['ps'], srv!.env());
    assert.equal(anon.code, 1);
    assert.match(anon.stderr, /unauthorized/);
    const forbidden = cli(['deploy', join(srv!.work, 'agents', 'cli-echo', 'agent.yaml')], srv!.env(operatorKey));
    assert.equal(forbidden.code, 1);
    assert.match(forbidden.stderr, /^aegis deploy: forbidden: .*\(this needs the deployer role, or admin\)/m);
    const badUrl = cli(['ps', '--server', 'ftp://x'], srv!.env(operatorKey));
    assert.equal(badUrl.code, 2);
  });

  it('aegis run by a user who is not root goes through the unix socket', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    // nobody, with the socket's group (`aegis`, or root's where that group does not exist) as its
    // group: what membership of that group grants a local user.
    const uid = 65534;
    const gid = statSync(srv!.socket).gid;
    const home = join(srv!.work, 'nobody-home');
    mkdirSync(home, { mode: 0o700 });
    chownSync(home, uid, gid);
    const manifest = writeAgent(srv!.work, 'cli-local', 'echo "local:$1"\nexit 4\n');
    chmodSync(manifest, 0o644);
    const env = { ...srv!.env(undefined, `unix:${srv!.socket}`), AEGIS_HOME: home, HOME: home };
    const r = cli(['run', manifest, '--', 'me'], env, { uid, gid });
    assert.equal(r.code, 4, `${r.stderr}\n${srv!.log()}`);
    assert.equal(r.stdout, 'local:me\n');
    assert.match(r.stderr, /through the server at unix:/);

    // Outside the socket's group: the socket's mode (0660) keeps it out; nothing runs.
    const outsider = cli(['run', manifest, '--', 'me'], env, { uid, gid: 65534 });
    assert.equal(outsider.code, 125);
    assert.equal(outsider.stdout, '');
    assert.match(outsider.stderr, /cannot reach the AEGIS server at unix:.*\(EACCES\)/);
  });
});

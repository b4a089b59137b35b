/**
 * A non-root user runs an agent through the server's unix socket (issue 11): a throw-away system
 * user in group `aegis` (the group is created for the test when the host has none, and removed
 * after, like the user) connects with no key; the server identifies it by the socket's peer
 * credentials as operator+deployer for its own agents: it deploys and executes an agent, may not
 * manage keys (403), and a user outside the group cannot even connect (socket mode 0660).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveImage } from '../../src/images/index.js';
import { groupGid } from '../../src/server/transport.js';
import { codeArchive } from '../../src/server/test-fixtures.js';
import { CheckedApi } from '../../src/test-support/api.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import { agentManifest, removeDirs, serverDirs, startServer, type RunningServer, type ServerDirs } from './server-support.js';

/** The client the test user runs: node built-ins only, JSON lines out. */
const CLIENT = `
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
const [socketPath, manifestFile, codeFile] = process.argv.slice(2);
const call = (method, path, body, type) => new Promise((resolve, reject) => {
  const req = request({ socketPath, method, path, headers: body ? { 'content-type': type, 'content-length': body.length } : {} }, (res) => {
    let s = ''; res.on('data', (c) => (s += c)); res.on('end', () => resolve({ status: res.statusCode, body: s }));
  });
  req.on('error', reject); req.end(body);
});
const out = (k, v) => process.stdout.write(JSON.stringify({ k, v }) + '\\n');
out('agents', (await call('GET', '/v1/agents')).status);
out('keys', (await call('POST', '/v1/keys', Buffer.from('{"role":"admin"}'), 'application/json')).status);
const b = 'b' + Math.random().toString(16).slice(2);
const form = Buffer.concat([
  Buffer.from('--' + b + '\\r\\nContent-Disposition: form-data; name="manifest"\\r\\n\\r\\n' + readFileSync(manifestFile, 'utf8') + '\\r\\n'),
  Buffer.from('--' + b + '\\r\\nContent-Disposition: form-data; name="code"; filename="c.tgz"\\r\\n\\r\\n'),
  readFileSync(codeFile),
  Buffer.from('\\r\\n--' + b + '--\\r\\n'),
]);
out('deploy', (await call('POST', '/v1/agents', form, 'multipart/form-data; boundary=' + b)).status);
const ex = await call('POST', '/v1/agents/local-user/executions', Buffer.from('{"args":["hi"]}'), 'application/json');
out('execute', ex.status);
const id = JSON.parse(ex.body).id;
const stream = await call('GET', '/v1/executions/' + id + '/stream');
out('stream', stream.body);
out('execution', JSON.parse((await call('GET', '/v1/executions/' + id)).body));
`;

function sh(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('a non-root user through the unix socket', { timeout: 180_000 }, () => {
  let unavailable: string | null = null;
  let d: ServerDirs;
  let server: RunningServer | undefined;
  let createdGroup = false;
  const member = `aegis-it-${randomBytes(3).toString('hex')}`;
  const outsider = `aegis-ix-${randomBytes(3).toString('hex')}`;

  before(async () => {
    unavailable = await sandboxUnavailable();
    if (unavailable === null)
      try {
        await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
      } catch (e) {
        unavailable = `python:3.11 image missing: ${(e as Error).message}`;
      }
    if (process.getuid?.() !== 0) unavailable ??= 'needs root (creates a user)';
    if (unavailable !== null) return;
    if ((await groupGid('aegis')) === undefined) {
      assert.equal(sh('groupadd', ['--system', 'aegis']).status, 0);
      createdGroup = true;
    }
    assert.equal(sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', 'aegis', member]).status, 0);
    assert.equal(sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', outsider]).status, 0);
    d = serverDirs('aegis-server-user');
    server = await startServer(d);
    writeFileSync(join(d.work, 'client.mjs'), CLIENT, { mode: 0o644 });
    writeFileSync(join(d.work, 'agent.yaml'), agentManifest('local-user'), { mode: 0o644 });
    writeFileSync(join(d.work, 'code.tgz'), await codeArchive({ 'run.sh': 'echo "local:$1"; id -u\n' }), { mode: 0o644 });
    chmodSync(d.work, 0o755);
  });
  after(async () => {
    await server?.stop();
    if (d !== undefined) removeDirs(d);
    sh('userdel', [member]);
    sh('userdel', [outsider]);
    if (createdGroup) sh('groupdel', ['aegis']);
  });

  it('the socket is root:aegis 0660', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const st = statSync(server!.socket);
    assert.equal(st.mode & 0o777, 0o660);
    assert.deepEqual([st.uid, st.gid], [0, await groupGid('aegis')]);
  });

  it('a member of group aegis deploys and executes its agent without a key; keys stay admin-only (403)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = sh('runuser', [
      '-u',
      member,
      '--',
      process.execPath,
      join(d.work, 'client.mjs'),
      server!.socket,
      join(d.work, 'agent.yaml'),
      join(d.work, 'code.tgz'),
    ]);
    assert.equal(r.status, 0, r.stderr);
    const got = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { k: string; v: unknown })
        .map((x) => [x.k, x.v]),
    );
    assert.equal(got['agents'], 200);
    assert.equal(got['keys'], 403);
    assert.equal(got['deploy'], 201);
    assert.equal(got['execute'], 201);
    assert.match(String(got['stream']), /event: stdout\nid: \d+\ndata: \{"data":"local:hi\\n/);
    const e = got['execution'] as { status: string; exitCode: number; createdBy: string };
    assert.deepEqual([e.status, e.exitCode], ['exited', 0]);
    const uid = Number(sh('id', ['-u', member]).stdout.trim());
    assert.equal(e.createdBy, `local:${uid}`);
    // root (admin through the socket) sees the member's agent as the member's own.
    const admin = new CheckedApi({ socketPath: server!.socket }, server!.api.doc);
    const a = await admin.call('GET', '/v1/agents/local-user');
    assert.equal((a.json as { createdBy: string }).createdBy, `local:${uid}`);
  });

  it('a user outside group aegis cannot connect to the socket', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = sh('runuser', [
      '-u',
      outsider,
      '--',
      process.execPath,
      join(d.work, 'client.mjs'),
      server!.socket,
      join(d.work, 'agent.yaml'),
      join(d.work, 'code.tgz'),
    ]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /EACCES/);
  });
});

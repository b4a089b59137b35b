/**
 * `aegis run --isolation docker` against an engine reached over tcp:// with TLS, chosen by a
 * Docker context (DOCKER_CONFIG + DOCKER_CONTEXT), as the Docker CLI writes it. The engine here
 * listens on its unix socket only, so the test starts a TLS-terminating proxy to it (mutual TLS:
 * the proxy asks for AEGIS's client certificate), and nothing of the shared engine changes.
 * A context whose CA did not sign the engine's certificate is refused: the engine is never used.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer, type Server } from 'node:tls';
import { DEFAULT_DOCKER_SOCKET } from '../../src/sandbox/docker/host.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { makeServerPki } from '../../src/test-support/tls.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

/** A client certificate signed by the CA in `dir` (ca.pem, ca.key). */
function clientCert(dir: string): { cert: string; key: string } {
  const p = (f: string): string => join(dir, f);
  const openssl = (args: string[]): void => void execFileSync('/usr/bin/openssl', args, { stdio: 'pipe', timeout: 30_000 });
  openssl([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('client.key'),
    '-out',
    p('client.csr'),
    '-subj',
    '/CN=aegis',
  ]);
  writeFileSync(p('client.cnf'), 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  openssl([
    'x509',
    '-req',
    '-in',
    p('client.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-out',
    p('client.pem'),
    '-days',
    '2',
    '-extfile',
    p('client.cnf'),
  ]);
  return { cert: p('client.pem'), key: p('client.key') };
}

/** A Docker CLI configuration folder with context `name` -> `host`, and its TLS folder. */
function dockerConfig(dir: string, name: string, host: string, tls: { ca: string; cert: string; key: string }): void {
  const digest = createHash('sha256').update(name).digest('hex');
  mkdirSync(join(dir, 'contexts', 'meta', digest), { recursive: true });
  writeFileSync(
    join(dir, 'contexts', 'meta', digest, 'meta.json'),
    JSON.stringify({ Name: name, Metadata: {}, Endpoints: { docker: { Host: host, SkipTLSVerify: false } } }),
  );
  const t = join(dir, 'contexts', 'tls', digest, 'docker');
  mkdirSync(t, { recursive: true });
  copyFileSync(tls.ca, join(t, 'ca.pem'));
  copyFileSync(tls.cert, join(t, 'cert.pem'));
  copyFileSync(tls.key, join(t, 'key.pem'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: {}, currentContext: name }));
}

function aegis(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [AEGIS_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => void (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe('docker engine over tcp:// with TLS, from a Docker context', { timeout: 240_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), 'aegis-docker-tls-'));
  const home = join(work, 'home');
  let proxy: Server;
  let port = 0;
  let sessions = 0;
  const open = new Set<Socket>();
  let unavailable: string | null = null;
  let manifest = '';

  before(async () => {
    unavailable = await sandboxUnavailable('docker');
    if (unavailable !== null) return;
    mkdirSync(home);
    const pkiDir = join(work, 'pki');
    const rogueDir = join(work, 'rogue');
    mkdirSync(pkiDir);
    mkdirSync(rogueDir);
    const pki = makeServerPki(pkiDir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    makeServerPki(rogueDir, 'localhost', ['DNS:localhost']);
    const client = clientCert(pkiDir);
    // Half-open as the engine's own TLS listener (Go's crypto/tls): the end of the agent's stdin
    // (close_notify) must not end the container's output.
    proxy = createServer(
      { cert: pki.cert, key: pki.key, ca: pki.ca, requestCert: true, rejectUnauthorized: true, allowHalfOpen: true },
      (s) => {
        sessions++;
        const engine = netConnect(DEFAULT_DOCKER_SOCKET);
        open.add(s).add(engine);
        s.pipe(engine).pipe(s);
        s.on('error', () => engine.destroy());
        engine.on('error', () => s.destroy());
      },
    );
    proxy.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    port = (proxy.address() as { port: number }).port;
    dockerConfig(join(work, 'good'), 'aegis-tls', `tcp://localhost:${port}`, { ca: pki.caFile, ...client });
    dockerConfig(join(work, 'rogue-config'), 'aegis-tls', `tcp://localhost:${port}`, { ca: join(rogueDir, 'ca.pem'), ...client });
    const agent = join(work, 'agent');
    mkdirSync(agent);
    chmodSync(work, 0o755);
    chmodSync(agent, 0o755);
    manifest = join(agent, 'agent.yaml');
    writeFileSync(
      manifest,
      'version: "1.0"\nagent:\n  name: docker-tls\n  runtime: "python:3.11"\n  entrypoint: ["python3", "-c", "print(\'hello over tls\')"]\n',
    );
  });
  after(async () => {
    proxy?.close();
    for (const c of open) c.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  it("runs the agent on the context's engine, through the verified TLS endpoint", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const before = sessions;
    const r = await aegis(['run', manifest, '--isolation', 'docker'], { AEGIS_HOME: home, DOCKER_CONFIG: join(work, 'good') });
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^hello over tls$/m);
    assert.ok(sessions > before, 'the engine was reached through the TLS proxy');
  });

  it("refuses an engine whose certificate the context's CA did not sign (no session, the agent never runs)", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const before = sessions;
    const r = await aegis(['run', manifest, '--isolation', 'docker'], { AEGIS_HOME: home, DOCKER_CONFIG: join(work, 'rogue-config') });
    assert.notEqual(r.code, 0, r.out + r.err);
    assert.doesNotMatch(r.out, /hello over tls/);
    assert.equal(sessions, before, 'no TLS session was established');
  });

  it('the positive control: the rogue CA file is a real CA, only not the one that signed the engine', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const rogue = readFileSync(join(work, 'rogue', 'ca.pem'), 'utf8');
    const good = readFileSync(join(work, 'pki', 'ca.pem'), 'utf8');
    assert.match(rogue, /BEGIN CERTIFICATE/);
    assert.notEqual(rogue, good);
  });
});

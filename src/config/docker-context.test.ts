import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { resolveDockerEndpoint } from './docker-context.js';
import { ConfigError } from './errors.js';
import { parseConfig, readTextFile } from './index.js';

// A Docker CLI configuration folder as `docker context create` writes it, in a temp dir.
const root = mkdtempSync(join(tmpdir(), 'aegis-docker-ctx-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

function dockerConfig(o: {
  current?: string;
  contexts?: Record<string, { host: string; skipTls?: boolean; tls?: readonly string[] }>;
}): string {
  const dir = join(root, `c${n++}`);
  mkdirSync(dir, { recursive: true });
  if (o.current !== undefined) writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: {}, currentContext: o.current }));
  for (const [name, c] of Object.entries(o.contexts ?? {})) {
    const digest = createHash('sha256').update(name).digest('hex');
    mkdirSync(join(dir, 'contexts', 'meta', digest), { recursive: true });
    writeFileSync(
      join(dir, 'contexts', 'meta', digest, 'meta.json'),
      JSON.stringify({ Name: name, Metadata: {}, Endpoints: { docker: { Host: c.host, SkipTLSVerify: c.skipTls ?? false } } }),
    );
    if (c.tls) {
      const tls = join(dir, 'contexts', 'tls', digest, 'docker');
      mkdirSync(tls, { recursive: true });
      for (const f of c.tls) writeFileSync(join(tls, f), `-----BEGIN ${f}-----\n`);
    }
  }
  return dir;
}

const h = { homedir: '/nonexistent-home', readText: readTextFile };
const tlsDir = (dir: string, name: string) => join(dir, 'contexts', 'tls', createHash('sha256').update(name).digest('hex'), 'docker');

describe('Docker engine endpoint (DOCKER_HOST, contexts)', () => {
  it("uses the CLI's current context (config.json currentContext -> meta.json Endpoints.docker.Host)", () => {
    const dir = dockerConfig({ current: 'colima', contexts: { colima: { host: 'unix:///home/me/.colima/default/docker.sock' } } });
    assert.deepEqual(resolveDockerEndpoint({ DOCKER_CONFIG: dir }, h), {
      host: 'unix:///home/me/.colima/default/docker.sock',
      tls: undefined,
      context: 'colima',
    });
  });
  it('DOCKER_CONTEXT wins over the current context, DOCKER_HOST over both', () => {
    const dir = dockerConfig({
      current: 'a',
      contexts: { a: { host: 'unix:///run/a.sock' }, b: { host: 'unix:///run/b.sock' } },
    });
    assert.equal(resolveDockerEndpoint({ DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'b' }, h).host, 'unix:///run/b.sock');
    assert.deepEqual(resolveDockerEndpoint({ DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'b', DOCKER_HOST: 'unix:///run/c.sock' }, h), {
      host: 'unix:///run/c.sock',
      tls: undefined,
      context: undefined,
    });
  });
  it('context default, no config.json, or no currentContext: the default socket', () => {
    const dir = dockerConfig({ current: 'default' });
    for (const env of [{ DOCKER_CONFIG: dir }, { DOCKER_CONFIG: join(root, 'none') }, { DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'default' }])
      assert.deepEqual(resolveDockerEndpoint(env, h), { host: undefined, tls: undefined, context: undefined });
    // ~/.docker by default (the home here has none).
    assert.equal(resolveDockerEndpoint({}, h).host, undefined);
  });
  it("a tcp:// context with its TLS folder: TLS with the context's ca, cert and key", () => {
    const dir = dockerConfig({
      current: 'remote',
      contexts: { remote: { host: 'tcp://engine.example:2376', tls: ['ca.pem', 'cert.pem', 'key.pem'] } },
    });
    const t = tlsDir(dir, 'remote');
    assert.deepEqual(resolveDockerEndpoint({ DOCKER_CONFIG: dir }, h), {
      host: 'tcp://engine.example:2376',
      tls: { ca: join(t, 'ca.pem'), cert: join(t, 'cert.pem'), key: join(t, 'key.pem') },
      context: 'remote',
    });
  });
  it('DOCKER_TLS_VERIFY / DOCKER_CERT_PATH: TLS with the files of DOCKER_CERT_PATH (default DOCKER_CONFIG)', () => {
    const certs = join(root, 'certs');
    mkdirSync(certs, { recursive: true });
    for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(join(certs, f), 'x');
    const want = { ca: join(certs, 'ca.pem'), cert: join(certs, 'cert.pem'), key: join(certs, 'key.pem') };
    assert.deepEqual(
      resolveDockerEndpoint({ DOCKER_HOST: 'tcp://10.0.0.5:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs }, h).tls,
      want,
    );
    assert.deepEqual(
      resolveDockerEndpoint({ DOCKER_HOST: 'tcp://10.0.0.5:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CONFIG: certs }, h).tls,
      want,
    );
    // Plain tcp:// on loopback only (an engine over the network must be verified).
    for (const ok of ['tcp://127.0.0.1:2375', 'tcp://localhost:2375', 'tcp://LOCALHOST:2375', 'tcp://[::1]:2375'])
      assert.equal(resolveDockerEndpoint({ DOCKER_HOST: ok }, h).tls, undefined, ok);
    for (const bad of [
      'tcp://10.0.0.5:2375',
      'tcp://docker.example.com:2375',
      'tcp://[fd00::1]:2375',
      'tcp://127.0.0.1.evil.com:2375',
      'tcp://a:b:2375',
    ])
      assert.throws(() => resolveDockerEndpoint({ DOCKER_HOST: bad }, h), hasCode(ConfigError, 'config.invalid'), bad);
  });

  describe('refused (config.invalid)', () => {
    // Each input is invalid for one reason (tests assert the code, never the message).
    const refused = (env: Record<string, string>) =>
      assert.throws(() => resolveDockerEndpoint(env, h), hasCode(ConfigError, 'config.invalid'));
    it('when the context does not exist', () => refused({ DOCKER_CONFIG: dockerConfig({ current: 'gone' }) }));
    it('when the context skips TLS verification', () =>
      refused({
        DOCKER_CONFIG: dockerConfig({
          current: 'x',
          contexts: { x: { host: 'tcp://h:2376', skipTls: true, tls: ['ca.pem', 'cert.pem', 'key.pem'] } },
        }),
      }));
    it('when the TLS folder is partial', () =>
      refused({ DOCKER_CONFIG: dockerConfig({ current: 'x', contexts: { x: { host: 'tcp://h:2376', tls: ['ca.pem'] } } }) }));
    it('an ssh:// engine (the message says how to forward its socket)', () => {
      refused({ DOCKER_CONFIG: dockerConfig({ current: 's', contexts: { s: { host: 'ssh://me@build-box' } } }) });
      refused({ DOCKER_HOST: 'ssh://me@build-box' });
    });
    it('DOCKER_TLS_VERIFY without the files, or with a unix socket', () => {
      refused({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: join(root, 'no-certs') });
      refused({ DOCKER_HOST: 'unix:///var/run/docker.sock', DOCKER_TLS_VERIFY: '1' });
    });
    it('a config.json or meta.json that is not JSON, a relative DOCKER_CONFIG', () => {
      const dir = dockerConfig({});
      writeFileSync(join(dir, 'config.json'), '{not json');
      refused({ DOCKER_CONFIG: dir });
      refused({ DOCKER_CONFIG: 'relative/dir' });
    });
  });

  it('parseConfig carries the endpoint into AegisConfig (dockerHost, dockerTls, dockerContext)', () => {
    const dir = dockerConfig({
      current: 'remote',
      contexts: { remote: { host: 'tcp://engine.example:2376', tls: ['ca.pem', 'cert.pem', 'key.pem'] } },
    });
    const c = parseConfig(
      { DOCKER_CONFIG: dir },
      { homedir: '/home/op', operator: { uid: 0, name: 'root' }, isDirectory: () => true, readText: readTextFile },
    );
    assert.equal(c.dockerHost, 'tcp://engine.example:2376');
    assert.equal(c.dockerContext, 'remote');
    assert.equal(c.dockerTls?.ca, join(tlsDir(dir, 'remote'), 'ca.pem'));
  });

  it("a broken current context refuses docker runs only; a broken context named by DOCKER_CONTEXT is the command's error", () => {
    // ~/.docker as the CLI left it: the current context is an ssh:// engine AEGIS does not take.
    const home = join(root, `home${n++}`);
    const dir = dockerConfig({ current: 's', contexts: { s: { host: 'ssh://me@build-box' } } });
    mkdirSync(home);
    renameSync(dir, join(home, '.docker'));
    const hostFacts = { homedir: home, operator: { uid: 0, name: 'root' }, isDirectory: () => true, readText: readTextFile };
    const c = parseConfig({}, hostFacts);
    assert.equal(c.dockerHost, undefined);
    assert.match(c.dockerRefused ?? '', /ssh/);
    assert.throws(() => parseConfig({ DOCKER_CONTEXT: 's' }, hostFacts), hasCode(ConfigError, 'config.invalid'));
    assert.equal(parseConfig({ DOCKER_HOST: 'unix:///run/x.sock' }, hostFacts).dockerRefused, undefined);
  });
});

/**
 * AEGIS on a Docker engine that shares nothing with this host but its API: the isolated engine
 * of helpers/isolated-engine.ts (its own mount, PID and network namespaces; this repository,
 * AEGIS's state and image store, /tmp and /run/netns hidden from it), used with
 * AEGIS_DOCKER_ENGINE=remote. What Docker Desktop or an engine in a VM gives AEGIS, short of
 * another kernel: a stray bind of a host path, a host pid or a host cgroup path would show here
 * as an empty folder or a missing process, and the runs would fail.
 *  - the demo (scripts/demo-exfil.mjs --isolation docker): the exfiltration attempts refused and
 *    audited, the database and API agent, the secret agent (a TLS-terminated call: the execution
 *    CA reaches the agent through the run's own image);
 *  - an rw volume written by the agent comes back to its host folder;
 *  - nothing of the runs is left in that engine.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { engineClient } from '../../src/sandbox/docker/engine.js';
import { LABEL_RUN } from '../../src/sandbox/docker/options.js';
import { REPO_ROOT } from '../../src/test-support/repo.js';
import { isolatedEngineUnavailable, startIsolatedEngine, type IsolatedEngine } from './helpers/isolated-engine.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

describe('docker: a remote engine that sees none of this host (isolated engine)', { timeout: 900_000 }, () => {
  let engine: IsolatedEngine | null = null;
  let unavailable: string | null = null;
  const home = mkdtempSync('/var/tmp/aegis-remote-home-');
  let env: NodeJS.ProcessEnv = {};

  before(async () => {
    unavailable = (await sandboxUnavailable('docker')) ?? isolatedEngineUnavailable();
    if (unavailable !== null) return;
    mkdirSync('/run/aegis', { recursive: true });
    mkdirSync('/run/netns', { recursive: true });
    mkdirSync('/var/lib/aegis', { recursive: true });
    engine = await startIsolatedEngine({ hide: [REPO_ROOT, home, tmpdir(), '/run/aegis', '/run/netns', '/var/lib/aegis'] });
    env = { ...process.env, AEGIS_HOME: home, DOCKER_HOST: engine.host, AEGIS_DOCKER_ENGINE: 'remote' };
  });
  after(async () => {
    try {
      await engine?.stop();
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('runs the demo: every exfiltration attempt refused and audited, the database agent, the secret agent over TLS', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'demo-exfil.mjs'), '--isolation', 'docker'], {
      cwd: REPO_ROOT,
      env,
      encoding: 'utf8',
      timeout: 600_000,
    });
    const all = `${r.stdout}\n${r.stderr}\n${engine?.logTail(2000) ?? ''}`;
    assert.equal(r.status, 0, all);
    assert.match(r.stdout, /^ALLOWED https:\/\/api\.openai\.com\/v1\/models: HTTP 200/m, all);
    assert.doesNotMatch(r.stdout, /^LEAKED/m);
    assert.equal((r.stdout.match(/^BLOCKED /gm) ?? []).length, 11, r.stdout);
    assert.match(r.stdout, /answers stored in the database: 2/);
    assert.match(r.stdout, /API call with the key: HTTP 200/);
    // The audit of the exfiltration run (the demo prints it): refusals by the gateway and the sandbox namespace.
    assert.match(r.stdout, /deny +net\.blocked/);
    assert.match(r.stdout, /deny +net\.dns/);
  });

  it("brings an rw volume's files back to the host folder", (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const out = join(home, 'out');
    mkdirSync(out);
    writeFileSync(join(out, 'before.txt'), 'kept\n');
    const r = spawnSync(
      process.execPath,
      [
        join(REPO_ROOT, 'bin', 'aegis.js'),
        'run',
        'examples/hello/agent.yaml',
        '--isolation',
        'docker',
        '--volume',
        `${out}:/data/outputs:rw`,
      ],
      { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 300_000 },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}\n${engine?.logTail(2000) ?? ''}`);
    assert.equal(readFileSync(join(out, 'hello.txt'), 'utf8').trim(), 'hello from the sandbox');
    assert.equal(readFileSync(join(out, 'before.txt'), 'utf8'), 'kept\n');
  });

  it('leaves no container, volume or per-run image in that engine', async (t) => {
    if (!requireOrSkip(t, unavailable) || engine === null) return;
    const docker = engineClient(engine.host);
    const containers = await docker.listContainers({ all: true, filters: { label: [LABEL_RUN] } });
    const volumes = await docker.listVolumes({ filters: { label: [LABEL_RUN] } });
    const images = await docker.listImages({ filters: { label: [LABEL_RUN] } });
    assert.deepEqual(
      containers.map((c) => c.Names.join(',')),
      [],
    );
    assert.deepEqual(
      (volumes.Volumes ?? []).map((v) => v.Name),
      [],
    );
    assert.deepEqual(
      images.map((i) => i.Id),
      [],
    );
    // Positive control: AEGIS's images were imported into that engine, through its API.
    assert.ok((await docker.listImages()).some((i) => (i.RepoTags ?? []).some((tag) => tag.startsWith('aegis-image:'))));
  });
});

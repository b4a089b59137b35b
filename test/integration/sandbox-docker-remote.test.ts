/**
 * The sandbox conformance suite on the Docker engine used as a REMOTE one
 * (AEGIS_DOCKER_ENGINE=remote: only its API; docs/sandbox.md "Docker"): the code directory and
 * volumes reach the container through the archive API, the limits are the container's own
 * HostConfig, the network goes through a gateway container. Forced here on the local engine; the
 * same run against an engine that cannot see this host's files is in docker-isolated-engine.
 * Then: the agent's container has no bind of a host path and no cgroup of AEGIS's, and nothing
 * of the runs is left in the engine.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { compilePolicy } from '../../src/manifest/compile.js';
import { parseManifestOrThrow } from '../../src/manifest/index.js';
import { resolveImage } from '../../src/images/index.js';
import { runSandbox } from '../../src/sandbox/run.js';
import { engineClient } from '../../src/sandbox/docker/engine.js';
import { useDockerEngine } from '../../src/sandbox/docker/host.js';
import { LABEL_OWNER_PID, LABEL_ROLE } from '../../src/sandbox/docker/options.js';
import { runConformance, requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

useDockerEngine('remote');

runConformance('docker', {
  skip: {
    'contains a fork bomb within the pids limit':
      "LIMITATION (remote engine): the pids limit holds (the engine's PidsLimit), but whether a fork hit it is known only from the engine's stats, sampled once a second; the bomb ends first",
    'joins a network namespace it is given (egress gateway hook)':
      "a remote engine cannot join a namespace of this host: its agents reach the network only through a gateway container that relays to the gateway's namespace (a bare namespace is refused: tested below; the gateway path by run-gateway.test.ts)",
  },
});

describe('docker (remote engine): what the engine is given', () => {
  it('no bind of a host path, no cgroup of AEGIS: engine volumes in their modes; the rw volume comes back', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const work = mkdtempSync('/var/tmp/aegis-docker-remote-');
    chmodSync(work, 0o755);
    try {
      const code = join(work, 'agent');
      const out = join(work, 'out');
      mkdirSync(code);
      mkdirSync(out);
      writeFileSync(join(out, 'before.txt'), 'from the host\n');
      writeFileSync(
        join(code, 'main.py'),
        [
          'import os, sys, time',
          'print("before", open("/data/out/before.txt").read().strip())',
          'open("/data/out/after.txt", "w").write("from the agent\\n")',
          'print("ready"); sys.stdout.flush()',
          'time.sleep(2)',
        ].join('\n'),
      );
      const manifest = [
        'version: "1.0"',
        'agent:',
        '  name: remote-probe',
        '  runtime: python:3.11',
        '  entrypoint: ["python3", "/agent/main.py"]',
        'permissions:',
        '  fs:',
        '    write: ["/data/out"]',
        '  execution_time: 30s',
        '  memory: 128MiB',
        '  cpu_quota: 0.5',
      ].join('\n');
      const policy = compilePolicy(parseManifestOrThrow(manifest, 'agent.yaml'));
      const docker = engineClient();
      let seen: { mounts: { Type?: string; Source?: string; Destination?: string; RW?: boolean }[]; host: Record<string, unknown> } | null =
        null;
      let stdout = '';
      let asked = false;
      let inspectError = '';
      const executionId = `aegis-remote-probe-${process.pid}`;
      const r = await runSandbox({
        executionId,
        policy,
        manifestDir: code,
        imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
        isolation: 'docker',
        volumes: [{ host: out, sandbox: '/data/out', mode: 'rw' }],
        stateDir: join(work, 'state'),
        stdout: (c) => {
          stdout += c.toString();
          // The agent's container is named after the execution; inspected once, while it sleeps.
          if (!asked && stdout.includes('ready')) {
            asked = true;
            void docker
              .getContainer(executionId)
              .inspect()
              .then(
                (i) => void (seen = { mounts: i.Mounts as never, host: i.HostConfig as never }),
                (err: unknown) => void (inspectError = String(err)),
              );
          }
        },
        stderr: 'ignore',
      });
      assert.equal(r.status, 'exited', JSON.stringify(r));
      assert.match(stdout, /^before from the host$/m);
      for (let i = 0; i < 50 && seen === null && inspectError === ''; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.ok(seen !== null, `the agent container was inspected while it ran ${inspectError}`);
      const s = seen as { mounts: { Type?: string; Source?: string; Destination?: string; RW?: boolean }[]; host: Record<string, unknown> };
      assert.deepEqual(
        s.mounts.filter((m) => m.Type === 'bind').map((m) => m.Source),
        [],
        'no host path is bound',
      );
      assert.deepEqual(
        s.mounts
          .filter((m) => m.Type === 'volume')
          .map((m) => [m.Destination, m.RW])
          .sort(),
        [
          ['/agent', false],
          ['/data/out', true],
        ],
      );
      assert.equal(s.host['CgroupParent'] ?? '', '');
      assert.deepEqual(
        [s.host['Memory'], s.host['MemorySwap'], s.host['PidsLimit'], s.host['CpuQuota'], s.host['CpuPeriod']],
        [128 * 1024 * 1024, 128 * 1024 * 1024, policy.limits.pids, 50_000, 100_000],
      );
      assert.equal(readFileSync(join(out, 'after.txt'), 'utf8'), 'from the agent\n', 'the rw volume was read back');
      assert.equal(readFileSync(join(out, 'before.txt'), 'utf8'), 'from the host\n');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('docker (remote engine): rw volumes the agent cannot turn against the operator', () => {
  const manifest = (entry: string[]): string =>
    [
      'version: "1.0"',
      'agent:',
      '  name: remote-volume',
      '  runtime: python:3.11',
      `  entrypoint: ${JSON.stringify(entry)}`,
      'permissions:',
      '  fs:',
      '    write: ["/data/out"]',
      '  execution_time: 60s',
      '  memory: 256MiB',
    ].join('\n');
  const setup = (): { work: string; out: string } => {
    const work = mkdtempSync('/var/tmp/aegis-docker-remote-');
    chmodSync(work, 0o755);
    const out = join(work, 'out');
    mkdirSync(out);
    writeFileSync(join(out, 'precious.txt'), "the operator's\n");
    return { work, out };
  };

  it('a keeper that dies during the run (its tmpfs gone): not read back, the folder kept, a warning', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const { work, out } = setup();
    try {
      const script = 'import time\nopen("/data/out/new.txt", "w").write("new")\nprint("ready", flush=True)\ntime.sleep(3)\n';
      const policy = compilePolicy(parseManifestOrThrow(manifest(['python3', '-c', script]), 'agent.yaml'));
      const docker = engineClient();
      let killed = false;
      const r = await runSandbox({
        policy,
        manifestDir: work,
        imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
        isolation: 'docker',
        volumes: [{ host: out, sandbox: '/data/out', mode: 'rw', sizeBytes: 16 * 1024 * 1024 }],
        stateDir: join(work, 'state'),
        stdout: (c) => {
          if (killed || !c.toString().includes('ready')) return;
          killed = true;
          void docker
            .listContainers({ filters: { label: [`${LABEL_ROLE}=keeper`, `${LABEL_OWNER_PID}=${process.pid}`] } })
            .then((l) => Promise.all(l.map((c) => docker.getContainer(c.Id).kill())));
        },
        stderr: 'ignore',
      });
      assert.ok(killed);
      assert.equal(r.status, 'exited', JSON.stringify(r));
      assert.ok(
        (r.warnings ?? []).some((w) => /keeper container .* stopped/.test(w)),
        `a warning says why: ${JSON.stringify(r.warnings)}`,
      );
      assert.deepEqual(readdirSync(out), ['precious.txt'], 'the folder keeps its contents from before the run');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('holds no more files than the staged filesystem can take back: the agent gets ENOSPC, what it wrote comes back', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const { work, out } = setup();
    try {
      const script = [
        'import os',
        'n = 0',
        'try:',
        '    while n < 100000:',
        '        open("/data/out/f%d" % n, "w").close()',
        '        n += 1',
        'except OSError as e:',
        '    print("errno", e.errno, n)',
      ].join('\n');
      const policy = compilePolicy(parseManifestOrThrow(manifest(['python3', '-c', script]), 'agent.yaml'));
      let stdout = '';
      const r = await runSandbox({
        policy,
        manifestDir: work,
        imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
        isolation: 'docker',
        // The smallest size: its staged ext4 has about 2048 inodes.
        volumes: [{ host: out, sandbox: '/data/out', mode: 'rw', sizeBytes: 8 * 1024 * 1024 }],
        stateDir: join(work, 'state'),
        stdout: (c) => void (stdout += c.toString()),
        stderr: 'ignore',
      });
      assert.equal(r.status, 'exited', JSON.stringify(r));
      const m = /errno (\d+) (\d+)/.exec(stdout);
      assert.ok(m, stdout);
      assert.equal(m[1], '28', 'ENOSPC: out of inodes');
      assert.ok(Number(m[2]) > 1000 && Number(m[2]) < 4096, `made ${m[2]} files`);
      assert.deepEqual(r.warnings ?? [], []);
      assert.equal(readdirSync(out).length, Number(m[2]) + 1, 'every file came back, and precious.txt');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('docker (remote engine): a namespace of this host', () => {
  it('is refused before the agent starts: a remote engine reaches the network only through its gateway container', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const ns = `aegis-remote-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    const work = mkdtempSync('/var/tmp/aegis-docker-remote-');
    chmodSync(work, 0o755);
    try {
      const policy = compilePolicy(
        parseManifestOrThrow('version: "1.0"\nagent:\n  name: ns-probe\n  runtime: python:3.11\n  entrypoint: ["true"]\n', 'agent.yaml'),
      );
      const r = await runSandbox({
        policy,
        manifestDir: work,
        imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
        isolation: 'docker',
        network: { kind: 'netns', path: `/run/netns/${ns}` },
        stateDir: join(work, 'state'),
        stdout: 'ignore',
        stderr: 'ignore',
      });
      assert.equal(r.status, 'failed_to_start');
      assert.equal(r.error?.code, 'sandbox.start_failed');
      assert.match(r.error?.message ?? '', /no eth0 address, default route or AEGIS table/);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('docker engine (remote) after the suite', () => {
  it('holds no container, volume or per-run image of the runs of this process', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const docker = engineClient();
    const mine = { label: [`${LABEL_OWNER_PID}=${process.pid}`] };
    const containers = await docker.listContainers({ all: true, filters: mine });
    const volumes = await docker.listVolumes({ filters: mine });
    const images = await docker.listImages({ filters: mine });
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
  });
});

/**
 * The sandbox conformance suite on the Docker engine (isolation: docker), then: nothing AEGIS
 * made for a run is left in the engine (containers, networks, volumes, images imported for one
 * run, carrying its run label). Store images stay imported (`aegis-image:<digest>`, a cache).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { resolveImage } from '../../src/images/index.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  engineClient,
  engineImage,
  IMAGE_REPO,
  ownerFacts,
  ownerHostId,
  removeRunContainers,
  sweepEngine,
} from '../../src/sandbox/docker/engine.js';
import { useDockerOwnerHostFile } from '../../src/sandbox/docker/host.js';
import { LABEL_OWNER_HOST, LABEL_OWNER_PID, LABEL_OWNER_START, LABEL_ROLE, LABEL_RUN } from '../../src/sandbox/docker/options.js';
import { runConformance, requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

runConformance('docker');

describe('docker engine sweep', () => {
  it("removes containers whose AEGIS owner is dead (or its pid reused), keeps a live owner's", async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const docker = engineClient();
    const rootfs = (await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' })).rootfs;
    const image = await engineImage(docker, rootfs, '/run/aegis');
    const dead = spawnSync('true').pid!; // exited: its pid names no live process (or another one)
    const me = ownerFacts();
    const make = (run: string, pid: number, start: string) =>
      docker.createContainer({
        Image: image,
        Entrypoint: ['true'],
        Labels: { [LABEL_RUN]: run, [LABEL_ROLE]: 'agent', [LABEL_OWNER_PID]: String(pid), [LABEL_OWNER_START]: start },
        HostConfig: { NetworkMode: 'none', LogConfig: { Type: 'none', Config: {} } },
      });
    const suffix = `${process.pid}-${Date.now()}`;
    const lost = await make(`aegis-sweep-dead-${suffix}`, dead, '1');
    const reused = await make(`aegis-sweep-reused-${suffix}`, me.pid, `${me.startTime}0`);
    const live = await make(`aegis-sweep-live-${suffix}`, me.pid, me.startTime);
    try {
      const swept = await sweepEngine(docker);
      assert.ok(swept.includes(`aegis-sweep-dead-${suffix}`), swept.join(' '));
      assert.ok(swept.includes(`aegis-sweep-reused-${suffix}`), swept.join(' '));
      assert.ok(!swept.includes(`aegis-sweep-live-${suffix}`));
      const left = (await docker.listContainers({ all: true, filters: { label: [LABEL_OWNER_PID] } })).filter((c) =>
        (c.Labels[LABEL_RUN] ?? '').endsWith(suffix),
      );
      assert.deepEqual(
        left.map((c) => c.Id),
        [live.id],
      );
      assert.ok(![lost.id, reused.id].some((id) => left.some((c) => c.Id === id)));
    } finally {
      for (const c of [lost, reused, live]) await c.remove({ force: true }).catch(() => undefined);
    }
  });
});

describe('docker engine sweep on a shared (remote) engine', () => {
  it("leaves another AEGIS host's objects alone (their pids mean nothing here), sweeps its own and unlabelled ones", async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const docker = engineClient();
    const rootfs = (await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' })).rootfs;
    const image = await engineImage(docker, rootfs, '/run/aegis');
    const home = mkdtempSync('/var/tmp/aegis-owner-host-');
    useDockerOwnerHostFile(join(home, 'docker-owner-host'));
    const mine = ownerHostId()!;
    const dead = spawnSync('true').pid!;
    const suffix = `${process.pid}-${Date.now()}`;
    const make = (run: string, host: string | undefined) =>
      docker.createContainer({
        Image: image,
        Entrypoint: ['true'],
        Labels: {
          [LABEL_RUN]: run,
          [LABEL_ROLE]: 'agent',
          [LABEL_OWNER_PID]: String(dead),
          [LABEL_OWNER_START]: '1',
          ...(host !== undefined ? { [LABEL_OWNER_HOST]: host } : {}),
        },
        HostConfig: { NetworkMode: 'none', LogConfig: { Type: 'none', Config: {} } },
      });
    const other = await make(`aegis-sweep-other-${suffix}`, 'f'.repeat(32));
    // A volume of that other host's run (a remote run's code or rw volume).
    const otherVolume = `aegis-sweep-other-vol-${suffix}`;
    await docker.createVolume({
      Name: otherVolume,
      Labels: {
        [LABEL_RUN]: `aegis-sweep-other-${suffix}`,
        [LABEL_OWNER_PID]: String(dead),
        [LABEL_OWNER_START]: '1',
        [LABEL_OWNER_HOST]: 'f'.repeat(32),
      },
    });
    const own = await make(`aegis-sweep-own-${suffix}`, mine);
    const old = await make(`aegis-sweep-unlabelled-${suffix}`, undefined);
    try {
      const shared = await sweepEngine(docker, true);
      assert.ok(shared.includes(`aegis-sweep-own-${suffix}`), shared.join(' '));
      assert.ok(shared.includes(`aegis-sweep-unlabelled-${suffix}`), shared.join(' '));
      assert.ok(!shared.includes(`aegis-sweep-other-${suffix}`), "another host's run is not this host's to sweep");
      assert.equal((await other.inspect()).Id, other.id);
      assert.equal((await docker.getVolume(otherVolume).inspect()).Name, otherVolume, 'and its volume is kept');
      // A local engine is this host's: every dead owner's objects go, whatever host id they carry.
      assert.ok((await sweepEngine(docker, false)).includes(`aegis-sweep-other-${suffix}`));
      await assert.rejects(docker.getVolume(otherVolume).inspect(), 'its volume went with it');
    } finally {
      useDockerOwnerHostFile(undefined);
      for (const c of [other, own, old]) await c.remove({ force: true }).catch(() => undefined);
      await docker
        .getVolume(otherVolume)
        .remove()
        .catch(() => undefined);
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('docker engine images', () => {
  it('does not run an image someone else put under the name AEGIS uses: imported again, and the name corrected', async (t) => {
    if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
    const docker = engineClient();
    const py = await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
    const hex = py.digest.replace(/^sha256:/, '');
    const genuine = await engineImage(docker, py.rootfs, '/run/aegis');
    // An impostor: another root filesystem, tagged with the python image's name (and label).
    const other = mkdtempSync('/var/tmp/aegis-impostor-');
    writeFileSync(join(other, 'marker'), 'not python');
    const run = `aegis-impostor-${process.pid}`;
    try {
      const impostor = await engineImage(docker, other, join(other, 'state'), run);
      assert.notEqual(impostor, genuine);
      await docker.getImage(impostor).tag({ repo: IMAGE_REPO, tag: hex });
      assert.equal((await docker.getImage(`${IMAGE_REPO}:${hex}`).inspect()).Id, impostor, 'the name was taken over');
      const used = await engineImage(docker, py.rootfs, '/run/aegis');
      assert.notEqual(used, impostor, 'the impostor is never used');
      const info = await docker.getImage(`${IMAGE_REPO}:${hex}`).inspect();
      assert.equal(info.Id, used, "the name is AEGIS's import again");
      assert.equal(info.RootFS?.Layers?.length, 1);
    } finally {
      await removeRunContainers(docker, run);
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describe('docker engine after the suite', () => {
  let unavailable: string | null = null;
  it('holds no container, network, volume or per-run image with an AEGIS run label', async (t) => {
    unavailable = await sandboxUnavailable('docker');
    if (!requireOrSkip(t, unavailable)) return;
    const docker = engineClient();
    const containers = await docker.listContainers({ all: true, filters: { label: [LABEL_RUN] } });
    const networks = await docker.listNetworks({ filters: { label: [LABEL_RUN] } });
    const volumes = await docker.listVolumes({ filters: { label: [LABEL_RUN] } });
    const images = await docker.listImages({ filters: { label: [LABEL_RUN] } });
    assert.deepEqual(
      images.map((i) => i.RepoTags),
      [],
    );
    assert.deepEqual(
      containers.map((c) => c.Names.join(',')),
      [],
    );
    assert.deepEqual(
      networks.map((n) => n.Name),
      [],
    );
    assert.deepEqual(
      (volumes.Volumes ?? []).map((v) => v.Name),
      [],
    );
    // Positive control: the engine answers and lists what it has.
    assert.ok(Array.isArray(await docker.listContainers({ all: true })));
  });
});

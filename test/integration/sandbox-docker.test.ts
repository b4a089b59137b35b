/**
 * The sandbox conformance suite on the Docker engine (isolation: docker), then: nothing AEGIS
 * made for a run is left in the engine (containers, networks, volumes, images imported for one
 * run, carrying its run label). Store images stay imported (`aegis-image:<digest>`, a cache).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineClient } from '../../src/sandbox/docker/engine.js';
import { LABEL_RUN } from '../../src/sandbox/docker/options.js';
import { runConformance, requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

runConformance('docker');

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

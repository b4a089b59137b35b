/**
 * `aegis doctor` on this real host (prepared by scripts/setup.sh), through the CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { importImage } from '../../src/images/import.js';
import { parseImageRef } from '../../src/images/ref.js';
import { defaultImagesDir } from '../../src/images/store.js';
import { removeTempDirs, tarOf, tempDir, writeOciLayout } from './images-support.js';

after(removeTempDirs);
const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'aegis.js');

interface Report {
  ok: boolean;
  checks: { id: string; status: string; summary: string; fix?: { kind: string; ref?: string } }[];
  fixes: { kind: string; ref?: string }[];
}

function doctor(env: NodeJS.ProcessEnv): { status: number | null; report: Report } {
  const r = spawnSync(process.execPath, [bin, 'doctor', '--json'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status: r.status, report: JSON.parse(r.stdout) as Report };
}

describe('aegis doctor --json', () => {
  it('reports this prepared host ready (runtimes, cgroups, crun hybrid fix, tools, default image)', () => {
    // The store this host is configured with ($AEGIS_IMAGES, else the default), not a literal path:
    // doctor must find the default image where `aegis run` would look for it.
    const store = defaultImagesDir(process.env);
    const { status, report } = doctor({});
    assert.deepEqual(report.checks.filter((c) => c.status === 'fail'), []);
    assert.equal(report.ok, true);
    assert.equal(status, 0);
    for (const id of ['runtime.crun', 'runtime.runc', 'runtime.runsc', 'cgroup.memory', 'cgroup.cpu', 'cgroup.pids', 'tools.nft', 'tools.ip', 'images.default']) {
      assert.ok(report.checks.some((c) => c.id === id && c.status === 'ok'), id);
    }
    const img = report.checks.find((c) => c.id === 'images.default');
    assert.ok(img?.summary.endsWith(` in ${store}`), `${img?.summary} names ${store}`);
  });

  it('with an empty image store: fails images.default and plans to build python:3.11 (exit 1)', () => {
    const { status, report } = doctor({ AEGIS_IMAGES: join(tempDir('images'), 'store') });
    assert.equal(status, 1);
    assert.equal(report.ok, false);
    const c = report.checks.find((x) => x.id === 'images.default');
    assert.equal(c?.status, 'fail');
    assert.deepEqual(report.fixes, [{ kind: 'build-image', ref: 'python:3.11' }]);
  });

  it('finds a python:3.11 image in a custom store (any image under that tag counts)', async () => {
    const store = tempDir('images');
    const oci = tempDir('oci');
    writeOciLayout(oci, [await tarOf([{ name: 'usr/bin/python3', content: '#!/bin/sh\n', mode: 0o755 }])]);
    const r = await importImage(oci, { imagesDir: store, tag: parseImageRef('python:3.11'), log: () => undefined });
    const { report } = doctor({ AEGIS_IMAGES: store });
    const c = report.checks.find((x) => x.id === 'images.default');
    assert.equal(c?.status, 'ok');
    assert.ok(c?.summary.includes(r.digest));
  });
});

/**
 * `aegis doctor` on this real host (prepared by scripts/setup.sh), through the CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { importImage } from '../../src/images/import.js';
import { parseImageRef } from '../../src/images/ref.js';
import { requireOrSkip } from './sandbox-conformance.js';
import { loadConfig } from '../../src/config/index.js';
import { removeTempDirs, tarOf, tempDir, writeOciLayout } from './images-support.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';

after(removeTempDirs);
const bin = AEGIS_BIN;

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
    const store = loadConfig(process.env).imagesDir;
    const { status, report } = doctor({});
    assert.deepEqual(
      report.checks.filter((c) => c.status === 'fail'),
      [],
    );
    assert.equal(report.ok, true);
    assert.equal(status, 0);
    for (const id of [
      'runtime.crun',
      'runtime.runc',
      'runtime.runsc',
      'cgroup.memory',
      'cgroup.cpu',
      'cgroup.pids',
      'tools.nft',
      'tools.ip',
      'images.default',
    ]) {
      assert.ok(
        report.checks.some((c) => c.id === id && c.status === 'ok'),
        id,
      );
    }
    const img = report.checks.find((c) => c.id === 'images.default');
    assert.ok(img?.summary.endsWith(` in ${store}`), `${img?.summary} names ${store}`);
  });

  it('reports the microVM mode: QEMU, the guest, whether KVM runs a stock guest (probed), and what a run would use', () => {
    const emulated = doctor({ AEGIS_MICROVM_ALLOW_EMULATION: '1' }).report;
    const strict = doctor({ AEGIS_MICROVM_ALLOW_EMULATION: '0' }).report;
    const get = (r: Report, id: string) => r.checks.find((c) => c.id === id);
    // scripts/setup.sh installs QEMU and builds the guest.
    assert.equal(get(strict, 'microvm.qemu')?.status, 'ok', get(strict, 'microvm.qemu')?.summary);
    assert.equal(get(strict, 'microvm.guest')?.status, 'ok', get(strict, 'microvm.guest')?.summary);
    const kvm = get(strict, 'microvm.kvm');
    assert.ok(kvm !== undefined);
    // The probe's answer decides the mode: KVM where it boots a stock guest, else runs are refused.
    if (kvm.status === 'ok') assert.match(get(strict, 'microvm.mode')?.summary ?? '', /runs use KVM/);
    else {
      assert.match(kvm.summary, /no usable KVM|did not (boot|reach its init)/);
      assert.equal(get(strict, 'microvm.mode')?.status, 'warn');
      assert.match(get(strict, 'microvm.mode')?.summary ?? '', /refused before start/);
    }
    assert.match(get(emulated, 'microvm.mode')?.summary ?? '', /software emulation/);
    assert.equal(get(emulated, 'microvm.kvm')?.status, kvm.status, 'the same probe answer either way');
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

describe('aegis doctor as a non-root user (setpriv to nobody)', () => {
  const NOBODY = 65534;
  const home = tempDir('nobody-home');
  mkdirSync(join(home, 'aegis'), { mode: 0o700 });
  chownSync(join(home, 'aegis'), NOBODY, NOBODY);
  chownSync(home, NOBODY, NOBODY);
  const asNobody = (args: string[]) =>
    spawnSync('setpriv', ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', process.execPath, bin, ...args], {
      env: { PATH: process.env['PATH'] ?? '', HOME: home, AEGIS_HOME: join(home, 'aegis'), AEGIS_IMAGES: '/var/lib/aegis/images' },
      encoding: 'utf8',
      cwd: home,
    });
  const unavailable = (): string | null => {
    const r = asNobody(['--version']);
    return r.status === 0 ? null : `uid ${NOBODY} cannot run ${bin} (${r.error?.message ?? r.stderr.trim()})`;
  };

  it('regression: does not say "host ready" or exit 0; says what works as this user and what needs root', (t) => {
    if (!requireOrSkip(t, unavailable())) return;
    const r = asNobody(['doctor']);
    assert.doesNotMatch(r.stdout, /^host ready\n/mu);
    assert.match(r.stdout, /^FAIL {2}host\.root +running as uid 65534, not root/mu);
    assert.match(
      r.stdout,
      /you are not root: aegis validate, aegis policy test\|show, .* work as this user; aegis run, .*aegis doctor --fix need root\n$/u,
    );
    assert.equal(r.status, 3, r.stdout + r.stderr);
    const j = asNobody(['doctor', '--json']);
    const report = JSON.parse(j.stdout) as Report & { root: boolean; needRoot: string[]; asThisUser: string[] };
    assert.equal(report.ok, false);
    assert.equal(report.root, false);
    assert.ok(report.needRoot.includes('aegis run'));
    assert.ok(report.asThisUser.includes('aegis validate'));
    assert.equal(j.status, 3);
  });

  it('refuses --fix before changing anything (exit 125)', (t) => {
    if (!requireOrSkip(t, unavailable())) return;
    const r = asNobody(['doctor', '--fix']);
    assert.equal(r.status, 125);
    assert.match(r.stderr, /--fix needs root/u);
    assert.equal(r.stdout, '');
  });

  it('what it says works does work as this user', (t) => {
    if (!requireOrSkip(t, unavailable())) return;
    const manifest = join(import.meta.dirname, '..', '..', '..', 'examples', 'hello', 'agent.yaml');
    assert.equal(asNobody(['validate', manifest]).status, 0);
    assert.equal(asNobody(['policy', 'test', manifest, 'fs', 'write', '/tmp/x']).status, 0);
    assert.equal(asNobody(['image', 'ls']).status, 0);
    assert.equal(asNobody(['run', manifest, '--dry-run']).status, 0, 'a dry run only compiles and prints');
  });
  it('aegis run as this user says at once that it needs root (exit 125), before anything fails on a permission', (t) => {
    if (!requireOrSkip(t, unavailable())) return;
    const manifest = join(import.meta.dirname, '..', '..', '..', 'examples', 'hello', 'agent.yaml');
    const r = asNobody(['run', manifest]);
    assert.equal(r.status, 125, r.stderr);
    assert.match(r.stderr, /running an agent needs root/);
    assert.equal(r.stdout, '');
  });
});

/**
 * Runtimes and supply chain (issue 14), against the real CLI:
 * - `aegis run` of a runtime that is not in the store names the exact command, and that command
 *   builds it (node:18, in a throw-away store: the one debootstrap build of this file);
 * - `aegis image tag`;
 * - `aegis image build --from python:3.11 --spec image.yaml` with Debian packages and Python
 *   requirements from a local wheel folder (PyPI is not reachable here), hashes enforced;
 * - `aegis image sbom` (SPDX 2.3 / CycloneDX 1.5) and `aegis image scan` (offline OSV folder).
 * The derived image goes into the host store (on top of python:3.11 from scripts/setup.sh)
 * under a tag of its own, removed afterwards.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveImage } from '../../src/images/index.js';
import { findExecutable } from '../../src/host/exec.js';
import { driverFor } from '../../src/sandbox/drivers/index.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { ensureHugetlbMount, requireOrSkip } from './sandbox-conformance.js';
import { writeWheel } from './wheel-support.js';

const HOST_STORE = '/var/lib/aegis/images';

describe('runtimes and supply chain (aegis image build/tag/sbom/scan)', { timeout: 900_000 }, () => {
  let work = '';
  let unavailable: string | null = null;
  const TAG = `aegis-supply-test:p${process.pid}`;
  let built = false;

  const aegis = (args: string[], env: Record<string, string> = {}, timeoutMs = 300_000) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const home = join(work, 'home');
      mkdirSync(home, { recursive: true });
      const p = spawn(process.execPath, [AEGIS_BIN, ...args], { env: { ...process.env, AEGIS_HOME: home, ...env } });
      let out = '';
      let err = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (err += c.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out, err });
      });
    });

  const manifest = (dir: string, runtime: string, entrypoint: string[]) => {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    chmodSync(dir, 0o755);
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `version: "1.0"\nagent:\n  name: supply-probe\n  runtime: "${runtime}"\n  entrypoint: ${JSON.stringify(entrypoint)}\n  isolation: crun\n`,
    );
    return file;
  };

  before(async () => {
    if ((process.geteuid?.() ?? 0) !== 0) unavailable = 'image builds need root';
    for (const tool of ['debootstrap', 'chroot', 'dpkg']) if (findExecutable(tool) === null) unavailable ??= `${tool} is not installed`;
    try {
      ensureHugetlbMount();
    } catch (e) {
      unavailable ??= `cannot mount the hugetlb hierarchy: ${(e as Error).message}`;
    }
    unavailable ??= driverFor('crun').unavailableReason();
    try {
      await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' }, { imagesDir: HOST_STORE });
    } catch (e) {
      unavailable ??= `python:3.11 image missing (scripts/setup.sh builds it): ${(e as Error).message}`;
    }
    work = mkdtempSync('/var/tmp/aegis-supply-');
    chmodSync(work, 0o755);
  });

  after(async () => {
    if (built) {
      const r = await aegis(['image', 'rm', TAG]);
      assert.equal(r.code, 0, r.err);
    }
    rmSync(work, { recursive: true, force: true });
  });

  let nodeStore = '';

  describe('a runtime that is not in the store', () => {
    it('aegis run names the exact command; that command builds it; then the run works (node:18)', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const store = join(work, 'images');
      mkdirSync(store, { mode: 0o755 });
      chmodSync(store, 0o755);
      // Reuse downloaded .debs when the host has them (speed only: without them it downloads).
      if (existsSync(join(HOST_STORE, 'cache/debootstrap'))) {
        mkdirSync(join(store, 'cache'), { mode: 0o700 });
        cpSync(join(HOST_STORE, 'cache/debootstrap'), join(store, 'cache/debootstrap'), { recursive: true });
      }
      const env = { AEGIS_IMAGES: store };
      const file = manifest(join(work, 'node-agent'), 'node:18', ['node', '-e', 'console.log("node", process.versions.node)']);
      const first = await aegis(['run', file, '--state-dir', join(work, 'state')], env);
      assert.notEqual(first.code, 0);
      const cmd = /`(aegis image build [^`]+)`/.exec(first.err)?.[1];
      assert.equal(cmd, 'aegis image build node:18', first.err);
      const b = await aegis(cmd!.split(' ').slice(1), env, 600_000);
      assert.equal(b.code, 0, b.err);
      assert.match(b.out, /^node:18@sha256:[0-9a-f]{64}\n$/);
      const second = await aegis(['run', file, '--state-dir', join(work, 'state')], env);
      assert.equal(second.code, 0, second.err);
      nodeStore = store;
      assert.match(second.out, /^node 18\.\d+\.\d+\n$/);

      // aegis image tag: another name for the same image, usable as a runtime.
      const tg = await aegis(['image', 'tag', 'node:18', 'acme/node:prod', '--json'], env);
      assert.equal(tg.code, 0, tg.err);
      const ls = JSON.parse((await aegis(['image', 'ls', '--json'], env)).out) as { images: Array<{ digest: string; tags: string[] }> };
      assert.deepEqual(
        ls.images.map((i) => i.tags),
        [['acme/node:prod', 'node:18']],
      );
      const third = await aegis(
        [
          'run',
          manifest(join(work, 'node-agent2'), 'acme/node:prod', ['node', '-e', 'console.log(1+1)']),
          '--state-dir',
          join(work, 'state'),
        ],
        env,
      );
      assert.equal(third.code, 0, third.err);
      assert.equal(third.out, '2\n');
      const missing = await aegis(['image', 'tag', 'nope:1', 'x:1', '--json'], env);
      assert.equal(missing.code, 1);
      assert.equal((JSON.parse(missing.out) as { code: string }).code, 'image.not_found');
      // A runtime with no recipe: the message names the import under that tag.
      const none = await aegis(
        ['run', manifest(join(work, 'other-agent'), 'acme/tool:1', ['true']), '--state-dir', join(work, 'state')],
        env,
      );
      assert.notEqual(none.code, 0);
      assert.match(none.err, /`aegis image import <oci-layout-or-docker-save\.tar> --tag acme\/tool:1`/);
    });
  });

  describe('npm dependencies from a lockfile (--from node:18 --npm)', () => {
    // is-number 7.0.0 as the npm registry publishes it (integrity from `npm view is-number@7.0.0 dist.integrity`).
    const INTEGRITY = 'sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==';
    const project = (dir: string, integrity: string) => {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'agent', version: '1.0.0', dependencies: { 'is-number': '7.0.0' } }));
      writeFileSync(
        join(dir, 'package-lock.json'),
        JSON.stringify({
          name: 'agent',
          version: '1.0.0',
          lockfileVersion: 3,
          requires: true,
          packages: {
            '': { name: 'agent', version: '1.0.0', dependencies: { 'is-number': '7.0.0' } },
            'node_modules/is-number': {
              version: '7.0.0',
              resolved: 'https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz',
              integrity,
            },
          },
        }),
      );
      return join(dir, 'package-lock.json');
    };

    it('installs the lockfile into /node_modules (require and SBOM see it); a wrong integrity fails the build', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      assert.ok(nodeStore, 'node:18 was built by the test above');
      const env = { AEGIS_IMAGES: nodeStore };
      const badHash = INTEGRITY.replace('41Cif', '41Cig');
      const bad = await aegis(
        ['image', 'build', 'app-node:bad', '--from', 'node:18', '--npm', project(join(work, 'npm-bad'), badHash)],
        env,
      );
      assert.equal(bad.code, 1, bad.err);
      assert.match(bad.err, /image\.build_failed/);
      const ok = await aegis(['image', 'build', 'app-node:1', '--from', 'node:18', '--npm', project(join(work, 'npm-ok'), INTEGRITY)], env);
      assert.equal(ok.code, 0, ok.err);
      const file = manifest(join(work, 'npm-agent'), 'app-node:1', [
        'node',
        '-e',
        'console.log(require("is-number")(5), require("is-number")("x"))',
      ]);
      const run = await aegis(['run', file, '--state-dir', join(work, 'state')], env);
      assert.equal(run.code, 0, run.err);
      assert.equal(run.out, 'true false\n');
      const sbom = await aegis(['image', 'sbom', 'app-node:1', '--format', 'cyclonedx'], env);
      assert.equal(sbom.code, 0, sbom.err);
      const purls = (JSON.parse(sbom.out) as { components: Array<{ purl: string }> }).components.map((c) => c.purl);
      assert.ok(purls.includes('pkg:npm/is-number@7.0.0'));
      assert.ok(purls.some((p) => p.startsWith('pkg:deb/debian/nodejs@18.')));
    });
  });

  describe('an image with dependencies (--from python:3.11, apt and pip from a local wheel folder)', () => {
    let specDir = '';
    let wheelHash = '';

    it('refuses a wheel whose hash is not the pinned one (--require-hashes) and stores nothing', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      specDir = join(work, 'spec');
      mkdirSync(join(specDir, 'wheels'), { recursive: true });
      wheelHash = writeWheel(join(specDir, 'wheels'), 'aegisdemo', '1.0', 'VALUE = 42\n').sha256;
      writeFileSync(join(specDir, 'bad.txt'), `aegisdemo==1.0 --hash=sha256:${'0'.repeat(64)}\n`);
      const r = await aegis([
        'image',
        'build',
        TAG,
        '--from',
        'python:3.11',
        '--pip',
        join(specDir, 'bad.txt'),
        '--find-links',
        join(specDir, 'wheels'),
      ]);
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, /image\.build_failed/);
      assert.match(r.err, /--require-hashes/);
      const ls = JSON.parse((await aegis(['image', 'ls', '--json'])).out) as { images: Array<{ tags: string[] }> };
      assert.ok(!ls.images.some((i) => i.tags.includes(TAG)));
    });

    it('builds from a spec: the package works, pip is gone, the spec and input digests are recorded', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      writeFileSync(join(specDir, 'requirements.txt'), `aegisdemo==1.0 --hash=sha256:${wheelHash}\n`);
      writeFileSync(
        join(specDir, 'image.yaml'),
        'from: python:3.11\napt: [jq, python3-httpx]\npip:\n  requirements: requirements.txt\n  find_links: wheels\n',
      );
      const r = await aegis(['image', 'build', TAG, '--spec', join(specDir, 'image.yaml'), '--json']);
      assert.equal(r.code, 0, r.err);
      built = true;
      const res = JSON.parse(r.out) as { ref: string; digest: string };
      assert.equal(res.ref, TAG);
      const file = manifest(join(work, 'py-agent'), TAG, [
        'python3',
        '-c',
        'import aegisdemo, httpx, importlib.util, os; print(aegisdemo.VALUE, os.path.exists("/usr/bin/jq"), importlib.util.find_spec("pip"), httpx.Client.__name__)',
      ]);
      const run = await aegis(['run', file, '--state-dir', join(work, 'state')]);
      assert.equal(run.code, 0, run.err);
      assert.equal(run.out, '42 True None Client\n', 'the wheel, the Debian tool and httpx are there; pip is not');
      const ls = JSON.parse((await aegis(['image', 'ls', '--json'])).out) as {
        images: Array<{ digest: string; tags: string[]; source: Record<string, string> }>;
      };
      const img = ls.images.find((i) => i.tags.includes(TAG))!;
      assert.equal(img.digest, res.digest);
      assert.equal(img.source['from'], 'python:3.11');
      const spec = JSON.parse(img.source['spec']!) as { apt: string[] };
      assert.deepEqual(spec.apt, ['jq', 'python3-httpx']);
      const inputs = JSON.parse(img.source['inputs']!) as { find_links: Record<string, string>; require_hashes: boolean; spec: string };
      assert.deepEqual(inputs.find_links, { 'aegisdemo-1.0-py3-none-any.whl': `sha256:${wheelHash}` });
      assert.equal(inputs.require_hashes, true);
      assert.match(inputs.spec, /^sha256:[0-9a-f]{64}$/);
    });

    it('sbom: SPDX 2.3 and CycloneDX 1.5 list the Debian and the Python packages with purls', async (t) => {
      if (!requireOrSkip(t, unavailable) || !built) return;
      const spdx = await aegis(['image', 'sbom', TAG, '--format', 'spdx']);
      assert.equal(spdx.code, 0, spdx.err);
      const s = JSON.parse(spdx.out) as {
        spdxVersion: string;
        packages: Array<{ name: string; externalRefs?: Array<{ referenceLocator: string }> }>;
      };
      assert.equal(s.spdxVersion, 'SPDX-2.3');
      const purls = s.packages.flatMap((p) => p.externalRefs ?? []).map((r) => r.referenceLocator);
      assert.ok(purls.includes('pkg:pypi/aegisdemo@1.0'), 'the pip-installed wheel');
      assert.ok(
        purls.some((p) => p.startsWith('pkg:deb/debian/jq@') && p.includes('distro=debian-12')),
        'the apt package',
      );
      assert.ok(purls.some((p) => p.startsWith('pkg:deb/debian/python3.11@')));
      assert.ok(!purls.some((p) => p.startsWith('pkg:deb/debian/python3-pip@')), 'the build-only pip was purged');
      const cdx = await aegis(['image', 'sbom', TAG, '--format', 'cyclonedx']);
      assert.equal(cdx.code, 0, cdx.err);
      const c = JSON.parse(cdx.out) as { bomFormat: string; specVersion: string; components: Array<{ purl: string }> };
      assert.equal(c.bomFormat, 'CycloneDX');
      assert.equal(c.specVersion, '1.5');
      assert.deepEqual(c.components.map((x) => x.purl).sort(), purls.slice().sort());
      const bad = await aegis(['image', 'sbom', TAG, '--format', 'xml']);
      assert.equal(bad.code, 2);
    });

    it('scan: names each advisory found; exit 1 at or above --fail-on, 0 below', async (t) => {
      if (!requireOrSkip(t, unavailable) || !built) return;
      const db = join(work, 'osv');
      mkdirSync(join(db, 'pypi'), { recursive: true });
      const adv = (id: string, eco: string, name: string, events: object[], severity: string) => ({
        id,
        summary: `${id} test advisory`,
        affected: [{ package: { ecosystem: eco, name }, ranges: [{ type: 'ECOSYSTEM', events }] }],
        database_specific: { severity },
      });
      writeFileSync(
        join(db, 'pypi', 'PYSEC-T-1.json'),
        JSON.stringify(adv('PYSEC-T-1', 'PyPI', 'AegisDemo', [{ introduced: '0' }, { fixed: '1.0.1' }], 'HIGH')),
      );
      writeFileSync(
        join(db, 'debian.json'),
        JSON.stringify([
          // jq's source is jq; every version of bookworm's jq is below the epoch 9: affected, LOW.
          adv('DEBIAN-T-2', 'Debian:12', 'jq', [{ introduced: '0' }, { fixed: '9:0' }], 'LOW'),
          // A fix with a tilde below the installed version: not a finding.
          adv('DEBIAN-T-3', 'Debian:12', 'jq', [{ introduced: '0' }, { fixed: '1.0~rc1' }], 'CRITICAL'),
          adv('DEBIAN-T-4', 'Debian:11', 'jq', [{ introduced: '0' }], 'CRITICAL'),
        ]),
      );
      const r = await aegis(['image', 'scan', TAG, '--db', db]);
      assert.equal(r.code, 1, r.err);
      const ids = r.out
        .trim()
        .split('\n')
        .map((l) =>
          l
            .split('\t')
            .slice(0, 3)
            .join(' ')
            .replace(/ [^ ]+$/, ''),
        );
      // Debian advisories name the source package: both binaries built from jq are found.
      assert.deepEqual(ids, ['HIGH PYSEC-T-1 aegisdemo', 'LOW DEBIAN-T-2 jq', 'LOW DEBIAN-T-2 libjq1']);
      const crit = await aegis(['image', 'scan', TAG, '--db', db, '--fail-on', 'critical', '--json']);
      assert.equal(crit.code, 0, crit.err);
      const j = JSON.parse(crit.out) as { ok: boolean; findings: Array<{ id: string; fixed: string | null; purl: string }> };
      assert.equal(j.ok, true);
      assert.deepEqual(
        j.findings.map((f) => [f.id, f.fixed, f.purl.replace(/@.*/, '')]),
        [
          ['PYSEC-T-1', '1.0.1', 'pkg:pypi/aegisdemo'],
          ['DEBIAN-T-2', '9:0', 'pkg:deb/debian/jq'],
          ['DEBIAN-T-2', '9:0', 'pkg:deb/debian/libjq1'],
        ],
      );
      assert.equal((await aegis(['image', 'scan', TAG, '--db', db, '--fail-on', 'low'])).code, 1);
      writeFileSync(join(db, 'broken.json'), '{"id": "X"');
      const broken = await aegis(['image', 'scan', TAG, '--db', db, '--json']);
      assert.equal(broken.code, 1);
      assert.equal((JSON.parse(broken.out) as { code: string }).code, 'image.advisory_invalid');
    });
  });
});

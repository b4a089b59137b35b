/**
 * Image store end to end: real OCI layouts and docker-save tarballs are built here, imported
 * through the same code as `aegis image import`, resolved, tampered with and refused.
 * Uses a temporary AEGIS_IMAGES per test; needs root (chown of imported files).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  lstatSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ImageError, resolveImage } from '../../src/images/index.js';
import { importImage } from '../../src/images/import.js';
import { parseImageRef, parseRefOrDigest } from '../../src/images/ref.js';
import { checkImage, listImages, paths, removeImage } from '../../src/images/store.js';
import { loadConfig } from '../../src/config/index.js';
import type { Digest } from '../../src/images/ref.js';
import { dockerSaveTar, removeTempDirs, sha256, type TarEntry, tarOf, tempDir, writeOciLayout } from './images-support.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';

const quiet = () => undefined;
after(removeTempDirs);
const ref = (s: string) => parseImageRef(s);

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ImageError, `expected ImageError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

const BASE: TarEntry[] = [
  { name: 'etc/', type: 'directory' },
  { name: 'etc/keep', content: 'keep\n' },
  { name: 'etc/gone', content: 'gone\n' },
  { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n', mode: 0o644 },
  { name: 'usr/', type: 'directory' },
  { name: 'usr/lib/', type: 'directory' },
  { name: 'usr/lib/libx.so', content: 'ELF', mode: 0o755 },
  { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
  { name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' },
  { name: 'opq/', type: 'directory' },
  { name: 'opq/x', content: 'x' },
  { name: 'opq/sub/', type: 'directory' },
  { name: 'opq/sub/y', content: 'y' },
  { name: 'app/', type: 'directory', mode: 0o750, uid: 1000, gid: 1000 },
  { name: 'app/a', content: 'a1', uid: 1000, gid: 1000 },
  { name: 'app/b', content: 'bee', mode: 0o4755 },
  { name: 'dev/', type: 'directory' },
  { name: 'dev/null', type: 'character-device' },
];
const UPPER: TarEntry[] = [
  { name: 'etc/.wh.gone' },
  { name: 'opq/.wh..wh..opq' },
  { name: 'opq/z', content: 'z' },
  { name: './app/a', content: 'a2', uid: 1000, gid: 1000 },
  { name: 'lib/libnew.so', content: 'via symlinked parent' },
];
const TOP: TarEntry[] = [{ name: 'app/c', type: 'link', linkname: 'app/b' }];

async function importLayout(store: string, layers: TarEntry[][], opts: { tag?: string; refName?: string; gzip?: boolean[] } = {}) {
  const dir = tempDir('oci');
  writeOciLayout(dir, await Promise.all(layers.map((l) => tarOf(l))), {
    gzip: opts.gzip ?? layers.map((_, i) => i % 2 === 1),
    ...(opts.refName ? { refName: opts.refName } : {}),
  });
  return importImage(dir, { imagesDir: store, tag: opts.tag ? ref(opts.tag) : null, log: quiet });
}

describe('aegis image import (OCI layout)', () => {
  it('applies layers in order with whiteouts, opaque dirs, hard links and symlinked parents', async () => {
    const store = tempDir('images');
    const r = await importLayout(store, [BASE, UPPER, TOP], { refName: 'demo:1' });
    assert.deepEqual(r.tags, ['demo:1']);
    assert.equal(r.layers, 3);
    assert.deepEqual(r.skipped, ['dev/null']);
    const root = paths.rootfs(store, r.digest);
    assert.equal(existsSync(join(root, 'etc/gone')), false, 'whiteout removed etc/gone');
    assert.equal(readFileSync(join(root, 'etc/keep'), 'utf8'), 'keep\n');
    assert.deepEqual(readdirSync(join(root, 'opq')).sort(), ['z'], 'opaque dir hides lower children');
    assert.equal(readFileSync(join(root, 'app/a'), 'utf8'), 'a2');
    assert.equal(readFileSync(join(root, 'usr/lib/libnew.so'), 'utf8'), 'via symlinked parent');
    assert.equal(lstatSync(join(root, 'app/c')).ino, lstatSync(join(root, 'app/b')).ino, 'hard link');
    assert.equal(lstatSync(join(root, 'app/b')).mode & 0o7777, 0o4755);
    assert.equal(lstatSync(join(root, 'app')).uid, 1000);
    assert.equal(lstatSync(join(root, 'app')).mode & 0o7777, 0o750);
    assert.equal(readlinkSync(join(root, 'etc/localtime')), '/usr/share/zoneinfo/UTC');
    assert.equal(existsSync(join(root, 'dev/null')), false, 'device nodes are not stored');
    const resolved = await resolveImage(ref('demo:1'), { imagesDir: store });
    assert.equal(resolved.digest, r.digest);
    assert.equal(resolved.rootfs, root);
    assert.deepEqual((await checkImage(store, parseRefOrDigest('demo:1'), 'full')).differences, []);
    const rec = listImages(store)[0];
    assert.deepEqual(rec?.record?.config.env, ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8']);
    assert.equal(rec?.record?.config.workingDir, '/app');
  });

  it('gives the same digest for the same content (gzip or not) and moves the tag on re-import', async () => {
    const store = tempDir('images');
    const a = await importLayout(store, [BASE, UPPER], { tag: 'demo:1', gzip: [false, false] });
    const b = await importLayout(store, [BASE, UPPER], { tag: 'demo:1', gzip: [true, true] });
    assert.equal(a.digest, b.digest);
    assert.equal(b.created, false);
    const c = await importLayout(store, [BASE], { tag: 'demo:1' });
    assert.notEqual(c.digest, a.digest);
    assert.equal((await resolveImage(ref('demo:1'), { imagesDir: store })).digest, c.digest, 'tag moved');
    const digests = listImages(store)
      .map((i) => i.digest)
      .sort();
    assert.deepEqual(digests, [a.digest, c.digest].sort(), 'old digest kept until rm');
    // A pin runs only that digest, even after the tag moved.
    const pinned = await resolveImage(ref(`demo:1@${a.digest}`), { imagesDir: store });
    assert.equal(pinned.digest, a.digest);
    await rejectsWith(resolveImage(ref(`demo:1@sha256:${'0'.repeat(64)}`), { imagesDir: store }), 'image.not_found');
    // Removing the untagged old image by digest; then the tag (and its image).
    assert.deepEqual((await removeImage(store, parseRefOrDigest(a.digest))).removed, [a.digest]);
    await rejectsWith(removeImage(store, parseRefOrDigest(c.digest)), 'image.in_use');
    assert.deepEqual(await removeImage(store, parseRefOrDigest('demo:1')), { untagged: ['demo:1'], removed: [c.digest] });
    assert.deepEqual(listImages(store), []);
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.not_found');
  });
});

describe('when the archive is hostile', () => {
  const cases: [string, TarEntry[]][] = [
    [
      'a ../ traversal entry',
      [
        { name: 'etc/', type: 'directory' },
        { name: '../../../../evil-aegis-test', content: 'pwned' },
      ],
    ],
    ['an absolute entry', [{ name: '/tmp/evil-aegis-test', content: 'pwned' }]],
    [
      'a relative symlink escaping the rootfs',
      [
        { name: 'usr/', type: 'directory' },
        { name: 'usr/esc', type: 'symlink', linkname: '../../../../etc' },
      ],
    ],
    ['a hard link to a host path', [{ name: 'passwd', type: 'link', linkname: '../../../../etc/passwd' }]],
    ['an absolute hard link', [{ name: 'shadow', type: 'link', linkname: '/etc/shadow' }]],
    ['a whiteout with traversal', [{ name: '../.wh.etc' }]],
  ];
  for (const [what, entries] of cases) {
    it(`refuses ${what} and leaves nothing behind`, async () => {
      const store = tempDir('images');
      await rejectsWith(importLayout(store, [entries], { tag: 'evil:1' }), 'image.unsafe_entry');
      assert.deepEqual(readdirSync(join(store, 'tmp')), [], 'staging removed');
      assert.deepEqual(readdirSync(join(store, 'sha256')), []);
      assert.equal(existsSync('/tmp/evil-aegis-test'), false);
    });
  }

  it('keeps writes through an absolute symlink inside the rootfs (hostroot -> / then hostroot/x)', async () => {
    const store = tempDir('images');
    const marker = `aegis-marker-${process.pid}`;
    const r = await importLayout(
      store,
      [
        [
          { name: 'hostroot', type: 'symlink', linkname: '/' },
          { name: `hostroot/${marker}`, content: 'inside' },
        ],
      ],
      { tag: 'link:1' },
    );
    assert.equal(existsSync(`/${marker}`), false, 'nothing written to the host root');
    assert.equal(readFileSync(join(paths.rootfs(store, r.digest), marker), 'utf8'), 'inside');
  });

  it('refuses an image over the size or entry limit before writing it (decompression bombs)', async () => {
    const store = tempDir('images');
    const dir = tempDir('oci');
    writeOciLayout(
      dir,
      [await tarOf([{ name: 'big', content: 'x'.repeat(1000) }]), await tarOf([{ name: 'big2', content: 'y'.repeat(1000) }])],
      { gzip: [true, true] },
    );
    await rejectsWith(importImage(dir, { imagesDir: store, tag: null, log: quiet, maxBytes: 1500 }), 'image.too_large');
    await rejectsWith(importImage(dir, { imagesDir: store, tag: null, log: quiet, maxEntries: 1 }), 'image.too_large');
    assert.deepEqual(readdirSync(join(store, 'tmp')), []);
    assert.equal((await importImage(dir, { imagesDir: store, tag: null, log: quiet, maxBytes: 2000 })).files, 3);
  });

  it('refuses a symlink loop used as a parent', async () => {
    const store = tempDir('images');
    await rejectsWith(
      importLayout(store, [
        [
          { name: 'a', type: 'symlink', linkname: 'b' },
          { name: 'b', type: 'symlink', linkname: 'a' },
          { name: 'a/x', content: '' },
        ],
      ]),
      'image.unsafe_entry',
    );
  });

  it('refuses a layer whose bytes do not match its digest', async () => {
    const store = tempDir('images');
    const dir = tempDir('oci');
    writeOciLayout(dir, [await tarOf(BASE)]);
    const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const m = JSON.parse(readFileSync(join(dir, 'blobs/sha256', idx.manifests[0]!.digest.slice(7)), 'utf8')) as {
      layers: { digest: string }[];
    };
    appendFileSync(join(dir, 'blobs/sha256', m.layers[0]!.digest.slice(7)), 'x');
    await rejectsWith(importImage(dir, { imagesDir: store, tag: null, log: quiet }), 'image.bad_archive');
  });

  it('refuses a foreign architecture and a missing blob', async () => {
    const store = tempDir('images');
    const dir = tempDir('oci');
    writeOciLayout(dir, [await tarOf(BASE)], { architecture: 's390x' });
    await rejectsWith(importImage(dir, { imagesDir: store, tag: null, log: quiet }), 'image.unsupported');
    const dir2 = tempDir('oci');
    writeFileSync(join(dir2, 'oci-layout'), '{}');
    writeFileSync(join(dir2, 'index.json'), JSON.stringify({ manifests: [{ digest: `sha256:${'a'.repeat(64)}` }] }));
    await rejectsWith(importImage(dir2, { imagesDir: store, tag: null, log: quiet }), 'image.bad_archive');
    writeFileSync(join(dir2, 'index.json'), JSON.stringify({ manifests: [{ digest: '../../etc/passwd' }] }));
    await rejectsWith(importImage(dir2, { imagesDir: store, tag: null, log: quiet }), 'image.bad_archive');
    writeFileSync(join(dir2, 'index.json'), '{"manifests": [');
    await rejectsWith(importImage(dir2, { imagesDir: store, tag: null, log: quiet }), 'image.bad_archive');
  });
});

describe('aegis image import (OCI layout tarball)', () => {
  it('imports an OCI layout packed with tar (./-prefixed member names)', async () => {
    const store = tempDir('images');
    const dir = tempDir('oci');
    writeOciLayout(dir, [await tarOf(BASE), await tarOf(UPPER)], { gzip: [true, false], refName: 'demo:4' });
    const file = join(tempDir('save'), 'layout.tar');
    execFileSync('tar', ['-cf', file, '-C', dir, '.']);
    const r = await importImage(file, { imagesDir: store, tag: null, log: quiet });
    assert.deepEqual(r.tags, ['demo:4']);
    const direct = await importLayout(tempDir('images'), [BASE, UPPER], { gzip: [false, true] });
    assert.equal(r.digest, direct.digest, 'same tree, same digest, whatever the packaging');
  });
});

describe('aegis image import (docker save tarball)', () => {
  it('imports layers checked against diff_ids and takes the tag from RepoTags', async () => {
    const store = tempDir('images');
    const file = join(tempDir('save'), 'img.tar');
    writeFileSync(file, await dockerSaveTar([await tarOf(BASE), await tarOf(UPPER)], { repoTag: 'docker.io/library/demo:2' }));
    const r = await importImage(file, { imagesDir: store, tag: null, log: quiet });
    assert.deepEqual(r.tags, ['demo:2']);
    const root = (await resolveImage(ref('demo:2'), { imagesDir: store })).rootfs;
    assert.deepEqual(readdirSync(join(root, 'opq')), ['z']);
    assert.equal(existsSync(join(root, 'etc/gone')), false);
    assert.deepEqual(readdirSync(join(store, 'tmp')), [], 'unpacked archive members removed');
  });

  it('refuses a layer that does not match its diff_id', async () => {
    const store = tempDir('images');
    const file = join(tempDir('save'), 'img.tar');
    writeFileSync(file, await dockerSaveTar([await tarOf(BASE)], { diffIds: [sha256('something else')] }));
    await rejectsWith(importImage(file, { imagesDir: store, tag: null, log: quiet }), 'image.bad_archive');
  });

  it('refuses traversal inside an outer archive member name', async () => {
    const store = tempDir('images');
    const file = join(tempDir('save'), 'img.tar');
    writeFileSync(file, await tarOf([{ name: '../escape.json', content: '{}' }]));
    await rejectsWith(importImage(file, { imagesDir: store, tag: null, log: quiet }), 'image.unsafe_entry');
  });

  it('refuses a file that is not a tar archive', async () => {
    const store = tempDir('images');
    const file = join(tempDir('save'), 'junk.tar');
    writeFileSync(file, Buffer.alloc(4096, 0x41));
    await rejectsWith(importImage(file, { imagesDir: store, tag: null, log: quiet }), 'image.bad_archive');
  });
});

describe('when an imported image is tampered with', () => {
  async function fresh(): Promise<{ store: string; digest: Digest; root: string }> {
    const store = tempDir('images');
    const r = await importLayout(store, [BASE, UPPER], { tag: 'demo:1' });
    return { store, digest: r.digest, root: paths.rootfs(store, r.digest) };
  }

  it('a changed file below the top level is found by verify (full) and refused by resolveImage verify:full', async () => {
    const { store, root } = await fresh();
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\nevil::0:0::/:/bin/sh\n');
    const r = await checkImage(store, parseRefOrDigest('demo:1'), 'full');
    assert.deepEqual(r.differences, [{ path: 'etc/passwd', kind: 'changed', fields: ['size', 'content'] }]);
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store, verify: 'full' }), 'image.digest_mismatch');
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store, verify: 'stat' }), 'image.digest_mismatch');
  });

  it('same-size content change: only the full re-hash sees it', async () => {
    const { store, root } = await fresh();
    writeFileSync(join(root, 'etc/keep'), 'KEEP\n');
    assert.deepEqual((await checkImage(store, parseRefOrDigest('demo:1'), 'stat')).differences, []);
    assert.deepEqual((await checkImage(store, parseRefOrDigest('demo:1'), 'full')).differences, [
      { path: 'etc/keep', kind: 'changed', fields: ['content'] },
    ]);
  });

  it('a file added at the top level is refused by the per-run check', async () => {
    const { store, root } = await fresh();
    writeFileSync(join(root, 'trojan'), '#!/bin/sh\n');
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.digest_mismatch');
  });

  it('a replaced top-level symlink is refused by the per-run check', async () => {
    const { store, root } = await fresh();
    execFileSync('rm', [join(root, 'lib')]);
    symlinkSync('/tmp', join(root, 'lib'));
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.digest_mismatch');
  });

  it('an edited image.index is refused by the per-run check', async () => {
    const { store, digest } = await fresh();
    appendFileSync(paths.index(store, digest), '"extra"\td\t0755\t0\t0\t0\t-\n');
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.digest_mismatch');
  });

  it('an edited files.manifest is refused by verify (stat and full), not per run', async () => {
    const { store, digest } = await fresh();
    appendFileSync(paths.manifest(store, digest), '"zzz"\td\t0755\t0\t0\t0\t-\n');
    await resolveImage(ref('demo:1'), { imagesDir: store });
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store, verify: 'stat' }), 'image.digest_mismatch');
    await rejectsWith(checkImage(store, parseRefOrDigest('demo:1'), 'full'), 'image.digest_mismatch');
  });

  it('a same-size change of a top-level file is invisible per run but found by verify', async () => {
    const store = tempDir('images');
    const r = await importLayout(store, [[{ name: 'top.txt', content: 'aaaa' }]], { tag: 'demo:1' });
    writeFileSync(join(paths.rootfs(store, r.digest), 'top.txt'), 'bbbb');
    await resolveImage(ref('demo:1'), { imagesDir: store });
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store, verify: 'full' }), 'image.digest_mismatch');
  });

  it('a removed image.index is a coded error', async () => {
    const { store, digest } = await fresh();
    execFileSync('rm', [paths.index(store, digest)]);
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.corrupt');
  });

  it('a rootfs writable by others is refused as insecure', async () => {
    const { store, root } = await fresh();
    chmodSync(root, 0o777);
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.insecure');
  });

  it('a corrupt tag index is a coded error, not a crash', async () => {
    const { store } = await fresh();
    writeFileSync(paths.tags(store), '{"version":1,"tags":{"demo:1":"sha256:../../etc"}}');
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.corrupt');
    writeFileSync(paths.tags(store), 'not json');
    await rejectsWith(resolveImage(ref('demo:1'), { imagesDir: store }), 'image.corrupt');
  });
});

describe('when root has a restrictive umask (077)', () => {
  it('the store and image stay readable by the non-root users who run sandboxes (regression)', async () => {
    const old = process.umask(0o077);
    try {
      const store = join(tempDir('images'), 'var', 'lib', 'aegis', 'images');
      const r = await importLayout(store, [[{ name: 'usr/bin/tool', content: 'x', mode: 0o755 }]], { tag: 'demo:1' });
      for (const p of [
        join(store, '..'),
        store,
        join(store, 'sha256'),
        paths.image(store, r.digest),
        paths.rootfs(store, r.digest),
        join(paths.rootfs(store, r.digest), 'usr'),
      ]) {
        assert.equal(lstatSync(p).mode & 0o777, 0o755, p);
      }
      for (const p of [paths.tags(store), paths.index(store, r.digest), paths.manifest(store, r.digest), paths.record(store, r.digest)])
        assert.equal(lstatSync(p).mode & 0o777, 0o644, p);
    } finally {
      process.umask(old);
    }
  });
});

describe('the store is host-wide, apart from AEGIS_HOME', () => {
  it('regression: image verify as a user who cannot read every file is image.unreadable, not an internal error', async () => {
    const store = tempDir('images');
    await importLayout(store, [[...BASE, { name: 'etc/shadow-like', content: 'root only\n', mode: 0o600 }]], { tag: 'private:1' });
    chmodSync(store, 0o755);
    const home = tempDir('nobody-home');
    chmodSync(home, 0o777);
    const env = { PATH: process.env['PATH'] ?? '', HOME: home, AEGIS_HOME: home, AEGIS_IMAGES: store };
    const v = spawnSync(
      'setpriv',
      ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, AEGIS_BIN, 'image', 'verify', 'private:1'],
      {
        env,
        encoding: 'utf8',
      },
    );
    assert.equal(v.status, 1, v.stderr);
    assert.match(v.stderr, /image\.unreadable: cannot read .*shadow-like \(EACCES\)/);
    assert.doesNotMatch(v.stderr, /internal error/);
  });
  it('a fresh AEGIS_HOME still finds the images (CLI, image ls --json)', async () => {
    const store = tempDir('images');
    const r = await importLayout(store, [BASE], { tag: 'demo:1' });
    const env = { ...process.env, AEGIS_IMAGES: store, AEGIS_HOME: tempDir('home') };
    const out = spawnSync(process.execPath, [AEGIS_BIN, 'image', 'ls', '--json'], { env, encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    const listed = JSON.parse(out.stdout) as { imagesDir: string; images: { digest: string; tags: string[] }[] };
    assert.equal(listed.imagesDir, store);
    assert.deepEqual(
      listed.images.map((i) => [i.digest, i.tags]),
      [[r.digest, ['demo:1']]],
    );
    assert.equal(loadConfig({ AEGIS_HOME: tempDir('other-home') }).imagesDir, '/var/lib/aegis/images');
    const v = spawnSync(process.execPath, [AEGIS_BIN, 'image', 'verify', 'demo:1', '--json'], { env, encoding: 'utf8' });
    assert.equal(v.status, 0, v.stderr);
    assert.equal((JSON.parse(v.stdout) as { ok: boolean }).ok, true);
  });
});

describe('the default image built by scripts/setup.sh', () => {
  it('python:3.11 exists in /var/lib/aegis/images, verifies, and runs python3 3.11 (chroot)', async () => {
    const img = await resolveImage(ref('python:3.11'), { imagesDir: '/var/lib/aegis/images' });
    assert.match(img.digest, /^sha256:[0-9a-f]{64}$/);
    const out = execFileSync('/usr/sbin/chroot', [img.rootfs, '/usr/bin/python3', '-c', 'import sys; print(sys.version_info[:2])'], {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin' },
    });
    assert.equal(out.trim(), '(3, 11)');
    assert.deepEqual((await checkImage('/var/lib/aegis/images', parseRefOrDigest('python:3.11'), 'stat')).differences, []);
  });
});

describe('when archive bytes are corrupted at random', () => {
  it('every import of a mutated docker save tarball ends in success or a coded ImageError (seeded)', async () => {
    const good = await dockerSaveTar([await tarOf(BASE), await tarOf(UPPER)], { repoTag: 'demo:3' });
    let seed = 20261125;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const dir = tempDir('save');
    for (let i = 0; i < 40; i++) {
      const bad = Buffer.from(good);
      for (let k = 0; k < 1 + Math.floor(rnd() * 8); k++) bad[Math.floor(rnd() * bad.length)] = Math.floor(rnd() * 256);
      if (i % 5 === 0) bad.fill(0, Math.floor(rnd() * bad.length));
      const file = join(dir, `m${i}.tar`);
      writeFileSync(file, bad);
      const store = tempDir('images');
      try {
        await importImage(file, { imagesDir: store, tag: null, log: quiet });
      } catch (err) {
        assert.ok(err instanceof ImageError, `mutation ${i}: ${String(err)}`);
        assert.deepEqual(readdirSync(join(store, 'tmp')), [], `mutation ${i}: staging left behind`);
      }
    }
  });
});

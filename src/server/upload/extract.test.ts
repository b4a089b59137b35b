import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import tar, { type Header } from 'tar-stream';
import { propertyRuns } from '../../test-support/props.js';
import { hasCode } from '../../test-support/errors.js';
import { UploadError, type UploadErrorCode } from './errors.js';
import { entrySegments, extractCodeArchive, sha256Digest } from './extract.js';

type Entry = Partial<Header> & { name: string; data?: Buffer | string };

/** A tar (not compressed) of `entries`, built with tar-stream as a hostile client would. */
async function tarOf(entries: readonly Entry[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const { data, ...h } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (data !== undefined) p.entry({ ...h, size: Buffer.byteLength(data) }, data, cb);
      else p.entry(h, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function tgzOf(entries: readonly Entry[]): Promise<Buffer> {
  return gzipSync(await tarOf(entries));
}

const base = mkdtempSync(join(tmpdir(), 'aegis-upload-test-'));
after(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
/** A fresh parent directory and a destination inside it that does not exist yet. */
function dest(): { parent: string; dir: string } {
  const parent = join(base, `case-${n++}`);
  mkdirSync(parent);
  return { parent, dir: join(parent, 'code') };
}

/** Extraction must fail with `code` and leave the parent directory empty (no temp dir, no destination). */
async function refused(archive: Buffer, code: UploadErrorCode, limits = {}): Promise<void> {
  const { parent, dir } = dest();
  await assert.rejects(extractCodeArchive(archive, dir, limits), hasCode(UploadError, code));
  assert.deepEqual(readdirSync(parent), [], 'nothing is left behind');
}

describe('extractCodeArchive', () => {
  it('extracts files and directories, with masked modes, and returns the digest and counts', async () => {
    const archive = await tgzOf([
      { name: './', type: 'directory', mode: 0o777 },
      { name: './main.py', data: 'print(1)\n', mode: 0o4755 },
      { name: './lib/', type: 'directory', mode: 0o7777 },
      { name: './lib/util.py', data: 'x = 2\n', mode: 0o666 },
      { name: 'deep/a/b/c.txt', data: 'c', mode: 0o600 },
    ]);
    const { dir } = dest();
    const r = await extractCodeArchive(archive, dir);
    assert.equal(r.digest, sha256Digest(archive));
    assert.match(r.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(r.files, 3);
    assert.equal(r.directories, 4);
    assert.equal(r.bytes, 9 + 6 + 1);
    assert.equal(readFileSync(join(dir, 'main.py'), 'utf8'), 'print(1)\n');
    assert.equal(readFileSync(join(dir, 'deep/a/b/c.txt'), 'utf8'), 'c');
    assert.equal(statSync(join(dir, 'main.py')).mode & 0o7777, 0o755, 'setuid dropped, execute kept');
    assert.equal(statSync(join(dir, 'lib/util.py')).mode & 0o7777, 0o644, 'group/world write dropped');
    assert.equal(statSync(join(dir, 'deep/a/b/c.txt')).mode & 0o7777, 0o644);
    assert.equal(statSync(join(dir, 'lib')).mode & 0o7777, 0o755, 'sticky/setgid/world write dropped');
    assert.equal(statSync(dir).mode & 0o7777, 0o755);
  });

  it('accepts an empty archive (an agent with no code of its own)', async () => {
    const { dir } = dest();
    const r = await extractCodeArchive(await tgzOf([]), dir);
    assert.deepEqual([r.files, r.bytes], [0, 0]);
    assert.deepEqual(readdirSync(dir), []);
  });

  it('a directory declared after a file inside it is not a duplicate', async () => {
    const { dir } = dest();
    const r = await extractCodeArchive(
      await tgzOf([
        { name: 'a/b.txt', data: 'b' },
        { name: 'a/', type: 'directory' },
      ]),
      dir,
    );
    assert.equal(r.files, 1);
  });

  describe('when the archive is hostile', () => {
    it('refuses path traversal with ..', async () => {
      await refused(
        await tgzOf([
          { name: 'ok.txt', data: 'x' },
          { name: '../escape.txt', data: 'x' },
        ]),
        'upload.path_refused',
      );
      await refused(await tgzOf([{ name: 'a/../../escape.txt', data: 'x' }]), 'upload.path_refused');
      assert.equal(existsSync(join(base, 'escape.txt')), false);
    });
    it('refuses absolute paths', async () => {
      await refused(await tgzOf([{ name: '/tmp/aegis-upload-abs.txt', data: 'x' }]), 'upload.path_refused');
      assert.equal(existsSync('/tmp/aegis-upload-abs.txt'), false);
    });
    it('refuses symlinks, even ones that point inside', async () => {
      await refused(await tgzOf([{ name: 'out', type: 'symlink', linkname: '/etc' }]), 'upload.entry_refused');
      await refused(await tgzOf([{ name: 'up', type: 'symlink', linkname: '../../..' }]), 'upload.entry_refused');
      await refused(
        await tgzOf([
          { name: 'a.txt', data: 'a' },
          { name: 'in', type: 'symlink', linkname: 'a.txt' },
        ]),
        'upload.entry_refused',
      );
    });
    it('refuses a symlink followed by a file written through it', async () => {
      await refused(
        await tgzOf([
          { name: 'd', type: 'symlink', linkname: '/tmp' },
          { name: 'd/x', data: 'x' },
        ]),
        'upload.entry_refused',
      );
    });
    it('refuses hardlinks', async () => {
      await refused(
        await tgzOf([
          { name: 'a.txt', data: 'a' },
          { name: 'b.txt', type: 'link', linkname: 'a.txt' },
        ]),
        'upload.entry_refused',
      );
      await refused(await tgzOf([{ name: 'shadow', type: 'link', linkname: '/etc/shadow' }]), 'upload.entry_refused');
    });
    it('refuses devices and fifos', async () => {
      await refused(await tgzOf([{ name: 'mem', type: 'character-device', devmajor: 1, devminor: 1 }]), 'upload.entry_refused');
      await refused(await tgzOf([{ name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 }]), 'upload.entry_refused');
      await refused(await tgzOf([{ name: 'pipe', type: 'fifo' }]), 'upload.entry_refused');
    });
    it('refuses duplicate entries instead of overwriting', async () => {
      await refused(
        await tgzOf([
          { name: 'a.txt', data: 'good' },
          { name: './a.txt', data: 'evil' },
        ]),
        'upload.duplicate_entry',
      );
      await refused(
        await tgzOf([
          { name: 'a', type: 'directory' },
          { name: 'a/', type: 'directory' },
        ]),
        'upload.duplicate_entry',
      );
      await refused(
        await tgzOf([
          { name: 'a', data: 'x' },
          { name: 'a', type: 'directory' },
        ]),
        'upload.duplicate_entry',
      );
    });
    it('refuses a path through a file', async () => {
      await refused(
        await tgzOf([
          { name: 'a', data: 'x' },
          { name: 'a/b', data: 'y' },
        ]),
        'upload.path_refused',
      );
    });
    it('refuses too many entries', async () => {
      const entries = Array.from({ length: 21 }, (_, i) => ({ name: `f${i}`, data: '' }));
      await refused(await tgzOf(entries), 'upload.too_many_entries', { maxEntries: 20 });
    });
    it('refuses too long and too deep paths, and control characters', async () => {
      await refused(await tgzOf([{ name: 'a'.repeat(300), data: 'x' }]), 'upload.path_refused');
      await refused(await tgzOf([{ name: `${'d/'.repeat(40)}f`, data: 'x' }]), 'upload.path_refused');
      await refused(await tgzOf([{ name: 'a\nb', data: 'x' }]), 'upload.path_refused');
    });
    it('refuses a gzip bomb by its ratio', async () => {
      const bomb = await tgzOf([{ name: 'zeros', data: Buffer.alloc(20 * 1024 * 1024) }]);
      assert.ok(bomb.length < 100_000, `the bomb is ${bomb.length} bytes`);
      await refused(bomb, 'upload.ratio_exceeded');
    });
    it('refuses content over the total size limit', async () => {
      const big = await tgzOf([
        { name: 'a', data: Buffer.alloc(600_000, 1) },
        { name: 'b', data: Buffer.alloc(600_000, 2) },
      ]);
      await refused(big, 'upload.content_too_large', { maxTotalBytes: 1_000_000 });
    });
    it('refuses an archive over the compressed size limit', async () => {
      await refused(await tgzOf([{ name: 'a', data: 'x'.repeat(5000) }]), 'upload.archive_too_large', { maxArchiveBytes: 20 });
    });
    it('refuses a truncated gzip stream', async () => {
      const whole = await tgzOf([
        { name: 'a.txt', data: Buffer.alloc(100_000, 7) },
        { name: 'b.txt', data: 'b' },
      ]);
      await refused(whole.subarray(0, Math.floor(whole.length / 2)), 'upload.corrupt');
    });
    it('refuses a gzip of something that is not a tar', async () => {
      await refused(gzipSync(Buffer.from('this is not a tar archive at all, just text '.repeat(40))), 'upload.corrupt');
    });
    it('refuses what is not gzip at all', async () => {
      await refused(await tarOf([{ name: 'a.txt', data: 'x' }]), 'upload.not_gzip');
      await refused(Buffer.from('hello'), 'upload.not_gzip');
      await refused(Buffer.alloc(0), 'upload.not_gzip');
    });
    it('refuses to extract over an existing destination', async () => {
      const { parent, dir } = dest();
      mkdirSync(dir);
      writeFileSync(join(dir, 'keep'), 'k');
      await assert.rejects(
        extractCodeArchive(await tgzOf([{ name: 'keep', data: 'evil' }]), dir),
        hasCode(UploadError, 'upload.destination_exists'),
      );
      assert.deepEqual(readdirSync(parent), ['code']);
      assert.equal(readFileSync(join(dir, 'keep'), 'utf8'), 'k');
    });
  });
});

describe('entrySegments', () => {
  const lim = { maxPathBytes: 1024, maxDepth: 32 };
  it('drops a leading ./ and . segments', () => {
    assert.deepEqual(entrySegments('./a/./b/', lim), ['a', 'b']);
    assert.deepEqual(entrySegments('.', lim), []);
  });
  it('refuses .. anywhere and absolute paths', () => {
    for (const name of ['..', 'a/..', '../a', 'a/../b', '/a', '//a']) {
      assert.throws(() => entrySegments(name, lim), hasCode(UploadError, 'upload.path_refused'), name);
    }
  });
});

/** Every path under `dir` (relative), with lstat: nothing in an extracted tree may be a link or special file. */
function walkAll(dir: string, rel = ''): { rel: string; kind: string }[] {
  return readdirSync(join(dir, rel)).flatMap((n) => {
    const r = rel === '' ? n : `${rel}/${n}`;
    const st = lstatSync(join(dir, r));
    const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
    return kind === 'dir' ? [{ rel: r, kind }, ...walkAll(dir, r)] : [{ rel: r, kind }];
  });
}

describe('extractCodeArchive (property)', () => {
  const segment = fc.constantFrom('a', 'b', '..', '.', '', 'c d', 'x.py', '\u00e9', '...');
  const entry = fc.record({
    name: fc.array(segment, { minLength: 1, maxLength: 4 }).map((segs) => segs.join('/')),
    lead: fc.constantFrom('', './', '/', '../'),
    type: fc.constantFrom<'file' | 'directory' | 'symlink' | 'link'>('file', 'file', 'file', 'directory', 'symlink', 'link'),
  });
  for (const [label, params] of propertyRuns(60)) {
    it(`either refuses with an UploadError and leaves nothing, or writes only regular files and folders inside the destination (${label})`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 6 }), async (entries) => {
          const { parent, dir } = dest();
          const archive = await tgzOf(
            entries.map((e) =>
              e.type === 'file'
                ? { name: e.lead + e.name, data: 'x' }
                : { name: e.lead + e.name, type: e.type, linkname: '../../etc/passwd' },
            ),
          );
          try {
            await extractCodeArchive(archive, dir);
          } catch (err) {
            assert.ok(err instanceof UploadError, String(err));
            assert.deepEqual(readdirSync(parent), []);
            return;
          }
          assert.deepEqual(readdirSync(parent), ['code']);
          const root = realpathSync(dir);
          for (const f of walkAll(dir)) {
            assert.notEqual(f.kind, 'other', f.rel);
            assert.ok(realpathSync(join(dir, f.rel)).startsWith(`${root}/`), f.rel);
          }
          assert.ok(!entries.some((e) => e.type === 'symlink' || e.type === 'link'), 'links are never accepted');
        }),
        params,
      );
    });
  }
  after(() =>
    assert.deepEqual(
      readdirSync(base).filter((n) => !n.startsWith('case-')),
      [],
      'nothing written beside the cases',
    ),
  );
});

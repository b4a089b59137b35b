import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImageError } from './errors.js';
import { diffManifests, type FileEntry, manifestDigest, parseIndex, parseManifest, serializeIndex, serializeManifest } from './manifest.js';

const ENTRIES: FileEntry[] = [
  { path: 'usr/bin/python3', type: 'l', mode: 0o777, uid: 0, gid: 0, target: 'python3.11' },
  { path: '.', type: 'd', mode: 0o755, uid: 0, gid: 0 },
  { path: 'usr', type: 'd', mode: 0o755, uid: 0, gid: 0 },
  { path: 'usr/bin', type: 'd', mode: 0o755, uid: 0, gid: 0 },
  { path: 'usr/bin/su', type: 'f', mode: 0o4755, uid: 0, gid: 0, size: 3, sha256: `sha256:${'ab'.repeat(32)}` },
  { path: 'usr/bin/tab\tname "quoted"', type: 'f', mode: 0o644, uid: 1000, gid: 1000, size: 0, sha256: `sha256:${'00'.repeat(32)}` },
];

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ImageError);
    return err.code;
  }
  return 'no error';
}

describe('file manifest', () => {
  it('serializes canonically (order-independent) and round-trips', () => {
    const a = serializeManifest(ENTRIES);
    const b = serializeManifest([...ENTRIES].reverse());
    assert.equal(a, b);
    assert.deepEqual(parseManifest(a), serializeManifest(ENTRIES) === a ? parseManifest(b) : []);
    assert.equal(a.split('\n')[1], '"."\td\t0755\t0\t0\t0\t-');
    assert.ok(a.includes('"usr/bin/su"\tf\t4755\t0\t0\t3\tsha256:abab'));
    assert.ok(a.includes('"usr/bin/tab\\tname \\"quoted\\""'), 'tabs and quotes are JSON-escaped');
  });

  it('has a stable digest (regression vector: changing the format changes every image digest)', () => {
    const text = serializeManifest([
      { path: '.', type: 'd', mode: 0o755, uid: 0, gid: 0 },
      {
        path: 'a',
        type: 'f',
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 0,
        sha256: 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      },
    ]);
    assert.equal(
      text,
      'aegis-file-manifest/1\n"."\td\t0755\t0\t0\t0\t-\n"a"\tf\t0644\t0\t0\t0\tsha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n',
    );
    assert.equal(manifestDigest(text), manifestDigest(Buffer.from(text)));
    assert.match(manifestDigest(text), /^sha256:[0-9a-f]{64}$/);
  });

  it('the image index holds the manifest hash and the top-level lines; the digest is its hash', () => {
    const m = serializeManifest(ENTRIES);
    const idx = serializeIndex(m);
    assert.equal(idx, `aegis-image-index/1\nmanifest\t${manifestDigest(m)}\n"."\td\t0755\t0\t0\t0\t-\n"usr"\td\t0755\t0\t0\t0\t-\n`);
    assert.deepEqual(parseIndex(idx), { manifest: manifestDigest(m), top: parseManifest(m).filter((e) => !e.path.includes('/')) });
    assert.equal(
      code(() => parseIndex(idx.replace('manifest\t', 'manifest '))),
      'image.corrupt',
    );
    assert.equal(
      code(() => parseIndex(idx + '"usr/bin"\td\t0755\t0\t0\t0\t-\n')),
      'image.corrupt',
    );
    assert.equal(
      code(() => parseIndex('aegis-image-index/1\n')),
      'image.corrupt',
    );
  });

  describe('when the manifest is not canonical or malformed', () => {
    const good = serializeManifest(ENTRIES);
    const cases: [string, string][] = [
      ['bad header', good.replace('aegis-file-manifest/1', 'aegis-file-manifest/2')],
      ['no final newline', good.slice(0, -1)],
      [
        'swapped lines',
        (() => {
          const l = good.split('\n');
          [l[2], l[3]] = [l[3]!, l[2]!];
          return l.join('\n');
        })(),
      ],
      ['duplicate line', good + good.split('\n')[2] + '\n'],
      ['traversal path', good + '"usr/../../etc"\td\t0755\t0\t0\t0\t-\n'],
      ['absolute path', good.replace('"usr"', '"/usr"')],
      ['bad mode', good.replace('\t4755\t', '\t9755\t')],
      ['bad hash', good.replace('sha256:abab', 'sha256:XYab')],
      ['unknown type', good.replace('"usr"\td', '"usr"\tc')],
      ['too few fields', good + '"zzz"\td\t0755\n'],
      ['leading zero number', good.replace('\t1000\t1000\t', '\t01000\t1000\t')],
      ['not JSON path', good.replace('"usr"\t', 'usr\t')],
    ];
    for (const [what, text] of cases)
      it(`refuses ${what} as image.corrupt`, () =>
        assert.equal(
          code(() => parseManifest(text)),
          'image.corrupt',
        ));
    it('refuses a manifest without the rootfs entry', () =>
      assert.equal(
        code(() => serializeManifest(ENTRIES.filter((e) => e.path !== '.'))),
        'image.corrupt',
      ));
  });

  it('diffs two listings: missing, added, changed fields; content ignored in stat mode', () => {
    const changed: FileEntry[] = ENTRIES.filter((e) => e.path !== 'usr/bin').map((e) =>
      e.path === 'usr/bin/su' && e.type === 'f' ? { ...e, mode: 0o755, sha256: `sha256:${'cd'.repeat(32)}` } : e,
    );
    changed.push({ path: 'usr/bin/evil', type: 'f', mode: 0o755, uid: 0, gid: 0, size: 1, sha256: `sha256:${'ef'.repeat(32)}` });
    assert.deepEqual(diffManifests(ENTRIES, changed), [
      { path: 'usr/bin', kind: 'missing' },
      { path: 'usr/bin/evil', kind: 'added' },
      { path: 'usr/bin/su', kind: 'changed', fields: ['mode', 'content'] },
    ]);
    assert.deepEqual(diffManifests(ENTRIES, changed, { content: false })[2], { path: 'usr/bin/su', kind: 'changed', fields: ['mode'] });
  });
});

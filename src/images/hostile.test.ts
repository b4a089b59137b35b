/**
 * Property tests: every parser of untrusted image-store input (stored files read back from
 * disk, tar headers) either succeeds or throws an ImageError with a code; never anything else.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ImageError } from './errors.js';
import { classify } from './layers.js';
import { parseIndex, parseManifest, serializeManifest } from './manifest.js';
import { parseRecord } from './store.js';
import { parseTagIndex } from './tags.js';

const SEED = Number(process.env['FC_SEED'] ?? 20261125);

function onlyImageErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ImageError, `non-ImageError thrown: ${String(err)}`);
  }
}

const pathish = fc
  .array(fc.constantFrom('a', 'b', '.', '..', '', '.wh.a', '.wh..wh..opq', '.wh..wh.plnk', 'x\ty', '/'), { maxLength: 6 })
  .map((p) => p.join('/'));

describe('hostile input never escapes as an uncoded exception', () => {
  it('parseManifest / parseIndex / parseTagIndex / parseRecord on arbitrary text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (t) => {
        onlyImageErrors(() => parseManifest(t));
        onlyImageErrors(() => parseManifest(`aegis-file-manifest/1\n${t}`));
        onlyImageErrors(() => parseIndex(`aegis-image-index/1\n${t}`));
        onlyImageErrors(() => parseTagIndex(t));
        onlyImageErrors(() => parseTagIndex(`{"version":1,"tags":${t}}`));
        onlyImageErrors(() => parseRecord(t, `sha256:${'0'.repeat(64)}`));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('mutated valid manifests are refused or parse back to the same text', () => {
    const good = serializeManifest([
      { path: '.', type: 'd', mode: 0o755, uid: 0, gid: 0 },
      { path: 'a', type: 'f', mode: 0o644, uid: 0, gid: 0, size: 1, sha256: `sha256:${'1'.repeat(64)}` },
      { path: 'b', type: 'l', mode: 0o777, uid: 0, gid: 0, target: '/a' },
    ]);
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.string({ minLength: 1, maxLength: 3 }), (at, ins) => {
        const t = good.slice(0, at) + ins + good.slice(at + 1);
        try {
          assert.equal(serializeManifest(parseManifest(t)), t);
        } catch (err) {
          assert.ok(err instanceof ImageError, String(err));
        }
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('classify: accepted paths never contain "", ".", ".." and accepted links never climb out', () => {
    fc.assert(
      fc.property(
        pathish,
        fc.constantFrom('file', 'directory', 'symlink', 'link', 'fifo', 'character-device', null),
        pathish,
        (name, type, linkname) => {
          let a;
          try {
            a = classify({ name, type, linkname });
          } catch (err) {
            assert.ok(err instanceof ImageError, String(err));
            return;
          }
          const paths = a.op === 'opaque' ? [a.dir] : a.op === 'hardlink' ? [a.path, a.target] : [a.path];
          for (const p of paths)
            for (const c of p) assert.ok(c !== '' && c !== '.' && c !== '..' && !c.includes('/'), `${name} -> ${JSON.stringify(p)}`);
          if (a.op === 'symlink' && !a.target.startsWith('/')) {
            let depth = a.path.length - 1;
            for (const c of a.target.split('/')) {
              if (c === '..') depth--;
              else if (c !== '' && c !== '.') depth++;
              assert.ok(depth >= 0, `${name} -> ${a.target} climbs out`);
            }
          }
        },
      ),
      { seed: SEED, numRuns: 2000 },
    );
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImageError } from './errors.js';
import { parseImageRef, parseRefOrDigest } from './ref.js';
import { parseTagIndex, serializeTagIndex, tagsOf } from './tags.js';

const D1 = `sha256:${'1'.repeat(64)}` as const;
const D2 = `sha256:${'2'.repeat(64)}` as const;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ImageError);
    return err.code;
  }
  return 'no error';
}

describe('tag index', () => {
  it('round-trips sorted', () => {
    const idx = new Map([
      ['python:3.11', D1],
      ['debian:bookworm', D2],
      ['alpine:3', D1],
    ] as const);
    const text = serializeTagIndex(idx);
    assert.deepEqual(Object.keys((JSON.parse(text) as { tags: object }).tags), ['alpine:3', 'debian:bookworm', 'python:3.11']);
    assert.deepEqual([...parseTagIndex(text)].sort(), [...idx].sort());
    assert.deepEqual(tagsOf(idx, D1), ['alpine:3', 'python:3.11']);
  });

  describe('when the stored index is hostile or damaged', () => {
    const cases: [string, string][] = [
      ['not JSON', '{'],
      ['an array', '[]'],
      ['an unknown version', '{"version":2,"tags":{}}'],
      ['a digest with traversal', `{"version":1,"tags":{"python:3.11":"sha256:../../etc/passwd"}}`],
      ['a key that is not name:tag', `{"version":1,"tags":{"../x":"${D1}"}}`],
      ['a pinned key', `{"version":1,"tags":{"python:3.11@${D1}":"${D1}"}}`],
      ['a non-string digest', '{"version":1,"tags":{"python:3.11":7}}'],
      ['an oversized file', `{"version":1,"tags":{},"pad":"${'x'.repeat(4 * 1024 * 1024)}"}`],
    ];
    for (const [what, text] of cases)
      it(`refuses ${what} as image.corrupt`, () =>
        assert.equal(
          code(() => parseTagIndex(text)),
          'image.corrupt',
        ));
  });
});

describe('image references', () => {
  it('parses name:tag and pins', () => {
    assert.deepEqual(parseImageRef('python:3.11'), { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
    assert.deepEqual(parseImageRef(`library/python:3.11@${D1}`), {
      name: 'library/python',
      tag: '3.11',
      digest: '1'.repeat(64),
      ref: `library/python:3.11@${D1}`,
    });
    assert.deepEqual(parseRefOrDigest(D2), { kind: 'digest', digest: D2 });
  });
  for (const bad of [
    'python',
    'Python:3',
    'python:',
    'py thon:1',
    'python:3.11@sha256:abc',
    `python:3.11@${'1'.repeat(64)}`,
    'sha256:xyz',
    '../etc:1',
    'a:b/c',
  ]) {
    it(`refuses ${JSON.stringify(bad)} as image.bad_ref`, () =>
      assert.equal(
        code(() => parseRefOrDigest(bad)),
        'image.bad_ref',
      ));
  }
});

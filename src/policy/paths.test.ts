import fc from 'fast-check';
import assert from 'node:assert/strict';
import { posix } from 'node:path';
import { describe, it } from 'node:test';
import { propertyRuns } from '../test-support/props.js';
import { decidePath, isWithin, normalizeSandboxPath } from './paths.js';

const fsPolicy = { read: ['/data/inputs'], write: ['/data/outputs'] };

describe('normalizeSandboxPath', () => {
  it('removes ., .., duplicate and trailing slashes; .. stops at the root', () => {
    assert.equal(normalizeSandboxPath('/data//inputs/./a/../b/'), '/data/inputs/b');
    assert.equal(normalizeSandboxPath('/../../etc/passwd'), '/etc/passwd');
    assert.equal(normalizeSandboxPath('/'), '/');
  });
  it('refuses relative, empty and NUL-carrying paths', () => {
    for (const p of ['', 'data', './x', '/a\0b']) assert.equal(normalizeSandboxPath(p), null, JSON.stringify(p));
  });
});

describe('decidePath', () => {
  it('allows inside a grant at a component boundary only', () => {
    assert.equal(decidePath(fsPolicy, 'read', '/data/inputs/a.csv').allow, true);
    assert.equal(decidePath(fsPolicy, 'read', '/data/inputs').allow, true);
    const sibling = decidePath(fsPolicy, 'read', '/data/inputs2/a.csv');
    assert.equal(sibling.allow, false);
    assert.equal(!sibling.allow && sibling.reason, 'fs.denied.not_granted');
  });
  it('write implies read; read never implies write', () => {
    assert.equal(decidePath(fsPolicy, 'read', '/data/outputs/x').allow, true);
    const d = decidePath(fsPolicy, 'write', '/data/inputs/x');
    assert.equal(!d.allow && d.reason, 'fs.denied.read_only');
    assert.equal(decidePath(fsPolicy, 'write', '/data/outputs/x').allow, true);
  });
  it('normalizes before deciding: .. cannot climb out of a grant', () => {
    const d = decidePath(fsPolicy, 'read', '/data/inputs/../../etc/shadow');
    assert.equal(d.allow, false);
    assert.equal(decidePath(fsPolicy, 'read', '/data/outputs/../inputs/./x').allow, true);
  });
  it('denies everything when nothing is granted, and invalid paths', () => {
    const none = { read: [], write: [] };
    assert.equal(decidePath(none, 'read', '/etc/passwd').allow, false);
    const d = decidePath(fsPolicy, 'read', 'data/inputs');
    assert.equal(!d.allow && d.reason, 'fs.denied.invalid_path');
  });

  describe('property: an allowed path is, after normalization, inside a grant', () => {
    const segment = fc.oneof(
      fc.constantFrom('data', 'inputs', 'outputs', 'inputs2', '..', '.', '', 'etc', 'shadow', '...', 'inputs..', '.hidden'),
      fc.string({ minLength: 1, maxLength: 4 }).filter((s) => !s.includes('/') && !s.includes('\0')),
    );
    const path = fc.array(segment, { maxLength: 8 }).map((segs) => '/' + segs.join('/'));
    for (const [label, params] of propertyRuns()) {
      it(label, () => {
        fc.assert(
          fc.property(path, fc.constantFrom('read' as const, 'write' as const), (p, mode) => {
            const d = decidePath(fsPolicy, mode, p);
            const oracle = posix.normalize(p).replace(/\/+$/, '') || '/';
            const grants = mode === 'write' ? fsPolicy.write : [...fsPolicy.read, ...fsPolicy.write];
            const inside = grants.some((g) => oracle === g || oracle.startsWith(g + '/'));
            assert.equal(d.allow, inside, `${p} (${oracle})`);
          }),
          params,
        );
      });
    }
  });
});

describe('isWithin', () => {
  it('respects component boundaries', () => {
    assert.equal(isWithin('/a/b', '/a'), true);
    assert.equal(isWithin('/ab', '/a'), false);
    assert.equal(isWithin('/a', '/a'), true);
    assert.equal(isWithin('/x', '/'), true);
  });
});

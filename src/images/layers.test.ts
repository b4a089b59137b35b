import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImageError } from './errors.js';
import { classify, normalizeEntryName, resolveInRoot, type RootView, symlinkEscapes } from './layers.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ImageError);
    return err.code;
  }
  return 'no error';
}

/** A rootfs described as a map: path -> 'dir' | symlink target | 'file'. */
function view(tree: Record<string, string>): RootView {
  return {
    kind: (p) => {
      const v = tree[p.join('/')];
      return v === undefined ? 'missing' : v === 'dir' ? 'dir' : v === 'file' ? 'other' : 'symlink';
    },
    readlink: (p) => tree[p.join('/')] as string,
  };
}

describe('layer entries', () => {
  it('normalizes names', () => {
    assert.deepEqual(normalizeEntryName('./usr//bin/'), ['usr', 'bin']);
    assert.deepEqual(normalizeEntryName('./'), []);
  });

  it('classifies whiteouts, opaque markers and AUFS metadata', () => {
    assert.deepEqual(classify({ name: 'etc/.wh.passwd', type: 'file' }), { op: 'whiteout', path: ['etc', 'passwd'] });
    assert.deepEqual(classify({ name: './opt/.wh..wh..opq', type: 'file' }), { op: 'opaque', dir: ['opt'] });
    assert.deepEqual(classify({ name: '.wh..wh..opq', type: 'file' }), { op: 'opaque', dir: [] });
    assert.equal(classify({ name: '.wh..wh.plnk/1.2', type: 'directory' }).op, 'skip');
    assert.deepEqual(classify({ name: 'dev/null', type: 'character-device' }).op, 'skip');
    assert.deepEqual(classify({ name: 'bin/su', type: 'file', mode: 0o104755, uid: 0, gid: 0, size: 3 }), {
      op: 'file',
      path: ['bin', 'su'],
      mode: 0o4755,
      uid: 0,
      gid: 0,
      size: 3,
    });
    assert.deepEqual(classify({ name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' }).op, 'symlink');
    assert.deepEqual(classify({ name: 'usr/lib/x', type: 'symlink', linkname: '../../lib/y' }).op, 'symlink');
  });

  describe('when an entry is hostile', () => {
    const cases: [string, Parameters<typeof classify>[0]][] = [
      ['a ../ name', { name: 'usr/../../etc/passwd', type: 'file' }],
      ['an absolute name', { name: '/etc/passwd', type: 'file' }],
      ['a NUL in the name', { name: 'etc/pass\0wd', type: 'file' }],
      ['a symlink climbing above the root', { name: 'usr/lib/x', type: 'symlink', linkname: '../../../etc/shadow' }],
      ['a symlink at the top climbing out', { name: 'x', type: 'symlink', linkname: '..' }],
      ['an absolute hard link', { name: 'x', type: 'link', linkname: '/etc/shadow' }],
      ['a traversing hard link', { name: 'x', type: 'link', linkname: 'a/../../etc/shadow' }],
      ['a whiteout of ..', { name: 'etc/.wh...', type: 'file' }],
      ['a file naming the root', { name: './', type: 'file' }],
    ];
    for (const [what, h] of cases)
      it(`refuses ${what}`, () =>
        assert.equal(
          code(() => classify(h)),
          'image.unsafe_entry',
        ));
  });

  it('symlinkEscapes counts depth from the link directory', () => {
    assert.equal(symlinkEscapes(['a', 'b', 'l'], '../../x'), false);
    assert.equal(symlinkEscapes(['a', 'b', 'l'], '../../../x'), true);
    assert.equal(symlinkEscapes(['l'], './x/../y'), false);
    assert.equal(symlinkEscapes(['l'], '/anything/../..'), false, 'absolute targets resolve inside the container root');
  });
});

describe('resolveInRoot (chroot-style, never leaves the rootfs)', () => {
  const tree = {
    usr: 'dir',
    'usr/lib': 'dir',
    lib: 'usr/lib',
    abs: '/usr',
    up: '../../../..',
    loop1: 'loop2',
    loop2: 'loop1',
    file: 'file',
  };
  it('follows relative and absolute links and clamps ..', () => {
    assert.deepEqual(resolveInRoot(view(tree), ['lib', 'x.so']), { parent: ['usr', 'lib'], name: 'x.so' });
    assert.deepEqual(resolveInRoot(view(tree), ['abs', 'lib', 'y']), { parent: ['usr', 'lib'], name: 'y' });
    assert.deepEqual(resolveInRoot(view(tree), ['up', 'usr', 'z']), { parent: ['usr'], name: 'z' }, '.. above the root stays at the root');
    assert.deepEqual(resolveInRoot(view(tree), ['lib']), { parent: [], name: 'lib' }, 'the last component is not followed');
  });
  it('returns null for a missing parent, and refuses loops and files used as directories', () => {
    assert.equal(resolveInRoot(view(tree), ['nope', 'x']), null);
    assert.equal(
      code(() => resolveInRoot(view(tree), ['loop1', 'x'])),
      'image.unsafe_entry',
    );
    assert.equal(
      code(() => resolveInRoot(view(tree), ['file', 'x'])),
      'image.unsafe_entry',
    );
  });
});

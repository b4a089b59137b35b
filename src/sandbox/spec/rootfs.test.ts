import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SandboxError } from '../errors.js';
import { dirsToList, planRootfs, type ImageEntry, type ImageListing } from './rootfs.js';

const debianRoot: ImageEntry[] = [
  { name: 'bin', type: 'symlink', target: 'usr/bin' },
  { name: 'etc', type: 'dir' },
  { name: 'usr', type: 'dir' },
  { name: 'tmp', type: 'dir' },
  { name: 'proc', type: 'dir' },
  { name: 'home', type: 'dir' },
  { name: 'null', type: 'other' },
];

describe('planRootfs', () => {
  it('lists every proper ancestor of the targets', () => {
    assert.deepEqual(dirsToList(['/agent', '/data/outputs', '/home/a/b']), ['/', '/data', '/home', '/home/a']);
  });
  it('binds image directories, re-creates links, and makes the targets', () => {
    const listing: ImageListing = new Map<string, ImageEntry[] | 'missing'>([
      ['/', debianRoot],
      ['/data', 'missing'],
    ]);
    const plan = planRootfs(['/agent', '/data/outputs', '/proc', '/tmp'], listing);
    assert.deepEqual(plan.binds, ['/etc', '/usr', '/home']);
    assert.deepEqual(plan.skeleton, [
      { kind: 'symlink', path: '/bin', target: 'usr/bin' },
      { kind: 'dir', path: '/etc' },
      { kind: 'dir', path: '/usr' },
      { kind: 'dir', path: '/tmp' },
      { kind: 'dir', path: '/proc' },
      { kind: 'dir', path: '/home' },
      { kind: 'dir', path: '/agent' },
      { kind: 'dir', path: '/data' },
      { kind: 'dir', path: '/data/outputs' },
    ]);
  });
  it('mirrors an image directory that holds a target instead of binding it', () => {
    const listing: ImageListing = new Map<string, ImageEntry[]>([
      ['/', debianRoot],
      [
        '/home',
        [
          { name: 'user', type: 'dir' },
          { name: '.profile', type: 'file' },
        ],
      ],
    ]);
    const plan = planRootfs(['/home/out'], listing);
    assert.ok(!plan.binds.includes('/home'));
    assert.ok(plan.binds.includes('/home/user') && plan.binds.includes('/home/.profile'));
    assert.ok(plan.skeleton.some((e) => e.kind === 'file' && e.path === '/home/.profile'));
  });
  describe('when the image has a link where a target needs a directory', () => {
    it('refuses (a hostile image must not redirect a mount)', () => {
      const listing: ImageListing = new Map<string, ImageEntry[] | 'notdir'>([
        ['/', debianRoot],
        ['/bin', 'notdir'],
      ]);
      assert.throws(
        () => planRootfs(['/bin/out'], listing),
        (e) => e instanceof SandboxError && e.code === 'sandbox.invalid_spec',
      );
    });
  });
});

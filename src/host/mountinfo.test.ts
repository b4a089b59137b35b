import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { mountsBelow, parseMountinfo } from './mountinfo.js';

// proc(5)'s example line, one with escapes and optional fields, and garbage.
const TEXT = [
  '36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
  '40 36 0:44 / /srv/with\\040space\\134x rw shared:7 master:2 - tmpfs tmp\\040fs rw,size=1024k',
  '41 36 0:45 / /srv/with\\040space\\134x/inner ro - tmpfs none ro',
  'not a mountinfo line',
  '42 36 0:46 / /short',
  '',
].join('\n');

describe('parseMountinfo', () => {
  it('decodes fields, octal escapes and optional fields', () => {
    const m = parseMountinfo(TEXT);
    assert.equal(m.length, 3);
    assert.deepEqual(m[0], {
      root: '/mnt1',
      mountPoint: '/mnt/parent',
      options: ['rw', 'noatime'],
      fstype: 'ext3',
      source: '/dev/root',
      superOptions: ['rw', 'errors=continue'],
    });
    assert.equal(m[1]!.mountPoint, '/srv/with space\\x');
    assert.equal(m[1]!.source, 'tmp fs');
  });
  it('lists the mounts at or below a directory, deepest first, at component boundaries', () => {
    const m = parseMountinfo(TEXT);
    assert.deepEqual(mountsBelow('/srv/with space\\x', m), ['/srv/with space\\x/inner', '/srv/with space\\x']);
    assert.deepEqual(mountsBelow('/mnt/par', m), []);
  });
  it('reads this process own mountinfo (the root is mounted)', () => {
    assert.ok(parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).some((e) => e.mountPoint === '/'));
  });
});

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { mountsBelow, parseMountinfo } from '../host/mountinfo.js';
import { sweepStaging } from './staging.js';

it('finds mounts below a staging directory, deepest first, decoding octal escapes', () => {
  const mi = [
    '22 1 254:0 / / rw,relatime - ext4 /dev/vda rw',
    '90 22 0:5 / /var/lib/aegis/images/tmp/build-1/rootfs/proc rw - proc proc rw',
    '91 90 0:6 / /var/lib/aegis/images/tmp/build-1/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw',
    '92 22 0:7 / /var/lib/aegis/images/tmp/build-10/rootfs/sys rw - sysfs sysfs rw',
    '93 22 0:8 / /var/lib/aegis/images/tmp/build-1/rootfs/with\\040space rw - tmpfs t rw',
  ].join('\n');
  assert.deepEqual(mountsBelow('/var/lib/aegis/images/tmp/build-1', parseMountinfo(mi)), [
    '/var/lib/aegis/images/tmp/build-1/rootfs/proc/sys/fs/binfmt_misc',
    '/var/lib/aegis/images/tmp/build-1/rootfs/with space',
    '/var/lib/aegis/images/tmp/build-1/rootfs/proc',
  ]);
});

it('sweeps staging directories of dead processes only', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'aegis-sweep-'));
  for (const n of ['build-111-abc', 'import-222-def', 'build-333-0a1', 'notes', 'rm-abc-123']) mkdirSync(join(tmp, n));
  const removed = sweepStaging(tmp, (pid) => pid === 333);
  assert.deepEqual(removed.sort(), ['build-111-abc', 'import-222-def']);
  assert.deepEqual(readdirSync(tmp).sort(), ['build-333-0a1', 'notes', 'rm-abc-123']);
  rmSync(tmp, { recursive: true });
});

import assert from 'node:assert/strict';
import { it } from 'node:test';
import { mountsBelow } from './staging.js';

it('finds mounts below a staging directory, deepest first, decoding octal escapes', () => {
  const mi = [
    '22 1 254:0 / / rw,relatime - ext4 /dev/vda rw',
    '90 22 0:5 / /var/lib/aegis/images/tmp/build-1/rootfs/proc rw - proc proc rw',
    '91 90 0:6 / /var/lib/aegis/images/tmp/build-1/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw',
    '92 22 0:7 / /var/lib/aegis/images/tmp/build-10/rootfs/sys rw - sysfs sysfs rw',
    '93 22 0:8 / /var/lib/aegis/images/tmp/build-1/rootfs/with\\040space rw - tmpfs t rw',
  ].join('\n');
  assert.deepEqual(mountsBelow('/var/lib/aegis/images/tmp/build-1', mi), [
    '/var/lib/aegis/images/tmp/build-1/rootfs/proc/sys/fs/binfmt_misc',
    '/var/lib/aegis/images/tmp/build-1/rootfs/with space',
    '/var/lib/aegis/images/tmp/build-1/rootfs/proc',
  ]);
});

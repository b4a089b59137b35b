/** Host-side checks done before any sandbox starts: code dir and volume resolution. */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Policy } from '../policy/types.js';
import { SandboxError, type SandboxErrorCode } from './errors.js';
import { AGENT_HOST_GID, AGENT_HOST_UID, parseVolumeFlag, resolveCodeDir, resolveVolumes } from './run.js';
import { DEFAULT_RW_VOLUME_BYTES } from './volumes.js';
import { hasCode } from '../test-support/errors.js';

const base = mkdtempSync(join(tmpdir(), 'aegis-run-unit-'));
chmodSync(base, 0o755);
after(() => rmSync(base, { recursive: true, force: true }));

const code = (c: SandboxErrorCode) => hasCode(SandboxError, c);

function fsPolicy(read: string[], write: string[]): Policy {
  return { fs: { read, write } } as unknown as Policy;
}

describe('resolveCodeDir', () => {
  const manifestDir = join(base, 'agent');
  mkdirSync(join(manifestDir, 'src'), { recursive: true });
  mkdirSync(join(base, 'outside'));
  symlinkSync(join(base, 'outside'), join(manifestDir, 'escape'));
  symlinkSync('src', join(manifestDir, 'inside'));
  chmodSync(manifestDir, 0o755);
  chmodSync(join(manifestDir, 'src'), 0o755);

  it('resolves the manifest folder and subfolders (symlinks inside are fine)', () => {
    assert.equal(resolveCodeDir(manifestDir, '.'), manifestDir);
    assert.equal(resolveCodeDir(manifestDir, 'inside'), join(manifestDir, 'src'));
  });
  describe('when the code dir escapes the manifest folder', () => {
    it('refuses ..', () => assert.throws(() => resolveCodeDir(manifestDir, '../outside'), code('sandbox.code_dir_refused')));
    it('refuses a symlink pointing outside', () =>
      assert.throws(() => resolveCodeDir(manifestDir, 'escape'), code('sandbox.code_dir_refused')));
    it('refuses a missing dir', () => assert.throws(() => resolveCodeDir(manifestDir, 'nope'), code('sandbox.code_dir_refused')));
  });
});

describe('resolveVolumes', () => {
  const host = join(base, 'data');
  mkdirSync(host);
  symlinkSync(host, join(base, 'link-to-data'));
  const policy = fsPolicy(['/data/in'], ['/data/out']);

  it('resolves symlinks in the host path and keeps granted volumes', () => {
    assert.deepEqual(resolveVolumes(policy, [{ host: join(base, 'link-to-data'), sandbox: '/data/in/', mode: 'ro' }]), [
      { host, sandbox: '/data/in', mode: 'ro' },
    ]);
    assert.deepEqual(resolveVolumes(policy, [{ host, sandbox: '/data/out', mode: 'rw' }]), [
      { host, sandbox: '/data/out', mode: 'rw', sizeBytes: DEFAULT_RW_VOLUME_BYTES },
    ]);
    assert.deepEqual(resolveVolumes(policy, [{ host, sandbox: '/data/out', mode: 'rw', sizeBytes: 100 * 1024 ** 2 }]), [
      { host, sandbox: '/data/out', mode: 'rw', sizeBytes: 100 * 1024 ** 2 },
    ]);
  });
  it('gives rw volumes a default size of 1 GiB', () => assert.equal(DEFAULT_RW_VOLUME_BYTES, 1024 ** 3));
  describe('when an rw size is out of bounds', () => {
    for (const size of [0, 1024, 7 * 1024 ** 2, 17 * 1024 ** 4, 1.5 * 1024 ** 3 + 0.5, Number.NaN]) {
      it(`refuses ${size}`, () =>
        assert.throws(
          () => resolveVolumes(policy, [{ host, sandbox: '/data/out', mode: 'rw', sizeBytes: size }]),
          code('sandbox.volume_refused'),
        ));
    }
  });
  describe('when the sandbox cannot read an ro volume (it would only fail inside)', () => {
    // Regression (issue 8): a 0700 input folder was found only when the agent failed inside.
    const privateDir = join(base, 'private');
    mkdirSync(privateDir, { mode: 0o700 });
    chmodSync(privateDir, 0o700);
    const closedParent = join(base, 'closed');
    mkdirSync(join(closedParent, 'open'), { recursive: true });
    chmodSync(join(closedParent, 'open'), 0o755);
    chmodSync(closedParent, 0o700);
    const agentOwned = join(base, 'agent-owned');
    mkdirSync(agentOwned, { mode: 0o500 });
    chmodSync(agentOwned, 0o500);
    chownSync(agentOwned, AGENT_HOST_UID, AGENT_HOST_GID);
    it('refuses a 0700 folder of another user', () =>
      assert.throws(
        () => resolveVolumes(policy, [{ host: privateDir, sandbox: '/data/in', mode: 'ro' }]),
        code('sandbox.volume_unreadable'),
      ));
    it('refuses a folder below an unsearchable one', () =>
      assert.throws(
        () => resolveVolumes(policy, [{ host: join(closedParent, 'open'), sandbox: '/data/in', mode: 'ro' }]),
        code('sandbox.volume_unreadable'),
      ));
    it("accepts a 0500 folder owned by the sandbox's host uid", () =>
      assert.equal(resolveVolumes(policy, [{ host: agentOwned, sandbox: '/data/in', mode: 'ro' }])[0]?.host, agentOwned));
    it('does not ask rw volumes to be readable (they are copied in by AEGIS)', () =>
      assert.equal(resolveVolumes(policy, [{ host: privateDir, sandbox: '/data/out', mode: 'rw' }])[0]?.host, privateDir));
  });
  describe('when the sandbox path is not granted for the mode', () => {
    for (const [what, v] of Object.entries({
      'undeclared path': { host, sandbox: '/etc', mode: 'ro' as const },
      'rw on a read grant': { host, sandbox: '/data/in', mode: 'rw' as const },
      'traversal out of a grant': { host, sandbox: '/data/in/../../etc', mode: 'ro' as const },
      'reserved /agent': { host, sandbox: '/agent', mode: 'ro' as const },
      'reserved /proc': { host, sandbox: '/proc/x', mode: 'ro' as const },
      'relative path': { host, sandbox: 'data/in', mode: 'ro' as const },
      'missing host path': { host: join(base, 'missing'), sandbox: '/data/in', mode: 'ro' as const },
      // Regression (security review): mounts below a bind source stay writable under `ro`.
      'a host folder with mounts below it (/)': { host: '/', sandbox: '/data/in', mode: 'ro' as const },
    })) {
      it(`refuses: ${what}`, () => assert.throws(() => resolveVolumes(policy, [v]), code('sandbox.volume_refused')));
    }
  });
});

describe('parseVolumeFlag', () => {
  it('defaults to read-only', () => assert.deepEqual(parseVolumeFlag('/a:/b'), { host: '/a', sandbox: '/b', mode: 'ro' }));
  it('takes :rw', () => assert.deepEqual(parseVolumeFlag('/a:/b:rw'), { host: '/a', sandbox: '/b', mode: 'rw' }));
  it('takes a size for rw volumes', () => {
    assert.deepEqual(parseVolumeFlag('/a:/b:rw,size=100M'), { host: '/a', sandbox: '/b', mode: 'rw', sizeBytes: 100 * 1024 ** 2 });
    assert.equal(parseVolumeFlag('/a:/b:rw,size=2g').sizeBytes, 2 * 1024 ** 3);
    assert.equal(parseVolumeFlag('/a:/b:rw,size=64MiB').sizeBytes, 64 * 1024 ** 2);
    assert.equal(parseVolumeFlag('/a:/b:rw,size=100MB').sizeBytes, 100_000_000);
  });
  for (const bad of [
    '/a',
    '/a:/b:rx',
    ':/b',
    '/a:',
    '/a:/b:rw:x',
    '/a:/b:ro,size=1G',
    '/a:/b:rw,size=',
    '/a:/b:rw,size=1Q',
    '/a:/b:rw,size=-1G',
    '/a:/b:rw,size=1G,size=2G',
    '/a:/b:rw,uid=0',
    '/a:/b:rw,',
  ]) {
    it(`refuses "${bad}"`, () => assert.throws(() => parseVolumeFlag(bad), code('sandbox.volume_refused')));
  }
});

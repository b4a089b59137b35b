/** Host-side checks done before any sandbox starts: code dir and volume resolution. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Policy } from '../policy/types.js';
import { SandboxError, type SandboxErrorCode } from './errors.js';
import { parseVolumeFlag, resolveCodeDir, resolveVolumes } from './run.js';
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
    it('refuses a symlink pointing outside', () => assert.throws(() => resolveCodeDir(manifestDir, 'escape'), code('sandbox.code_dir_refused')));
    it('refuses a missing dir', () => assert.throws(() => resolveCodeDir(manifestDir, 'nope'), code('sandbox.code_dir_refused')));
  });
});

describe('resolveVolumes', () => {
  const host = join(base, 'data');
  mkdirSync(host);
  symlinkSync(host, join(base, 'link-to-data'));
  const policy = fsPolicy(['/data/in'], ['/data/out']);

  it('resolves symlinks in the host path and keeps granted volumes', () => {
    assert.deepEqual(resolveVolumes(policy, [{ host: join(base, 'link-to-data'), sandbox: '/data/in/', mode: 'ro' }]), [{ host, sandbox: '/data/in', mode: 'ro' }]);
    assert.deepEqual(resolveVolumes(policy, [{ host, sandbox: '/data/out', mode: 'rw' }]), [{ host, sandbox: '/data/out', mode: 'rw' }]);
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
  for (const bad of ['/a', '/a:/b:rx', ':/b', '/a:', '/a:/b:rw:x']) {
    it(`refuses "${bad}"`, () => assert.throws(() => parseVolumeFlag(bad), code('sandbox.volume_refused')));
  }
});

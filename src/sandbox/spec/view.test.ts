import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decidePath } from '../../policy/paths.js';
import type { Policy } from '../../policy/types.js';
import { CODE_MOUNT, MASKED_PATHS, TMP_MOUNT } from './compile.js';
import { decideSandboxPath, sandboxConfig } from './view.js';

function policy(fs: Partial<Policy['fs']> = {}): Policy {
  return {
    version: '1.0',
    agent: {
      name: 'a',
      runtime: { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' },
      entrypoint: ['python3', 'main.py'],
      env: {},
      secretRefs: {},
      isolation: null,
      code: '.',
    },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: fs.read ?? [], write: fs.write ?? [] },
    limits: { timeoutMs: 1000, memoryBytes: 1 << 27, cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 }, pids: 64 },
    syscalls: { deny: [] },
  };
}

const P = policy({ read: ['/data/inputs'], write: ['/data/outputs'] });
const verdict = (p: Policy, mode: 'read' | 'write', path: string, volumes = [] as Parameters<typeof decideSandboxPath>[3]) => {
  const d = decideSandboxPath(p, mode, path, volumes);
  return `${d.allow ? 'allow' : 'deny'} ${d.reason} ${d.mount}`;
};

describe('decideSandboxPath', () => {
  describe('regression: policy test answered deny for paths the agent can read or write', () => {
    it('/tmp is a writable tmpfs', () => {
      assert.equal(verdict(P, 'write', '/tmp/x'), `allow fs.allowed.tmpfs ${TMP_MOUNT}`);
      assert.equal(verdict(P, 'read', '/tmp/x'), `allow fs.allowed.tmpfs ${TMP_MOUNT}`);
    });
    it('/agent is the code, readable, not writable', () => {
      assert.equal(verdict(P, 'read', '/agent/main.py'), `allow fs.allowed.code ${CODE_MOUNT}`);
      assert.equal(verdict(P, 'write', '/agent/main.py'), `deny fs.denied.code_readonly ${CODE_MOUNT}`);
    });
    it('the image root is readable, not writable', () => {
      assert.equal(verdict(P, 'read', '/etc/passwd'), 'allow fs.allowed.image /');
      assert.equal(verdict(P, 'write', '/etc/passwd'), 'deny fs.denied.image_readonly /');
      assert.equal(verdict(P, 'write', '/data/outputs/../../etc/passwd'), 'deny fs.denied.image_readonly /');
    });
  });

  it('answers grants like the sandbox mounts them: write grants are tmpfs, read grants read-only', () => {
    assert.equal(verdict(P, 'write', '/data/outputs/r.txt'), 'allow fs.allowed.write /data/outputs');
    assert.equal(verdict(P, 'read', '/data/outputs/r.txt'), 'allow fs.allowed.read /data/outputs');
    assert.equal(verdict(P, 'read', '/data/inputs/a.csv'), 'allow fs.allowed.read /data/inputs');
    assert.equal(verdict(P, 'write', '/data/inputs/a.csv'), 'deny fs.denied.read_only /data/inputs');
    assert.match(decideSandboxPath(P, 'write', '/data/outputs/x').detail, /tmpfs for the run, gone afterwards \(no volume attached\)/);
    assert.equal(verdict(P, 'write', '/data/inputs2/a'), 'deny fs.denied.image_readonly /');
  });

  it('a read grant inside a write grant is read-only, as mounted (decidePath answers the grant question)', () => {
    const nested = policy({ read: ['/data/in'], write: ['/data'] });
    assert.equal(verdict(nested, 'write', '/data/in/x'), 'deny fs.denied.read_only /data/in');
    assert.equal(verdict(nested, 'write', '/data/x'), 'allow fs.allowed.write /data');
    assert.equal(decidePath(nested.fs, 'write', '/data/in/x').allow, true);
  });

  it("a volume takes the place of the grant's tmpfs", () => {
    const vols = [{ host: '/srv/out', sandbox: '/data/outputs', mode: 'rw' as const }];
    assert.equal(verdict(P, 'write', '/data/outputs/x', vols), 'allow fs.allowed.write /data/outputs');
    assert.match(decideSandboxPath(P, 'write', '/data/outputs/x', vols).detail, /the host folder \/srv\/out/);
    const ro = [{ host: '/srv/in', sandbox: '/data/inputs', mode: 'ro' as const }];
    assert.equal(verdict(P, 'write', '/data/inputs/x', ro), 'deny fs.denied.read_only /data/inputs');
  });

  it('kernel filesystems: readable, masked paths and /proc/sys refused, standard devices writable', () => {
    for (const m of MASKED_PATHS) assert.equal(verdict(P, 'read', `${m}`), `deny fs.denied.masked ${m}`);
    assert.equal(verdict(P, 'read', '/proc/self/status'), 'allow fs.allowed.kernel /proc');
    assert.equal(verdict(P, 'write', '/proc/sys/kernel/hostname'), 'deny fs.denied.kernel_readonly /proc/sys');
    assert.equal(verdict(P, 'write', '/sys/kernel/x'), 'deny fs.denied.kernel_readonly /sys');
    assert.equal(verdict(P, 'write', '/dev/null'), 'allow fs.allowed.device /dev');
    assert.equal(verdict(P, 'write', '/dev/evil'), 'deny fs.denied.kernel_readonly /dev');
    assert.equal(verdict(P, 'write', '/dev/shm/x'), 'allow fs.allowed.tmpfs /dev/shm');
  });

  it('denies what is not an absolute path', () => {
    for (const bad of ['', 'tmp/x', '/a\0b', `/${'a'.repeat(5000)}`])
      assert.equal(verdict(P, 'read', bad), 'deny fs.denied.invalid_path /');
  });

  it('reads the view off the bundle a run gets (read-only root, /tmp and /agent mounts)', () => {
    const v = sandboxConfig(P);
    assert.equal(v.root.readonly, true);
    assert.ok(v.mounts.some((m) => m.destination === TMP_MOUNT && m.type === 'tmpfs'));
    assert.ok(v.mounts.some((m) => m.destination === CODE_MOUNT && m.options.includes('ro')));
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { OciConfig } from '../spec/oci.js';
import { RUNSC_BASE_TASKS, RunscDriver } from './runsc.js';

const base = {
  process: { user: { uid: 1000, gid: 1000, additionalGids: [] } },
  linux: {
    namespaces: [{ type: 'pid' }, { type: 'mount' }, { type: 'network' }, { type: 'user' }],
    uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
    gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
  },
} as unknown as OciConfig;
const run = { id: 'x', bundleDir: '/b', stateRoot: '/s', pidFile: '/b/pid' };

describe('RunscDriver', () => {
  const d = new RunscDriver('runsc');
  it('runs without any network for a fresh namespace, and keeps the user namespace', () => {
    assert.equal(d.adapt(base), base);
    assert.ok(d.runArgs(run).includes('--network=none'));
    assert.ok(d.runArgs(run).includes('--oci-seccomp'));
  });
  it("uses the joined gateway namespace's sockets (--network=host), without an OCI user namespace", () => {
    const joined = {
      ...base,
      linux: {
        ...base.linux,
        namespaces: base.linux.namespaces.map((n) => (n.type === 'network' ? { type: 'network', path: '/run/netns/a' } : n)),
      },
    } as OciConfig;
    const a = d.adapt(joined);
    assert.deepEqual(
      a.linux.namespaces.map((n) => n.type),
      ['pid', 'mount', 'network'],
    );
    assert.deepEqual(a.linux.uidMappings, []);
    assert.deepEqual([a.process.user.uid, a.process.user.gid], [101000, 101000], 'the mapped ids, never a host account');
    const args = d.runArgs({ ...run, networkNamespace: '/run/netns/a' });
    assert.ok(args.includes('--network=host'));
    assert.ok(!args.includes('--network=none'));
    assert.ok(args.includes('--oci-seccomp'), 'the seccomp profile still applies');
  });
  it('allows the Sentry and gofer host tasks per mount (a grant inside /etc once failed at start with StartRoot EOF)', () => {
    const withMounts = (n: number): OciConfig =>
      ({
        ...base,
        mounts: Array.from({ length: n }, (_, i) => ({ destination: `/m${i}`, type: 'tmpfs', source: 'tmpfs', options: [] })),
      }) as OciConfig;
    assert.equal(d.pidsOverhead(withMounts(0)), RUNSC_BASE_TASKS);
    // 94 mounts needed 374 host tasks (measured): the allowance must cover them.
    assert.ok(d.pidsOverhead(withMounts(94)) >= 374 + 32, `allowance ${d.pidsOverhead(withMounts(94))}`);
    // ... and a typical bundle (20 mounts) keeps the allowance it had (the agent gains no processes).
    assert.equal(d.pidsOverhead(withMounts(20)), 128);
    assert.ok(d.pidsOverhead(withMounts(20)) < d.pidsOverhead(withMounts(21)));
  });
});

describe('runsc adapt: clone3', () => {
  it('allows clone3 to the Sentry (it answers ENOSYS itself; this runsc ignores errnoRet), and nothing else changes', async () => {
    const { compileSeccomp } = await import('../spec/seccomp.js');
    const seccomp = compileSeccomp();
    const config = { linux: { namespaces: [], seccomp }, process: { user: { uid: 1000, gid: 1000 } } } as unknown as OciConfig;
    const adapted = new RunscDriver().adapt(config);
    const rules = adapted.linux.seccomp.syscalls;
    assert.deepEqual(
      rules.find((r) => r.names.includes('clone3')),
      { names: ['clone3'], action: 'SCMP_ACT_ALLOW' },
    );
    assert.deepEqual(
      rules.filter((r) => !r.names.includes('clone3')),
      seccomp.syscalls.filter((r) => !r.names.includes('clone3')),
    );
  });
});

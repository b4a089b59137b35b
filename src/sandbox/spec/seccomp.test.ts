import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isKnownSyscall } from '../../policy/syscalls.js';
import { SandboxError, type SandboxErrorCode } from '../errors.js';
import { CLONE_NAMESPACE_FLAGS, compileSeccomp, DENIED_ALWAYS, type SeccompProfile } from './seccomp.js';
import { hasCode } from '../../test-support/errors.js';

function allowedNames(p: SeccompProfile): Set<string> {
  return new Set(p.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW').flatMap((r) => r.names));
}

const code = (c: SandboxErrorCode) => hasCode(SandboxError, c);

describe('default seccomp profile', () => {
  const p = compileSeccomp();
  it('denies by default with EPERM, x86_64 only', () => {
    assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
    assert.equal(p.defaultErrnoRet, 1);
    assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64']);
  });
  it('allows none of the always-denied calls, under any condition', () => {
    const allowed = allowedNames(p);
    for (const n of DENIED_ALWAYS) assert.ok(!allowed.has(n), `${n} must not be allowed`);
    for (const n of [
      'mount',
      'umount2',
      'ptrace',
      'setuid',
      'setresgid',
      'kexec_load',
      'bpf',
      'perf_event_open',
      'keyctl',
      'add_key',
      'request_key',
      'unshare',
      'setns',
      'userfaultfd',
      'open_by_handle_at',
      'init_module',
      'finit_module',
      'reboot',
      'swapon',
    ]) {
      assert.ok(DENIED_ALWAYS.includes(n), `${n} is on the documented deny list`);
    }
  });
  it('names only system calls the kernel table knows', () => {
    for (const r of p.syscalls) for (const n of r.names) assert.ok(isKnownSyscall(n), n);
  });
  it('allows clone only without namespace flags, and clone3 answers ENOSYS', () => {
    const clone = p.syscalls.filter((r) => r.names.includes('clone'));
    assert.equal(clone.length, 1);
    assert.deepEqual(clone[0]?.args, [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }]);
    assert.deepEqual(
      p.syscalls.find((r) => r.names.includes('clone3')),
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
    );
  });
  it('allows socket only for unix/inet/inet6/netlink and never SOCK_RAW or AF_PACKET', () => {
    const sock = p.syscalls.filter((r) => r.names.includes('socket'));
    assert.ok(sock.length > 0);
    for (const r of sock) {
      const fam = r.args?.find((a) => a.index === 0);
      const typ = r.args?.find((a) => a.index === 1);
      assert.ok(fam && [1, 2, 10, 16].includes(fam.value) && fam.op === 'SCMP_CMP_EQ');
      assert.ok(typ && typ.op === 'SCMP_CMP_MASKED_EQ' && typ.value === 0xf && typ.valueTwo !== 3 && typ.valueTwo !== 10);
    }
  });
});

describe('when the manifest adds syscalls.deny', () => {
  it('removes them from every allow rule and never re-adds anything', () => {
    const p = compileSeccomp({ deny: ['mkdir', 'socket', 'clone3'] });
    const allowed = allowedNames(p);
    assert.ok(!allowed.has('mkdir'));
    assert.ok(!allowed.has('socket'));
    assert.ok(!p.syscalls.some((r) => r.names.includes('clone3')), 'clone3 falls to the default EPERM');
    const base = allowedNames(compileSeccomp());
    for (const n of allowed) assert.ok(base.has(n));
  });
  it('refuses an unknown name', () => {
    assert.throws(() => compileSeccomp({ deny: ['mkdri'] }), code('sandbox.invalid_spec'));
  });
});

describe('when a user profile is intersected', () => {
  it('keeps only what both allow (Docker-style allowlist)', () => {
    const user = {
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [{ names: ['read', 'write', 'exit_group', 'mount', 'ptrace'], action: 'SCMP_ACT_ALLOW' }],
    };
    const allowed = allowedNames(compileSeccomp({ userProfile: user }));
    assert.deepEqual([...allowed].sort(), ['exit_group', 'read', 'write']);
  });
  it('a denylist profile (default allow) only removes', () => {
    const user = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] };
    const allowed = allowedNames(compileSeccomp({ userProfile: user }));
    const base = allowedNames(compileSeccomp());
    assert.ok(!allowed.has('mkdir'));
    assert.equal(allowed.size, base.size - 1);
  });
  it('a deny rule wins over an allow rule for the same name', () => {
    const user = {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [
        { names: ['mkdir'], action: 'SCMP_ACT_ALLOW' },
        { names: ['mkdir'], action: 'SCMP_ACT_KILL' },
      ],
    };
    assert.ok(!allowedNames(compileSeccomp({ userProfile: user })).has('mkdir'));
  });
  it('combines conditions with AND, and drops conflicting pairs', () => {
    const user = {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [
        { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }] },
        { names: ['kill'], action: 'SCMP_ACT_ALLOW', args: [{ index: 1, value: 15, op: 'SCMP_CMP_EQ' }] },
      ],
    };
    const p = compileSeccomp({ userProfile: user });
    const pers = p.syscalls.filter((r) => r.names.includes('personality'));
    assert.deepEqual(
      pers.map((r) => r.args),
      [[{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }]],
    );
    const kill = p.syscalls.filter((r) => r.names.includes('kill'));
    assert.deepEqual(kill, [{ names: ['kill'], action: 'SCMP_ACT_ALLOW', args: [{ index: 1, value: 15, op: 'SCMP_CMP_EQ' }] }]);
  });
  it('ignores rules that need capabilities the agent does not have', () => {
    const user = {
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [
        { names: ['read'], action: 'SCMP_ACT_ALLOW' },
        { names: ['write'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
      ],
    };
    assert.deepEqual([...allowedNames(compileSeccomp({ userProfile: user }))], ['read']);
  });
  describe('when the profile is malformed (hostile input)', () => {
    for (const [name, bad] of Object.entries({
      'not an object': 42,
      'no defaultAction': { syscalls: [] },
      'syscalls not a list': { defaultAction: 'SCMP_ACT_ERRNO', syscalls: {} },
      'names not strings': { defaultAction: 'SCMP_ACT_ERRNO', syscalls: [{ names: [1], action: 'SCMP_ACT_ALLOW' }] },
      'bad op': {
        defaultAction: 'SCMP_ACT_ERRNO',
        syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 1, op: 'LIKE' }] }],
      },
      'index out of range': {
        defaultAction: 'SCMP_ACT_ERRNO',
        syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW', args: [{ index: 9, value: 1, op: 'SCMP_CMP_EQ' }] }],
      },
    })) {
      it(`refuses: ${name}`, () => assert.throws(() => compileSeccomp({ userProfile: bad }), code('sandbox.seccomp_profile_invalid')));
    }
  });
});

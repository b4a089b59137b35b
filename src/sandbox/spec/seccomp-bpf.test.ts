import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { SYSCALLS_X86_64 } from '../../policy/syscalls.js';
import { hasCode } from '../../test-support/errors.js';
import { SandboxError } from '../errors.js';
import { compileSeccomp, parseUserProfile, type SeccompArg, type SeccompProfile } from './seccomp.js';
import {
  AUDIT_ARCH_X86_64,
  BPF_MAXINSNS,
  compileSeccompBpf,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  syscallNumberX86_64,
} from './seccomp-bpf.js';

/**
 * A classic-BPF interpreter of the instructions the kernel's seccomp accepts (the test oracle
 * for the program: what the kernel would return for one struct seccomp_data).
 */
function runBpf(prog: Uint8Array, data: { nr: number; arch: number; args: readonly bigint[] }): number {
  const mem = new DataView(new ArrayBuffer(64));
  mem.setUint32(0, data.nr, true);
  mem.setUint32(4, data.arch, true);
  data.args.forEach((v, i) => mem.setBigUint64(16 + 8 * i, v, true));
  const view = new DataView(prog.buffer, prog.byteOffset, prog.byteLength);
  let a = 0;
  for (let pc = 0, steps = 0; pc < prog.length / 8; pc++, steps++) {
    assert.ok(steps < BPF_MAXINSNS, 'the program ends');
    const code = view.getUint16(pc * 8, true);
    const jt = view.getUint8(pc * 8 + 2);
    const jf = view.getUint8(pc * 8 + 3);
    const k = view.getUint32(pc * 8 + 4, true);
    switch (code) {
      case 0x20: // ld w abs
        assert.ok(k % 4 === 0 && k < 64, `load offset ${k}`);
        a = mem.getUint32(k, true);
        break;
      case 0x54: // and k
        a = (a & k) >>> 0;
        break;
      case 0x05: // ja
        pc += k;
        break;
      case 0x15: // jeq
        pc += a === k ? jt : jf;
        break;
      case 0x25: // jgt
        pc += a > k ? jt : jf;
        break;
      case 0x35: // jge
        pc += a >= k ? jt : jf;
        break;
      case 0x06: // ret
        return k;
      default:
        assert.fail(`opcode ${code.toString(16)} at ${pc}`);
    }
  }
  return assert.fail('fell off the end of the program');
}

/** What the profile says for one call: the reference reading of the OCI JSON (64-bit, unsigned). */
function reference(p: SeccompProfile, name: string, args: readonly bigint[]): number {
  const ret = (action: string, errno?: number): number =>
    action === 'SCMP_ACT_ALLOW' ? SECCOMP_RET_ALLOW : (SECCOMP_RET_ERRNO | (errno ?? p.defaultErrnoRet)) >>> 0;
  const holds = (c: SeccompArg): boolean => {
    const x = args[c.index] ?? 0n;
    const v = BigInt(c.value);
    switch (c.op) {
      case 'SCMP_CMP_EQ':
        return x === v;
      case 'SCMP_CMP_NE':
        return x !== v;
      case 'SCMP_CMP_LT':
        return x < v;
      case 'SCMP_CMP_LE':
        return x <= v;
      case 'SCMP_CMP_GT':
        return x > v;
      case 'SCMP_CMP_GE':
        return x >= v;
      case 'SCMP_CMP_MASKED_EQ':
        return (x & v) === BigInt(c.valueTwo ?? 0);
    }
  };
  const rules = p.syscalls.filter((r) => r.names.includes(name));
  const uncond = rules.filter((r) => (r.args ?? []).length === 0);
  const deny = uncond.find((r) => r.action !== 'SCMP_ACT_ALLOW');
  if (deny) return ret(deny.action, deny.errnoRet);
  const cond = rules.filter((r) => (r.args ?? []).length > 0);
  for (const r of [...cond.filter((r) => r.action !== 'SCMP_ACT_ALLOW'), ...cond.filter((r) => r.action === 'SCMP_ACT_ALLOW')])
    if ((r.args ?? []).every(holds)) return ret(r.action, r.errnoRet);
  if (uncond.length > 0) return SECCOMP_RET_ALLOW;
  return ret('SCMP_ACT_ERRNO', p.defaultErrnoRet);
}

const call = (prog: Uint8Array, name: string, args: readonly bigint[] = []): number =>
  runBpf(prog, { nr: syscallNumberX86_64(name) ?? -1, arch: AUDIT_ARCH_X86_64, args });
const EPERM = (SECCOMP_RET_ERRNO | 1) >>> 0;
const ENOSYS = (SECCOMP_RET_ERRNO | 38) >>> 0;

describe('seccomp profile compiled to BPF (the microVM guest installs it)', () => {
  it('numbers system calls as the kernel headers do (asm/unistd_64.h)', () => {
    const header = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';
    assert.ok(existsSync(header), `${header} (Debian linux-libc-dev, with libc6-dev) is the oracle`);
    const nums = new Map([...readFileSync(header, 'utf8').matchAll(/^#define __NR_(\w+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    for (const name of SYSCALLS_X86_64) assert.equal(syscallNumberX86_64(name), nums.get(name), name);
    assert.equal(syscallNumberX86_64('no_such_call'), null);
  });

  const profile = compileSeccomp();
  const prog = compileSeccompBpf(profile);

  it('fits the kernel limit', () => {
    assert.equal(prog.length % 8, 0);
    assert.ok(prog.length / 8 < BPF_MAXINSNS, `${prog.length / 8} instructions`);
  });

  it('answers every known call with no arguments as the profile does', () => {
    for (const name of SYSCALLS_X86_64) assert.equal(call(prog, name), reference(profile, name, []), name);
  });

  it('denies the escape calls with EPERM, clone3 with ENOSYS, and allows read', () => {
    for (const n of ['mount', 'ptrace', 'unshare', 'keyctl', 'bpf', 'setns', 'init_module', 'reboot'])
      assert.equal(call(prog, n), EPERM, n);
    assert.equal(call(prog, 'clone3'), ENOSYS);
    assert.equal(call(prog, 'read'), SECCOMP_RET_ALLOW);
  });

  it('kills calls of another architecture and of the x32 ABI', () => {
    assert.equal(runBpf(prog, { nr: 0, arch: 0x40000003 /* AUDIT_ARCH_I386 */, args: [] }), SECCOMP_RET_KILL_PROCESS);
    assert.equal(runBpf(prog, { nr: 0x40000000 + 165 /* x32 mount */, arch: AUDIT_ARCH_X86_64, args: [] }), SECCOMP_RET_KILL_PROCESS);
    assert.equal(runBpf(prog, { nr: 0x40000000, arch: AUDIT_ARCH_X86_64, args: [] }), SECCOMP_RET_KILL_PROCESS);
  });

  it('checks clone flags, socket families and personality on all 64 bits (property)', () => {
    const arg = fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.constantFrom(0n, 1n, 2n, 10n, 16n, 17n, 0x8n, 0x20000n, 0xffffffffn, 0x100000000n, 0x10000000n, 0x11n, 0x80002n, 3n, 5n),
    );
    fc.assert(
      fc.property(fc.constantFrom('clone', 'socket', 'personality'), fc.array(arg, { minLength: 6, maxLength: 6 }), (name, args) => {
        assert.equal(call(prog, name, args), reference(profile, name, args));
      }),
      { numRuns: 3000 },
    );
    // Known answers: a thread, a new network namespace, a raw socket, a TCP socket.
    assert.equal(call(prog, 'clone', [0x3d0f00n]), SECCOMP_RET_ALLOW);
    assert.equal(call(prog, 'clone', [0x40000000n]), EPERM);
    assert.equal(call(prog, 'socket', [2n, 3n]), EPERM);
    assert.equal(call(prog, 'socket', [2n, 1n | 0x80000n]), SECCOMP_RET_ALLOW);
    assert.equal(call(prog, 'socket', [2n + 2n ** 32n, 1n]), EPERM, 'the upper half of the argument counts');
  });

  it('applies permissions.syscalls.deny on top', () => {
    const p = compileSeccomp({ deny: ['mkdir', 'mkdirat'] });
    const b = compileSeccompBpf(p);
    assert.equal(call(b, 'mkdir'), EPERM);
    assert.equal(call(b, 'mkdirat'), EPERM);
    assert.equal(call(b, 'rmdir'), SECCOMP_RET_ALLOW);
  });

  it('compiles every comparison of a user profile as the reference reads it (property)', () => {
    const ops = ['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ'] as const;
    const value = fc.oneof(fc.constantFrom(0, 1, 5, 0xffffffff, 2 ** 32, 2 ** 32 + 7), fc.integer({ min: 0, max: 2 ** 40 }));
    const cond = fc.record({ index: fc.integer({ min: 0, max: 2 }), value, valueTwo: value, op: fc.constantFrom(...ops) });
    const probe = fc.oneof(
      fc.constantFrom(0n, 1n, 4n, 5n, 6n, 0xffffffffn, 2n ** 32n, 2n ** 32n + 7n),
      fc.bigInt({ min: 0n, max: 2n ** 41n }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.array(cond, { minLength: 1, maxLength: 2 }), { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        fc.array(probe, { minLength: 3, maxLength: 3 }),
        (alternatives, denyToo, args) => {
          // Distinct indexes within a rule (as the intersection keeps them).
          const alts = alternatives.map((a) => a.filter((c, i) => a.findIndex((d) => d.index === c.index) === i));
          const user = {
            defaultAction: 'SCMP_ACT_ERRNO',
            syscalls: [
              ...alts.map((args) => ({ names: ['write'], action: 'SCMP_ACT_ALLOW', args })),
              ...(denyToo ? [{ names: ['read'], action: 'SCMP_ACT_ERRNO' }] : [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }]),
            ],
          };
          parseUserProfile(user);
          const p = compileSeccomp({ userProfile: user });
          const b = compileSeccompBpf(p);
          for (const name of ['write', 'read', 'close']) assert.equal(call(b, name, args), reference(p, name, args), name);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('refuses what it cannot compile faithfully (another architecture, another default)', () => {
    assert.throws(
      () => compileSeccompBpf({ ...profile, architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'] }),
      hasCode(SandboxError, 'sandbox.invalid_spec'),
    );
    assert.throws(
      () => compileSeccompBpf({ ...profile, defaultAction: 'SCMP_ACT_ALLOW' as unknown as 'SCMP_ACT_ERRNO' }),
      hasCode(SandboxError, 'sandbox.invalid_spec'),
    );
  });
});

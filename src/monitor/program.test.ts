import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileSeccomp, DENIED_ALWAYS } from '../sandbox/spec/seccomp.js';
import { CONTROL, controlLength, hostProgram, refusedByProfile, resultName, syscallName, syscallNumber } from './program.js';

describe('monitor program', () => {
  it('numbers system calls as the x86_64 kernel does (asm/unistd_64.h), across the 335..423 gap', () => {
    assert.equal(syscallNumber('read'), 0);
    assert.equal(syscallNumber('ptrace'), 101);
    assert.equal(syscallNumber('mount'), 165);
    assert.equal(syscallNumber('bpf'), 321);
    assert.equal(syscallNumber('pidfd_send_signal'), 424);
    assert.equal(syscallNumber('clone3'), 435);
    assert.equal(syscallNumber('openat2'), 437);
    assert.equal(syscallNumber('no_such_call'), null);
    for (const n of ['mount', 'ptrace', 'clone3', 'unshare', 'read']) assert.equal(syscallName(syscallNumber(n)!), n);
    assert.equal(syscallName(400), 'nr_400');
  });

  it('names results: ok, the errno name, or E<n>', () => {
    assert.equal(resultName(0), 'ok');
    assert.equal(resultName(13), 'EACCES');
    assert.equal(resultName(30), 'EROFS');
    assert.equal(resultName(1), 'EPERM');
    assert.equal(resultName(99), 'E99');
  });

  it('filters every probe of the agent by the watched cgroups (@w) and the seccomp mode, and reads argv only up to its NULL', () => {
    const p = hostProgram({ pid: 4242, fd: 17 });
    const probes = p.split('\n').filter((l) => l.startsWith('tracepoint:') && l.includes('{'));
    assert.ok(probes.length >= 9);
    const agent = probes.filter((l) => !l.includes('sys_enter_ftruncate'));
    for (const l of agent) assert.ok(l.includes('@w[cgroup]'), l);
    for (const l of agent.filter((x) => x.includes('sys_enter_') || x.includes('raw_syscalls')))
      assert.ok(l.includes('curtask->seccomp.mode == 2'), l);
    // Every record about the agent names its cgroup first (the hub routes by it).
    for (const tag of ['X', 'A', 'R', 'Q']) assert.ok(p.includes(`printf("${tag} %d %d`) && p.includes('", cgroup, pid'), tag);
    // argv[i] is read inside the branch that checked argv[i-1]: never past the array's NULL (envp follows it).
    const exec = probes.find((l) => l.startsWith('tracepoint:syscalls:sys_enter_execve '))!;
    assert.ok(exec.indexOf('*($a + 1)') < exec.indexOf('*($a + 2)') && exec.indexOf('*($a + 2)') < exec.indexOf('*($a + 3)'));
    assert.ok(!exec.includes('*($a + 4)'));
    assert.ok(!exec.includes('$a + 8'), 'pointer arithmetic is in elements, not bytes');
  });

  it("lets only the owner's process and descriptor change the watched cgroups, and confirms each change", () => {
    const p = hostProgram({ pid: 4242, fd: 17 });
    const ctl = p.split('\n').filter((l) => l.includes('@w[$c]'));
    assert.equal(ctl.length, 1);
    assert.ok(ctl[0]!.startsWith('tracepoint:syscalls:sys_enter_ftruncate /pid == 4242 && args->fd == 17/'), ctl[0]);
    assert.ok(ctl[0]!.includes('printf("C %d %d\\n", $op, $c)'));
    assert.equal(p.split('\n').filter((l) => l.includes('@w[') && l.includes('= 1')).length, 1, 'no other probe writes @w');
    assert.equal(controlLength(CONTROL.watch, 116229), 116229 * 8 + 1);
    assert.equal(controlLength(CONTROL.clear, 0), 4);
    assert.throws(() => controlLength(CONTROL.watch, -1), RangeError);
    assert.throws(() => controlLength(CONTROL.watch, 2 ** 50), RangeError);
  });

  it('without the refused-call probe (a measurement variant), no line names its map', () => {
    const p = hostProgram({ pid: 4242, fd: 17 }, { refused: false });
    assert.ok(!p.includes('@d') && !p.includes('raw_syscalls'), p);
    assert.ok(hostProgram({ pid: 4242, fd: 17 }).includes('tracepoint:raw_syscalls:sys_exit /(args->ret == -1 || args->ret == -38) && '));
  });

  it('the per-call variant: one exit tracepoint per named call, with its number, and nothing else', () => {
    const p = hostProgram({ pid: 4242, fd: 17 }, { refused: ['mount', 'ptrace'] });
    assert.ok(!p.includes('raw_syscalls'));
    assert.ok(p.includes('tracepoint:syscalls:sys_exit_mount /(args->ret == -1 || args->ret == -38) && '));
    assert.ok(p.includes('@d[cgroup, 165, -args->ret]') && p.includes('@d[cgroup, 101, -args->ret]'));
    assert.throws(() => hostProgram({ pid: 4242, fd: 17 }, { refused: ['no_such_call'] }), RangeError);
  });

  it('refuses a control pid or descriptor that is not an integer', () => {
    assert.throws(() => hostProgram({ pid: 0, fd: 3 }), RangeError);
    assert.throws(() => hostProgram({ pid: 1.5, fd: 3 }), RangeError);
    assert.throws(() => hostProgram({ pid: 10, fd: -1 }), RangeError);
  });

  it('derives the refused calls from the seccomp profile: DENIED_ALWAYS and narrowed calls, not clone3 (ENOSYS is a compatibility answer)', () => {
    const refused = new Set(refusedByProfile(compileSeccomp({ deny: ['mkdir'] })));
    // (DENIED_ALWAYS also names calls x86_64 does not have, e.g. stime: no number, nothing to see.)
    for (const n of DENIED_ALWAYS.filter((x) => x !== 'clone3' && syscallNumber(x) !== null)) assert.ok(refused.has(n), n);
    assert.ok(refused.has('mkdir'), 'a manifest deny is a refusal');
    assert.ok(refused.has('clone'), 'clone is allowed only without namespace flags');
    assert.ok(!refused.has('read'));
    assert.ok(!refused.has('openat'));
    assert.ok(!refused.has('clone3'));
  });
});

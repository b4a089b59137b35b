import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holderElf } from './holder-elf.js';

describe('holderElf', () => {
  const elf = holderElf(0x7000_0000);
  it('is a static x86-64 executable with one loadable segment covering the whole file', () => {
    assert.deepEqual([...elf.subarray(0, 8)], [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
    assert.equal(elf.readUInt16LE(16), 2, 'ET_EXEC');
    assert.equal(elf.readUInt16LE(18), 0x3e, 'EM_X86_64');
    assert.equal(elf.readUInt16LE(56), 1, 'one program header');
    assert.equal(elf.readUInt32LE(64), 1, 'PT_LOAD');
    assert.equal(elf.readUInt32LE(68), 5, 'read + execute, not writable');
    assert.equal(elf.readBigUInt64LE(96), BigInt(elf.length));
    assert.equal(elf.readBigUInt64LE(24), 0x400000n + 120n, 'entry right after the headers');
  });
  it('adds the owner base to its pid, and ends with the ready line and an empty capability set', () => {
    const code = elf.subarray(120);
    const add = Buffer.from([0x05, 0x00, 0x00, 0x00, 0x70]);
    assert.equal(code.indexOf(add), 7, 'add eax, base right after getpid');
    assert.equal(code.subarray(-38, -32).toString(), 'ready\n');
    assert.equal(code.readUInt32LE(code.length - 32), 0x20080522, '_LINUX_CAPABILITY_VERSION_3');
    assert.deepEqual([...code.subarray(-28)], new Array<number>(28).fill(0), 'pid 0, all sets empty');
  });
  it('is deterministic and refuses a base whose range would leave the positive uids', () => {
    assert.ok(holderElf(0x7000_0000).equals(elf));
    for (const b of [0, -1, 1.5, 0x7fff_ffff]) assert.throws(() => holderElf(b), RangeError);
  });
});

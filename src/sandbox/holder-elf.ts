/**
 * The user namespace holder as a tiny static x86-64 ELF executable (no libc), generated here so
 * that making the namespace costs one exec of a few hundred bytes instead of the four execs of
 * `sh` + `setpriv` + `unshare` + `sh` (about 5-10 ms on these hosts). See userns.ts.
 *
 * What it does, in order, each step checked (any failure: exit_group(1), nothing printed):
 *   u = getpid() + ownerBase
 *   setgroups(0, NULL); setresgid(u, u, u); setresuid(u, u, u)   (from root: all capabilities go)
 *   unshare(CLONE_NEWUSER)                                       (the namespace is owned by u)
 *   capset(v3, all sets empty)              (no capability in its new namespace either)
 *   write(1, "ready\n", 6)
 *   loop: pause()                                                (until SIGKILL)
 * AEGIS then checks from the host that the process runs as u in a new user namespace before it
 * writes the id maps (userns.ts), so a broken program could not go unnoticed.
 *
 * Pure: returns bytes. Syscall numbers: x86-64 (arch/x86/entry/syscalls/syscall_64.tbl);
 * layout: ELF64 header + one PT_LOAD program header + code (System V gABI, x86-64 psABI).
 */

const LOAD_ADDRESS = 0x400000;
const NR = {
  write: 1,
  pause: 34,
  getpid: 39,
  setresuid: 117,
  setresgid: 119,
  setgroups: 116,
  capset: 126,
  unshare: 272,
  exit_group: 231,
} as const;
/** _LINUX_CAPABILITY_VERSION_3 (include/uapi/linux/capability.h): a header and two data structs. */
const CAP_V3 = 0x20080522;
const CLONE_NEWUSER = 0x10000000;
const READY = 'ready\n';

function imm32(n: number): number[] {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return [...b];
}

/** The holder program for owners `ownerBase + pid`. */
export function holderElf(ownerBase: number): Buffer {
  if (!Number.isInteger(ownerBase) || ownerBase <= 0 || ownerBase > 0x7fff_ffff - 4_194_304) throw new RangeError('ownerBase out of range');
  const code: number[] = [];
  const failJumps: number[] = [];
  const movEax = (n: number) => code.push(0xb8, ...imm32(n)); // mov eax, imm32
  const syscall = () => code.push(0x0f, 0x05);
  const checkZero = () => {
    code.push(0x48, 0x85, 0xc0); // test rax, rax
    code.push(0x0f, 0x85, 0, 0, 0, 0); // jnz fail (rel32, patched below)
    failJumps.push(code.length);
  };
  const argsU = () => code.push(0x44, 0x89, 0xe7, 0x44, 0x89, 0xe6, 0x44, 0x89, 0xe2); // mov edi/esi/edx, r12d

  movEax(NR.getpid);
  syscall();
  code.push(0x05, ...imm32(ownerBase)); // add eax, ownerBase
  code.push(0x41, 0x89, 0xc4); // mov r12d, eax
  movEax(NR.setgroups);
  code.push(0x31, 0xff, 0x31, 0xf6); // xor edi, edi; xor esi, esi
  syscall();
  checkZero();
  movEax(NR.setresgid);
  argsU();
  syscall();
  checkZero();
  movEax(NR.setresuid);
  argsU();
  syscall();
  checkZero();
  movEax(NR.unshare);
  code.push(0xbf, ...imm32(CLONE_NEWUSER)); // mov edi, CLONE_NEWUSER
  syscall();
  checkZero();
  movEax(NR.capset);
  code.push(0x48, 0x8d, 0x3d, 0, 0, 0, 0); // lea rdi, [rip + capHeader] (patched below)
  const capHeaderEnd = code.length;
  code.push(0x48, 0x8d, 0x35, 0, 0, 0, 0); // lea rsi, [rip + capData] (patched below)
  const capDataEnd = code.length;
  syscall();
  checkZero();
  movEax(NR.write);
  code.push(0xbf, ...imm32(1)); // mov edi, 1
  code.push(0x48, 0x8d, 0x35, 0, 0, 0, 0); // lea rsi, [rip + msg] (patched below)
  const leaEnd = code.length;
  code.push(0xba, ...imm32(READY.length)); // mov edx, len
  syscall();
  code.push(0x48, 0x83, 0xf8, READY.length); // cmp rax, len
  code.push(0x0f, 0x85, 0, 0, 0, 0); // jne fail
  failJumps.push(code.length);
  const loop = code.length;
  movEax(NR.pause);
  syscall();
  code.push(0xeb, (loop - (code.length + 2)) & 0xff); // jmp loop (rel8, backwards)
  const fail = code.length;
  movEax(NR.exit_group);
  code.push(0xbf, ...imm32(1)); // mov edi, 1
  syscall();
  const msg = code.length;
  code.push(...Buffer.from(READY));
  const capHeader = code.length;
  code.push(...imm32(CAP_V3), ...imm32(0)); // version, pid 0 (this process)
  const capData = code.length;
  code.push(...new Array<number>(24).fill(0)); // effective, permitted, inheritable (x2): empty

  const patch = (end: number, target: number) => Buffer.from(imm32(target - end)).forEach((b, i) => (code[end - 4 + i] = b));
  for (const end of failJumps) patch(end, fail);
  patch(leaEnd, msg);
  patch(capHeaderEnd, capHeader);
  patch(capDataEnd, capData);

  return elfExecutable(code);
}

/** A static x86-64 executable: ELF64 header, one PT_LOAD (read + execute), then `code` (entry at its start). */
export function elfExecutable(code: readonly number[]): Buffer {
  const hdr = Buffer.alloc(64 + 56);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(hdr, 0); // ELFCLASS64, little-endian, SysV
  hdr.writeUInt16LE(2, 16); // ET_EXEC
  hdr.writeUInt16LE(0x3e, 18); // EM_X86_64
  hdr.writeUInt32LE(1, 20); // EV_CURRENT
  hdr.writeBigUInt64LE(BigInt(LOAD_ADDRESS + hdr.length), 24); // e_entry
  hdr.writeBigUInt64LE(64n, 32); // e_phoff
  hdr.writeUInt16LE(64, 52); // e_ehsize
  hdr.writeUInt16LE(56, 54); // e_phentsize
  hdr.writeUInt16LE(1, 56); // e_phnum
  hdr.writeUInt32LE(1, 64); // PT_LOAD
  hdr.writeUInt32LE(5, 68); // PF_R | PF_X
  hdr.writeBigUInt64LE(0n, 72); // p_offset
  hdr.writeBigUInt64LE(BigInt(LOAD_ADDRESS), 80); // p_vaddr
  hdr.writeBigUInt64LE(BigInt(LOAD_ADDRESS), 88); // p_paddr
  const size = BigInt(hdr.length + code.length);
  hdr.writeBigUInt64LE(size, 96); // p_filesz
  hdr.writeBigUInt64LE(size, 104); // p_memsz
  hdr.writeBigUInt64LE(0x1000n, 112); // p_align
  return Buffer.concat([hdr, Buffer.from(code)]);
}

/**
 * Tiny static x86-64 ELF executables that make exactly one system call, for the sandbox
 * conformance suite. They need no libc, compiler or language runtime in the image, so the same
 * probe runs on every runtime and image.
 *
 * Exit status: mode 'errno' -> -ret & 0xff (0 on success, 1 for EPERM, 38 for ENOSYS, ...);
 * mode 'value' -> ret & 0xff.
 * Layout: ELF64 header + one PT_LOAD program header + code (System V gABI, x86-64 psABI).
 */

const BASE = 0x400000;

function imm32(n: number): number[] {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return [...b];
}

/** `nr` and up to five arguments (signed 32-bit immediates). */
export function syscallElf(nr: number, args: readonly number[], mode: 'errno' | 'value' = 'errno'): Buffer {
  const regs = [
    [0x48, 0xc7, 0xc7], // mov rdi, imm32
    [0x48, 0xc7, 0xc6], // mov rsi, imm32
    [0x48, 0xc7, 0xc2], // mov rdx, imm32
    [0x49, 0xc7, 0xc2], // mov r10, imm32
    [0x49, 0xc7, 0xc0], // mov r8, imm32
  ];
  const code: number[] = [0x48, 0xc7, 0xc0, ...imm32(nr)]; // mov rax, nr
  args.forEach((a, i) => code.push(...regs[i]!, ...imm32(a)));
  code.push(0x0f, 0x05); // syscall
  if (mode === 'errno') code.push(0x48, 0xf7, 0xd8); // neg rax
  code.push(0x48, 0x89, 0xc7); // mov rdi, rax
  code.push(0x48, 0xc7, 0xc0, ...imm32(60), 0x0f, 0x05); // exit(rdi)
  const hdr = Buffer.alloc(64 + 56);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(hdr, 0);
  hdr.writeUInt16LE(2, 16); // ET_EXEC
  hdr.writeUInt16LE(0x3e, 18); // EM_X86_64
  hdr.writeUInt32LE(1, 20);
  hdr.writeBigUInt64LE(BigInt(BASE + hdr.length), 24); // e_entry
  hdr.writeBigUInt64LE(64n, 32); // e_phoff
  hdr.writeUInt16LE(64, 52); // e_ehsize
  hdr.writeUInt16LE(56, 54); // e_phentsize
  hdr.writeUInt16LE(1, 56); // e_phnum
  const ph = 64;
  hdr.writeUInt32LE(1, ph); // PT_LOAD
  hdr.writeUInt32LE(5, ph + 4); // R+X
  hdr.writeBigUInt64LE(0n, ph + 8);
  hdr.writeBigUInt64LE(BigInt(BASE), ph + 16);
  hdr.writeBigUInt64LE(BigInt(BASE), ph + 24);
  const size = BigInt(hdr.length + code.length);
  hdr.writeBigUInt64LE(size, ph + 32);
  hdr.writeBigUInt64LE(size, ph + 40);
  hdr.writeBigUInt64LE(0x1000n, ph + 48);
  return Buffer.concat([hdr, Buffer.from(code)]);
}

const EPERM = 1;

/** System calls the default profile must deny with EPERM (x86_64 numbers, linux/unistd_64.h). */
export const DENIED_PROBES: Readonly<Record<string, { nr: number; args: number[]; expect: number }>> = {
  mount: { nr: 165, args: [0, 0, 0, 0, 0], expect: EPERM },
  ptrace_traceme: { nr: 101, args: [0, 0, 0, 0], expect: EPERM },
  unshare_user: { nr: 272, args: [0x10000000], expect: EPERM },
  keyctl: { nr: 250, args: [0, -3, 0], expect: EPERM },
  add_key: { nr: 248, args: [0, 0, 0, 0, -3], expect: EPERM },
  bpf: { nr: 321, args: [5, 0, 0], expect: EPERM },
  perf_event_open: { nr: 298, args: [0, 0, -1, -1, 0], expect: EPERM },
  setuid0: { nr: 105, args: [0], expect: EPERM },
  setns: { nr: 308, args: [0, 0], expect: EPERM },
  userfaultfd: { nr: 323, args: [0], expect: EPERM },
  clone_newuser: { nr: 56, args: [0x10000000 | 17, 0, 0, 0, 0], expect: EPERM },
  socket_packet_raw: { nr: 41, args: [17, 3, 0], expect: EPERM },
  socket_inet_raw: { nr: 41, args: [2, 3, 1], expect: EPERM },
};

/** Positive control: geteuid() as exit status (1000 & 0xff = 232 for the agent). */
export const GETEUID = { nr: 107, args: [] as number[] };

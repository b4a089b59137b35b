/**
 * The network namespace holder of the Docker backend as a tiny static x86-64 ELF (no libc), in
 * the manner of holder-elf.ts. It runs as the init of a holder container (root, CAP_SYS_ADMIN
 * only, no network of its own) and moves itself into the egress gateway's namespace, so that the
 * agent's container can join it with the engine's `NetworkMode: container:<holder>` (the engine
 * cannot take a namespace path). See docker/engine.ts.
 *
 * What it does, in order, each step checked (any failure: exit_group(1), nothing printed):
 *   fd = open(NETNS_MOUNT, O_RDONLY | O_CLOEXEC)   (the gateway's namespace, bind-mounted read-only)
 *   setns(fd, CLONE_NEWNET)
 *   capset(v3, all sets empty)                      (CAP_SYS_ADMIN is gone once it is in)
 *   write(1, "ready\n", 6)
 *   loop: pause()                                   (until killed with its container)
 * AEGIS then checks from the host that /proc/<pid>/ns/net of the holder is the gateway's namespace
 * (same device and inode) before the agent's container is created.
 *
 * Pure: returns bytes.
 */

import { elfExecutable } from '../holder-elf.js';

const NR = { open: 2, write: 1, pause: 34, capset: 126, setns: 308, exit_group: 231 } as const;
const CAP_V3 = 0x20080522;
const CLONE_NEWNET = 0x40000000;
const O_RDONLY_CLOEXEC = 0o2000000;
const READY = 'ready\n';
/** Where the holder container gets the namespace file. */
export const NETNS_MOUNT = '/aegis-netns';

function imm32(n: number): number[] {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return [...b];
}

export function netnsHolderElf(): Buffer {
  const code: number[] = [];
  const failJumps: number[] = [];
  const ripPatches: { end: number; label: 'path' | 'msg' | 'capHeader' | 'capData' }[] = [];
  const movEax = (n: number): void => void code.push(0xb8, ...imm32(n));
  const syscall = (): void => void code.push(0x0f, 0x05);
  const jumpIfNonZero = (): void => {
    code.push(0x48, 0x85, 0xc0); // test rax, rax
    code.push(0x0f, 0x85, 0, 0, 0, 0); // jnz fail
    failJumps.push(code.length);
  };
  const lea = (reg: 'rdi' | 'rsi', label: 'path' | 'msg' | 'capHeader' | 'capData'): void => {
    code.push(0x48, 0x8d, reg === 'rdi' ? 0x3d : 0x35, 0, 0, 0, 0); // lea reg, [rip + label]
    ripPatches.push({ end: code.length, label });
  };

  movEax(NR.open);
  lea('rdi', 'path');
  code.push(0xbe, ...imm32(O_RDONLY_CLOEXEC)); // mov esi, flags
  code.push(0x31, 0xd2); // xor edx, edx
  syscall();
  code.push(0x48, 0x85, 0xc0); // test rax, rax
  code.push(0x0f, 0x88, 0, 0, 0, 0); // js fail
  failJumps.push(code.length);
  code.push(0x48, 0x89, 0xc7); // mov rdi, rax (fd)
  movEax(NR.setns);
  code.push(0xbe, ...imm32(CLONE_NEWNET)); // mov esi, CLONE_NEWNET
  syscall();
  jumpIfNonZero();
  movEax(NR.capset);
  lea('rdi', 'capHeader');
  lea('rsi', 'capData');
  syscall();
  jumpIfNonZero();
  movEax(NR.write);
  code.push(0xbf, ...imm32(1)); // mov edi, 1
  lea('rsi', 'msg');
  code.push(0xba, ...imm32(READY.length)); // mov edx, len
  syscall();
  code.push(0x48, 0x83, 0xf8, READY.length); // cmp rax, len
  code.push(0x0f, 0x85, 0, 0, 0, 0); // jne fail
  failJumps.push(code.length);
  const loop = code.length;
  movEax(NR.pause);
  syscall();
  code.push(0xeb, (loop - (code.length + 2)) & 0xff); // jmp loop
  const fail = code.length;
  movEax(NR.exit_group);
  code.push(0xbf, ...imm32(1));
  syscall();
  const labels = {
    msg: code.length,
    path: code.length + READY.length,
    capHeader: 0,
    capData: 0,
  };
  code.push(...Buffer.from(READY), ...Buffer.from(NETNS_MOUNT + '\0'));
  labels.capHeader = code.length;
  code.push(...imm32(CAP_V3), ...imm32(0));
  labels.capData = code.length;
  code.push(...new Array<number>(24).fill(0));

  const patch = (end: number, target: number): void => Buffer.from(imm32(target - end)).forEach((b, i) => (code[end - 4 + i] = b));
  for (const end of failJumps) patch(end, fail);
  for (const p of ripPatches) patch(p.end, labels[p.label]);

  return elfExecutable(code);
}

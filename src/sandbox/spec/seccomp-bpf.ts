/**
 * The seccomp profile (seccomp.ts, OCI JSON form) compiled to a classic BPF program, for sandboxes
 * that install the filter themselves instead of handing the JSON to an OCI runtime: the microVM's
 * guest (scripts/microvm/aegis-exec.c loads it with seccomp(SECCOMP_SET_MODE_FILTER)).
 *
 * Pure: no I/O. The output is the kernel's `struct sock_filter[]` (8 bytes each, host order:
 * u16 code, u8 jt, u8 jf, u32 k; include/uapi/linux/filter.h), matched against
 * `struct seccomp_data` (include/uapi/linux/seccomp.h: nr u32 @0, arch u32 @4, ip u64 @8,
 * args u64[6] @16, little-endian on x86_64).
 *
 * ARCHITECTURE NOTE: the same semantics as libseccomp for the profile forms seccomp.ts produces:
 * a call of another architecture (arch != AUDIT_ARCH_X86_64) or of the x32 ABI (nr has bit 30)
 * kills the process (libseccomp's bad-arch action, which would otherwise let 32-bit or x32 calls
 * bypass name-based rules); each listed name is found by a binary search on its number; argument
 * conditions compare all 64 bits unsigned, ANDed within a rule, rules ORed; an unconditional deny
 * wins over anything, conditional denies are tried before allows (deny before allow), and a call
 * no rule matches gets the default action (EPERM). A profile this compiler does not understand
 * (another architecture, an unknown action or operator) is refused, never compiled weaker.
 * LIMITATION: names this table does not know (policy/syscalls.ts, Linux 6.1) are left out, so
 * they get the default action (denied), as libseccomp does with names it cannot resolve.
 */
import { SYSCALLS_X86_64 } from '../../policy/syscalls.js';
import { SandboxError } from '../errors.js';
import type { SeccompArg, SeccompProfile } from './seccomp.js';

/** include/uapi/linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** arch/x86/include/uapi/asm/unistd.h: x32 system calls carry this bit. */
export const X32_SYSCALL_BIT = 0x40000000;
/** include/uapi/linux/seccomp.h */
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
/** include/uapi/linux/bpf_common.h: BPF_MAXINSNS. */
export const BPF_MAXINSNS = 4096;

/** Opcodes (include/uapi/linux/bpf_common.h): class | size/op | source. */
const LD_W_ABS = 0x00 | 0x00 | 0x20;
const ALU_AND_K = 0x04 | 0x50 | 0x00;
const JMP_JA = 0x05 | 0x00;
const JMP_JEQ_K = 0x05 | 0x10;
const JMP_JGT_K = 0x05 | 0x20;
const JMP_JGE_K = 0x05 | 0x30;
const RET_K = 0x06;

/**
 * The x86_64 number of a system call (asm/unistd_64.h). SYSCALLS_X86_64 lists numbers 0..334 in
 * order, then 424 onwards (333-423 are unused on x86_64 after 334).
 */
export function syscallNumberX86_64(name: string): number | null {
  const i = SYSCALLS_X86_64.indexOf(name);
  if (i < 0) return null;
  return i <= 334 ? i : 424 + (i - 335);
}

type Label = number;
type Asm =
  | { readonly kind: 'ld'; readonly k: number }
  | { readonly kind: 'and'; readonly k: number }
  | { readonly kind: 'j'; readonly op: number; readonly k: number; readonly t: Label; readonly f: Label }
  | { readonly kind: 'ja'; readonly to: Label }
  | { readonly kind: 'ret'; readonly k: number }
  | { readonly kind: 'label'; readonly id: Label };

class Assembler {
  readonly code: Asm[] = [];
  private next = 0;
  label(): Label {
    return this.next++;
  }
  at(id: Label): void {
    this.code.push({ kind: 'label', id });
  }
  ld(k: number): void {
    this.code.push({ kind: 'ld', k });
  }
  and(k: number): void {
    this.code.push({ kind: 'and', k });
  }
  j(op: number, k: number, t: Label, f: Label): void {
    this.code.push({ kind: 'j', op, k, t, f });
  }
  ja(to: Label): void {
    this.code.push({ kind: 'ja', to });
  }
  ret(k: number): void {
    this.code.push({ kind: 'ret', k });
  }

  /**
   * Lays the program out. Conditional jumps reach 255 instructions forward; a farther one
   * becomes `jxx k, 0, 1; ja t; ja f` (recomputed until the layout is stable: it only grows).
   */
  assemble(): Uint8Array {
    const long = new Set<number>();
    for (;;) {
      const pos = new Map<Label, number>();
      const at: number[] = [];
      let n = 0;
      this.code.forEach((a, i) => {
        at[i] = n;
        if (a.kind === 'label') pos.set(a.id, n);
        else n += a.kind === 'j' && long.has(i) ? 3 : 1;
      });
      let grew = false;
      this.code.forEach((a, i) => {
        if (a.kind !== 'j' || long.has(i)) return;
        const from = (at[i] as number) + 1;
        const far = [a.t, a.f].some((l) => (pos.get(l) as number) - from > 255);
        if (far) {
          long.add(i);
          grew = true;
        }
      });
      if (grew) continue;
      if (n > BPF_MAXINSNS) throw new SandboxError('sandbox.invalid_spec', `the seccomp program has ${n} instructions (> ${BPF_MAXINSNS})`);
      const out = new Uint8Array(n * 8);
      const view = new DataView(out.buffer);
      let p = 0;
      const put = (code: number, jt: number, jf: number, k: number): void => {
        view.setUint16(p * 8, code, true);
        view.setUint8(p * 8 + 2, jt);
        view.setUint8(p * 8 + 3, jf);
        view.setUint32(p * 8 + 4, k >>> 0, true);
        p++;
      };
      const target = (l: Label): number => pos.get(l) as number;
      this.code.forEach((a, i) => {
        switch (a.kind) {
          case 'label':
            return;
          case 'ld':
            return put(LD_W_ABS, 0, 0, a.k);
          case 'and':
            return put(ALU_AND_K, 0, 0, a.k);
          case 'ret':
            return put(RET_K, 0, 0, a.k);
          case 'ja': {
            const off = target(a.to) - (p + 1);
            if (off < 0) throw new Error('seccomp-bpf: backward jump');
            return put(JMP_JA, 0, 0, off);
          }
          case 'j': {
            if (long.has(i)) {
              put(a.op, 0, 1, a.k);
              put(JMP_JA, 0, 0, target(a.t) - (p + 1));
              return put(JMP_JA, 0, 0, target(a.f) - (p + 1));
            }
            const t = target(a.t) - (p + 1);
            const f = target(a.f) - (p + 1);
            if (t < 0 || f < 0) throw new Error('seccomp-bpf: backward jump');
            return put(a.op, t, f, a.k);
          }
        }
      });
      return out;
    }
  }
}

const ARG_LO = (i: number): number => 16 + 8 * i;
const ARG_HI = (i: number): number => 20 + 8 * i;
const hi32 = (v: number): number => Math.floor(v / 2 ** 32) >>> 0;
const lo32 = (v: number): number => v >>> 0;

/** Code that jumps to `ok` when the 64-bit argument condition holds, else to `fail`. */
function emitArg(a: Assembler, c: SeccompArg, ok: Label, fail: Label): void {
  const v = c.value;
  const l1 = a.label();
  switch (c.op) {
    case 'SCMP_CMP_EQ':
    case 'SCMP_CMP_NE': {
      const [yes, no] = c.op === 'SCMP_CMP_EQ' ? [ok, fail] : [fail, ok];
      a.ld(ARG_HI(c.index));
      a.j(JMP_JEQ_K, hi32(v), l1, no);
      a.at(l1);
      a.ld(ARG_LO(c.index));
      a.j(JMP_JEQ_K, lo32(v), yes, no);
      return;
    }
    case 'SCMP_CMP_MASKED_EQ': {
      // (arg & value) == valueTwo (OCI: value is the mask, valueTwo the datum).
      const datum = c.valueTwo ?? 0;
      a.ld(ARG_HI(c.index));
      a.and(hi32(v));
      a.j(JMP_JEQ_K, hi32(datum), l1, fail);
      a.at(l1);
      a.ld(ARG_LO(c.index));
      a.and(lo32(v));
      a.j(JMP_JEQ_K, lo32(datum), ok, fail);
      return;
    }
    case 'SCMP_CMP_GT':
    case 'SCMP_CMP_GE':
    case 'SCMP_CMP_LT':
    case 'SCMP_CMP_LE': {
      // GT/GE directly; LT = not GE, LE = not GT.
      const strict = c.op === 'SCMP_CMP_GT' || c.op === 'SCMP_CMP_LE';
      const [yes, no] = c.op === 'SCMP_CMP_GT' || c.op === 'SCMP_CMP_GE' ? [ok, fail] : [fail, ok];
      const l2 = a.label();
      a.ld(ARG_HI(c.index));
      a.j(JMP_JGT_K, hi32(v), yes, l1);
      a.at(l1);
      a.j(JMP_JEQ_K, hi32(v), l2, no);
      a.at(l2);
      a.ld(ARG_LO(c.index));
      a.j(strict ? JMP_JGT_K : JMP_JGE_K, lo32(v), yes, no);
      return;
    }
    default: {
      const op: never = c.op;
      throw new SandboxError('sandbox.invalid_spec', `seccomp: unknown operator ${String(op)}`);
    }
  }
}

interface Alternative {
  readonly action: number;
  readonly args: readonly SeccompArg[];
}

function actionOf(action: string, errnoRet: number | undefined, defaultErrno: number): number {
  if (action === 'SCMP_ACT_ALLOW') return SECCOMP_RET_ALLOW;
  if (action === 'SCMP_ACT_ERRNO') return (SECCOMP_RET_ERRNO | ((errnoRet ?? defaultErrno) & 0xffff)) >>> 0;
  throw new SandboxError('sandbox.invalid_spec', `seccomp: action ${action} cannot be compiled`);
}

/** Compiles `profile` into a BPF program (struct sock_filter[], 8 bytes per instruction). */
export function compileSeccompBpf(profile: SeccompProfile): Uint8Array {
  if (profile.defaultAction !== 'SCMP_ACT_ERRNO')
    throw new SandboxError('sandbox.invalid_spec', `seccomp: default action ${String(profile.defaultAction)} cannot be compiled`);
  if (profile.architectures.some((x) => x !== 'SCMP_ARCH_X86_64'))
    throw new SandboxError('sandbox.invalid_spec', `seccomp: only SCMP_ARCH_X86_64 is supported (${profile.architectures.join(', ')})`);
  const defaultRet = actionOf('SCMP_ACT_ERRNO', profile.defaultErrnoRet, profile.defaultErrnoRet);
  for (const r of profile.syscalls)
    for (const c of r.args ?? [])
      if (!Number.isInteger(c.index) || c.index < 0 || c.index > 5 || !Number.isSafeInteger(c.value) || c.value < 0)
        throw new SandboxError('sandbox.invalid_spec', `seccomp: bad argument condition on ${r.names.join(',')}`);

  // Per system call number: its unconditional actions and its conditional alternatives.
  const bySys = new Map<number, { uncond: number[]; alts: Alternative[] }>();
  for (const r of profile.syscalls) {
    const action = actionOf(r.action, r.errnoRet, profile.defaultErrnoRet);
    for (const name of r.names) {
      const nr = syscallNumberX86_64(name);
      if (nr === null) continue;
      const e = bySys.get(nr) ?? { uncond: [], alts: [] };
      bySys.set(nr, e);
      if ((r.args ?? []).length === 0) e.uncond.push(action);
      else e.alts.push({ action, args: r.args ?? [] });
    }
  }

  const a = new Assembler();
  const kill = a.label();
  const deflt = a.label();
  const rets = new Map<number, Label>();
  const retLabel = (k: number): Label => {
    let l = rets.get(k);
    if (l === undefined) {
      l = a.label();
      rets.set(k, l);
    }
    return l;
  };
  const isDeny = (k: number): boolean => k !== SECCOMP_RET_ALLOW;

  // 1. Architecture, then the x32 bit.
  const archOk = a.label();
  a.ld(4);
  a.j(JMP_JEQ_K, AUDIT_ARCH_X86_64, archOk, kill);
  a.at(archOk);
  a.ld(0);
  const nativeAbi = a.label();
  a.j(JMP_JGE_K, X32_SYSCALL_BIT, kill, nativeAbi);
  a.at(nativeAbi);

  // 2. Where each number goes: a shared return, or a block of conditions.
  const entries: { nr: number; to: Label }[] = [];
  const blocks: { label: Label; alts: Alternative[]; fallthrough: number }[] = [];
  for (const [nr, e] of [...bySys.entries()].sort((x, y) => x[0] - y[0])) {
    const uncondDeny = e.uncond.find(isDeny);
    if (uncondDeny !== undefined) entries.push({ nr, to: retLabel(uncondDeny) });
    else if (e.alts.length === 0) entries.push({ nr, to: retLabel(SECCOMP_RET_ALLOW) });
    else {
      const label = a.label();
      const alts = [...e.alts.filter((x) => isDeny(x.action)), ...e.alts.filter((x) => !isDeny(x.action))];
      blocks.push({ label, alts, fallthrough: e.uncond.length > 0 ? SECCOMP_RET_ALLOW : defaultRet });
      entries.push({ nr, to: label });
    }
  }

  // 3. Binary search on the number (A holds nr); small ranges are a chain of jeq.
  const search = (lo: number, hi: number): void => {
    if (hi - lo <= 4) {
      for (let i = lo; i < hi; i++) {
        const e = entries[i] as { nr: number; to: Label };
        const next = a.label();
        a.j(JMP_JEQ_K, e.nr, e.to, next);
        a.at(next);
      }
      a.ja(deflt);
      return;
    }
    const mid = (lo + hi) >> 1;
    const left = a.label();
    const right = a.label();
    a.j(JMP_JGE_K, (entries[mid] as { nr: number }).nr, right, left);
    a.at(left);
    search(lo, mid);
    a.at(right);
    search(mid, hi);
  };
  search(0, entries.length);

  // 4. Condition blocks: alternatives in order, each an AND of its argument checks.
  for (const b of blocks) {
    a.at(b.label);
    for (const alt of b.alts) {
      const fail = a.label();
      alt.args.forEach((c, i) => {
        const ok = i === alt.args.length - 1 ? retLabel(alt.action) : a.label();
        emitArg(a, c, ok, fail);
        if (i < alt.args.length - 1) a.at(ok);
      });
      a.at(fail);
    }
    a.ja(retLabel(b.fallthrough));
  }

  // 5. The returns.
  for (const [k, l] of rets) {
    a.at(l);
    a.ret(k);
  }
  a.at(deflt);
  a.ret(defaultRet);
  a.at(kill);
  a.ret(SECCOMP_RET_KILL_PROCESS);
  return a.assemble();
}

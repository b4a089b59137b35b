/**
 * Whether this host's KVM runs a stock guest (adapter): boots the microVM guest once with KVM and
 * a timeout (microvm-plan.ts planKvmProbe), and caches the answer per host kernel, QEMU binary and
 * guest, so `aegis doctor` and every run that would use KVM share one boot.
 *
 * ARCHITECTURE NOTE: /dev/kvm opening is no proof that KVM works: on some hosts (these ones,
 * HOST-NOTES) it is a paravirtual KVM that runs only specially patched guest kernels, and a stock
 * kernel hangs or crashes under it. A run that would need KVM where the probe says it does not
 * work fails before start (sandbox.runtime_unavailable) instead of hanging until its timeout.
 * The cache is a private entry (src/host/private-cache.ts: 0700 directory of this user) and is
 * read as untrusted: anything malformed is probed again. LIMITATION: a KVM that works for the
 * probe's 128 MiB single-vCPU guest is assumed to work for the runs.
 */
import { createHash } from 'node:crypto';
import { accessSync, constants, statSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { findExecutable, runCommand } from '../../host/exec.js';
import { readPrivateEntry, writePrivateEntry } from '../../host/private-cache.js';
import { MICROVM_PROBE_OK, planKvmProbe } from './microvm-plan.js';

/** How long the probe's guest may take to reach its init with KVM (it takes well under a second where KVM works). */
export const KVM_PROBE_TIMEOUT_MS = 15_000;

export interface KvmProbe {
  /**
   * works: a stock guest booted to its init with KVM; fails: it crashed, hung or QEMU refused;
   * no_device: /dev/kvm cannot be opened; unknown: the probe could not run (no QEMU or no guest).
   */
  readonly result: 'works' | 'fails' | 'no_device' | 'unknown';
  readonly detail: string;
  /** The answer came from the cache. */
  readonly cached: boolean;
}

/** The kvm device opens for reading and writing. */
export function kvmDeviceUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function fileId(p: string): string {
  const st = statSync(p);
  return `${p}:${st.size}:${st.mtimeMs}:${st.ino}`;
}

/**
 * Boots the guest in `guestDir` (its vmlinuz and initramfs.cpio.gz) with KVM, or returns the
 * cached answer for this host kernel, QEMU and guest from `cacheDir`.
 */
export async function probeKvm(o: {
  readonly guestDir: string;
  readonly cacheDir: string;
  readonly runAs: { readonly uid: number; readonly gid: number };
  readonly timeoutMs?: number;
}): Promise<KvmProbe> {
  if (!kvmDeviceUsable()) return { result: 'no_device', detail: '/dev/kvm is absent or cannot be opened', cached: false };
  const qemu = findExecutable('qemu-system-x86_64');
  if (qemu === null) return { result: 'unknown', detail: 'qemu-system-x86_64 is not installed', cached: false };
  const kernel = join(o.guestDir, 'vmlinuz');
  const initrd = join(o.guestDir, 'initramfs.cpio.gz');
  let key: string;
  try {
    key = createHash('sha256')
      .update([release(), fileId(qemu), fileId(kernel), fileId(initrd)].join('\n'))
      .digest('hex')
      .slice(0, 32);
  } catch {
    return { result: 'unknown', detail: `no microVM guest in ${o.guestDir}`, cached: false };
  }
  const name = `kvm-probe-${key}.json`;
  const hit = readCached(readPrivateEntry(o.cacheDir, name));
  if (hit !== null) return { ...hit, cached: true };

  const argv = [qemu, ...planKvmProbe({ kernel, initrd, runAs: o.runAs })];
  const timeoutMs = o.timeoutMs ?? KVM_PROBE_TIMEOUT_MS;
  let answer: Omit<KvmProbe, 'cached'>;
  try {
    const r = await runCommand(argv, { timeoutMs, maxOutputBytes: 64 * 1024 });
    if (r.stdout.includes(MICROVM_PROBE_OK)) answer = { result: 'works', detail: 'a stock guest kernel booted to its init with KVM' };
    else if (r.timedOut)
      answer = { result: 'fails', detail: `a stock guest kernel did not reach its init with KVM within ${timeoutMs / 1000} s (hung)` };
    else {
      const tail = `${r.stderr}\n${r.stdout}`.trim().split('\n').slice(-2).join(' ').slice(0, 300);
      answer = { result: 'fails', detail: `a stock guest kernel did not boot with KVM (QEMU ${r.code ?? r.signal}: ${tail})` };
    }
  } catch (err) {
    return { result: 'unknown', detail: `cannot run QEMU: ${(err as Error).message}`, cached: false };
  }
  writePrivateEntry(o.cacheDir, name, JSON.stringify(answer));
  return { ...answer, cached: false };
}

/** A cached answer, checked (untrusted text), or null. */
function readCached(text: string | undefined): Omit<KvmProbe, 'cached'> | null {
  if (text === undefined) return null;
  try {
    const v = JSON.parse(text) as { result?: unknown; detail?: unknown };
    if ((v.result === 'works' || v.result === 'fails') && typeof v.detail === 'string' && v.detail.length < 1000)
      return { result: v.result, detail: v.detail };
  } catch {
    /* malformed: probe again */
  }
  return null;
}

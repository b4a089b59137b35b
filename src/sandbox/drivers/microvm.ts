/**
 * microvm: each agent in its own guest kernel, in a QEMU `microvm` machine (docs/sandbox.md
 * "microVM"). The driver's binary is Node.js running microvm-launcher.js, which turns the bundle
 * into a QEMU command line (microvm-plan.ts) and exits with the agent's status; the timeout,
 * cgroup (the guest's RAM is QEMU's memory, so it is counted), kill and cleanup stay with run.ts.
 * A Firecracker or Cloud Hypervisor driver would implement the same plan/launcher split.
 *
 * ARCHITECTURE NOTE (acceleration): KVM by default; software emulation (TCG) only when the
 * operator allows it (AEGIS_MICROVM_ALLOW_EMULATION=1, src/config): it is for testing, slow
 * (~2 s to boot) and gives no hardware isolation of the VMM from the guest's code beyond QEMU's.
 * On these hosts /dev/kvm runs only patched guests (HOST-NOTES), so emulation is the only mode.
 *
 * In the guest the agent runs under the bundle's seccomp filter (compiled by spec/seccomp-bpf.ts),
 * in a cgroup holding it to the manifest's memory and pids (reported back through guestUsage),
 * with the run's stdin, and gets SIGTERM at the timeout through killArgs (the launcher's relay).
 *
 * Network: only with a network namespace (the gateway's), one virtio-net device on a tap there
 * (microvm-launcher.ts); without one, no NIC. LIMITATION: no IPv6 in the guest; one vCPU, and
 * cpu_quota is the host's CFS quota on QEMU as a whole.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findExecutable } from '../../host/exec.js';
import { AGENT_HOST_GID, AGENT_HOST_UID } from '../host-paths.js';
import { kvmDeviceUsable, probeKvm, type KvmProbe } from './microvm-kvm.js';
import type { OciConfig } from '../spec/oci.js';
import {
  MICROVM_GUEST_KERNEL_BYTES,
  MICROVM_GUEST_REPORT,
  MICROVM_PIDS_OVERHEAD,
  guestProtocolProblem,
  MICROVM_VMM_OVERHEAD_BYTES,
  type MicrovmAccel,
} from './microvm-plan.js';
import type { GuestUsage, RuntimeDriver, RuntimeRun } from './types.js';

/** Where scripts/microvm/build-guest.sh puts the guest (`current` links the kernel version in use). */
export const DEFAULT_MICROVM_GUEST_DIR = '/var/lib/aegis/microvm';

export interface MicrovmSettings {
  /** The guest directory (vmlinuz, initramfs.cpio.gz), or its parent holding `current`. */
  readonly guestDir: string;
  /** Software emulation allowed (AEGIS_MICROVM_ALLOW_EMULATION=1). */
  readonly allowEmulation: boolean;
}

export const DEFAULT_MICROVM_SETTINGS: MicrovmSettings = { guestDir: DEFAULT_MICROVM_GUEST_DIR, allowEmulation: false };

/**
 * KVM if /dev/kvm can be opened, else TCG when allowed, else null. Whether that KVM runs a stock
 * guest is the probe's answer (preflight, microvm-kvm.ts).
 */
export function microvmAccel(s: MicrovmSettings, kvmUsable = kvmDeviceUsable()): MicrovmAccel | null {
  if (s.allowEmulation) return 'tcg';
  return kvmUsable ? 'kvm' : null;
}

/** Where the KVM probe's answers are cached: next to the guest (one answer per host kernel, QEMU and guest). */
export function kvmProbeCacheDir(s: MicrovmSettings): string {
  return join(s.guestDir, '.kvm-probe');
}

/** What a run with these settings would do here, and why (aegis doctor, the driver's preflight). */
export interface MicrovmMode {
  readonly accel: MicrovmAccel | null;
  readonly probe: KvmProbe | null;
  /** Why a run cannot start, or null. */
  readonly refusal: string | null;
}

/** The mode runs would use: TCG when allowed; else KVM if the probe boots a stock guest with it. */
export async function microvmMode(s: MicrovmSettings, timeoutMs?: number): Promise<MicrovmMode> {
  if (s.allowEmulation) return { accel: 'tcg', probe: null, refusal: null };
  const probe = await probeKvm({
    guestDir: guestPath(s.guestDir),
    cacheDir: kvmProbeCacheDir(s),
    runAs: { uid: AGENT_HOST_UID, gid: AGENT_HOST_GID },
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });
  if (probe.result === 'works') return { accel: 'kvm', probe, refusal: null };
  const why =
    probe.result === 'no_device'
      ? '/dev/kvm is not usable'
      : probe.result === 'fails'
        ? `KVM does not run a stock guest on this host (${probe.detail}${probe.cached ? ', cached probe' : ''})`
        : `KVM could not be probed (${probe.detail})`;
  return {
    accel: null,
    probe,
    refusal: `${why}, and software emulation is not allowed (AEGIS_MICROVM_ALLOW_EMULATION=1, for testing only; or a host whose KVM works)`,
  };
}

/** Why the guest in `dir` does not speak this launcher's protocol, or null (microvm-plan.ts). */
export function guestProtocol(dir: string): string | null {
  let text: string | null = null;
  try {
    text = readFileSync(join(dir, 'protocol'), 'utf8').slice(0, 100);
  } catch {
    text = null;
  }
  return guestProtocolProblem(text);
}

function guestPath(dir: string): string {
  try {
    accessSync(join(dir, 'vmlinuz'), constants.R_OK);
    return dir;
  } catch {
    return join(dir, 'current');
  }
}

export class MicrovmDriver implements RuntimeDriver {
  readonly isolation = 'microvm' as const;
  /** Node.js itself: the launcher is a script of AEGIS's. */
  readonly binary = process.execPath;
  readonly cgroupMode = 'inherit' as const;
  readonly rlimitsInherited = false;
  readonly launcher = join(dirname(fileURLToPath(import.meta.url)), 'microvm-launcher.js');
  /**
   * Host memory above the manifest's: QEMU itself, and the guest kernel's share of the guest's RAM
   * (the agent's cgroup inside the guest gets the manifest's memory).
   */
  readonly memoryOverhead = MICROVM_VMM_OVERHEAD_BYTES + MICROVM_GUEST_KERNEL_BYTES;
  constructor(readonly settings: MicrovmSettings = DEFAULT_MICROVM_SETTINGS) {}

  pidsOverhead(_config: OciConfig): number {
    return MICROVM_PIDS_OVERHEAD;
  }

  unavailableReason(): string | null {
    if (findExecutable('qemu-system-x86_64') === null) return 'qemu-system-x86_64 is not installed (Debian package "qemu-system-x86")';
    if (findExecutable('unshare') === null) return 'unshare is not installed (Debian package "util-linux")';
    const g = guestPath(this.settings.guestDir);
    try {
      accessSync(join(g, 'vmlinuz'), constants.R_OK);
      accessSync(join(g, 'initramfs.cpio.gz'), constants.R_OK);
    } catch {
      return `no microVM guest kernel in ${this.settings.guestDir} (run scripts/microvm/build-guest.sh or aegis doctor --fix)`;
    }
    const protocol = guestProtocol(g);
    if (protocol !== null) return `${protocol}: rebuild it with scripts/microvm/build-guest.sh ${this.settings.guestDir}`;
    if (microvmAccel(this.settings) === null)
      return '/dev/kvm is not usable and software emulation is not allowed (AEGIS_MICROVM_ALLOW_EMULATION=1, for testing only)';
    return null;
  }

  /**
   * Fails fast where KVM would be used but does not run a stock guest (the probe, cached): such a
   * run would otherwise hang until its timeout.
   */
  async preflight(): Promise<string | null> {
    return (await microvmMode(this.settings)).refusal;
  }

  /** The config runs as validated; the guest's init applies it (microvm-plan.ts). */
  adapt(config: OciConfig): OciConfig {
    return config;
  }

  runArgs(r: RuntimeRun): string[] {
    const accel = microvmAccel(this.settings) ?? 'kvm';
    return [
      this.launcher,
      '--bundle',
      r.bundleDir,
      '--pid-file',
      r.pidFile,
      '--guest',
      guestPath(this.settings.guestDir),
      '--accel',
      accel,
      '--run-as',
      `${AGENT_HOST_UID}:${AGENT_HOST_GID}`,
    ];
  }

  /**
   * TERM is relayed to the agent inside the guest (the launcher's control port to the init, which
   * signals every process of the agent's cgroup there); KILL is run.ts's kill of the whole run
   * cgroup (QEMU with the guest).
   */
  killArgs(r: RuntimeRun, signal: 'TERM' | 'KILL'): string[] | null {
    return signal === 'TERM' ? [this.launcher, '--relay', 'term', '--bundle', r.bundleDir] : null;
  }

  /** What the guest's init reported of the agent's cgroup inside the guest (the launcher's report; untrusted JSON). */
  guestUsage(r: RuntimeRun): GuestUsage | null {
    try {
      const v = JSON.parse(readFileSync(join(r.bundleDir, MICROVM_GUEST_REPORT), 'utf8')) as unknown;
      if (typeof v !== 'object' || v === null) return null;
      const o = v as Record<string, unknown>;
      return { oom: o['oom'] === true, pidsLimitHit: o['pidsLimitHit'] === true };
    } catch {
      return null;
    }
  }

  /** Nothing outside the run directory: the VM ends with its process. */
  hasState(): boolean {
    return false;
  }

  deleteArgs(): string[] {
    return [];
  }
}

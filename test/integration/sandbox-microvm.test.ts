/**
 * The sandbox conformance suite on isolation microvm, under QEMU's software emulation here (these
 * hosts' KVM runs only patched guests: HOST-NOTES), so every run boots a kernel (~3-8 s).
 * The cases a microVM cannot pass yet are listed with the reason (docs/sandbox.md "microVM").
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { microvmMode } from '../../src/sandbox/drivers/microvm.js';
import { KVM_PROBE_TIMEOUT_MS } from '../../src/sandbox/drivers/microvm-kvm.js';
import { MICROVM_PROBE_OK, planKvmProbe } from '../../src/sandbox/drivers/microvm-plan.js';
import { AGENT_HOST_GID, AGENT_HOST_UID } from '../../src/sandbox/host-paths.js';
import { findExecutable, runCommand } from '../../src/host/exec.js';
import { runSandbox } from '../../src/sandbox/run.js';
import { requireOrSkip, runConformance, sandboxRequirements, testPolicy } from './sandbox-conformance.js';

/**
 * Emulation allowed explicitly, as an operator would with AEGIS_MICROVM_ALLOW_EMULATION=1; the
 * guest from the configuration (AEGIS_MICROVM_GUEST, default /var/lib/aegis/microvm).
 */
const microvm = { ...loadConfig().microvm, allowEmulation: true };

// What the microVM does not do yet (docs/sandbox.md "microVM", "Not done"): each case below
// fails for that stated reason, not silently.
runConformance('microvm', {
  runOptions: { microvm },
  defaultTimeoutMs: 90_000,
  // Boot to the agent's first instruction under emulation: 5-15 s on these loaded hosts.
  startupMs: 25_000,
  skip: {
    'holds a busy loop to its cpu quota (0.5 core)':
      "the quota is the host's CFS quota on QEMU (emulator and guest kernel together): the cpu/wall bound holds, but the throttled-period " +
      'ratio measured 0.10 (needs > 0.5): on these loaded 2-core hosts QEMU seldom gets its half core at all, so its quota rarely throttles it',
    'bounds an rw volume to its size (ENOSPC), copies it back without following links, owned by the user running AEGIS':
      "the case makes a named pipe in the volume: on a 9p share served by QEMU's unprivileged uid mkfifo fails (ENXIO); the other rw-volume cases run",
  },
});

describe('microvm: its own kernel', { timeout: 120_000 }, () => {
  let work = '';
  let rootfs = '';
  let unavailable: string | null = null;
  before(async () => {
    ({ unavailable, rootfs } = await sandboxRequirements('microvm', microvm));
    work = mkdtempSync('/var/tmp/aegis-microvm-');
    chmodSync(work, 0o755);
    mkdirSync(join(work, 'agent'));
    writeFileSync(join(work, 'agent', 'k.py'), 'import os\nprint(os.uname().release)\nprint(open("/proc/version").read().strip())\n');
  });
  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('runs the agent on a guest kernel, not the host kernel (uname -r, /proc/version)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    let out = '';
    const r = await runSandbox({
      // A kernel boots per run under emulation: 90 s, not the default 20 s.
      policy: testPolicy({ entrypoint: ['python3', 'k.py'], limits: { timeoutMs: 90_000 } }),
      manifestDir: join(work, 'agent'),
      imageRootfs: rootfs,
      isolation: 'microvm',
      stateDir: join(work, 'state'),
      microvm,
      stdout: (b) => void (out += b.toString()),
      stderr: 'ignore',
    });
    assert.equal(r.status, 'exited');
    assert.equal(r.exitCode, 0);
    const [guestRelease, guestVersion] = out.trim().split('\n');
    assert.ok(guestRelease !== undefined && guestRelease !== '', out);
    assert.notEqual(guestRelease, release(), 'the guest kernel is not the host kernel');
    assert.ok(guestVersion?.startsWith(`Linux version ${guestRelease} `), guestVersion);
  });

  it('fails fast, before building anything, where KVM would be used but does not run a stock guest (the probe)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const strict = { ...microvm, allowEmulation: false };
    const mode = await microvmMode(strict);
    const r = await runSandbox({
      policy: testPolicy({ entrypoint: ['python3', 'k.py'], limits: { timeoutMs: 90_000 } }),
      manifestDir: join(work, 'agent'),
      imageRootfs: rootfs,
      isolation: 'microvm',
      stateDir: join(work, 'state'),
      microvm: strict,
      stdout: 'ignore',
      stderr: 'ignore',
    });
    if (mode.accel === 'kvm') {
      // A host whose KVM works: the run uses it.
      assert.equal(r.status, 'exited', r.error?.message);
      return;
    }
    assert.equal(r.status, 'failed_to_start');
    assert.equal(r.error?.code, 'sandbox.runtime_unavailable');
    assert.match(r.error?.message ?? '', /KVM|kvm/);
    assert.match(r.error?.message ?? '', /AEGIS_MICROVM_ALLOW_EMULATION=1/);
    assert.ok(r.durationMs < KVM_PROBE_TIMEOUT_MS + 5000, `refused before the run's timeout (${r.durationMs} ms)`);
  });

  it("the guest's init answers the KVM probe (checked under emulation: the probe's 'works' side)", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const qemu = findExecutable('qemu-system-x86_64');
    assert.ok(qemu !== null);
    const guest = [microvm.guestDir, join(microvm.guestDir, 'current')].find((d) => existsSync(join(d, 'vmlinuz')));
    assert.ok(guest !== undefined);
    const argv = [
      qemu,
      ...planKvmProbe({
        kernel: join(guest, 'vmlinuz'),
        initrd: join(guest, 'initramfs.cpio.gz'),
        runAs: { uid: AGENT_HOST_UID, gid: AGENT_HOST_GID },
        accel: 'tcg',
        tscKhz: Math.round(Number(/^cpu MHz\s*:\s*([\d.]+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 0) * 1000) || null,
      }),
    ];
    const r = await runCommand(argv, { timeoutMs: 90_000 });
    assert.ok(r.stdout.includes(MICROVM_PROBE_OK), `${r.code} ${r.signal} ${r.stderr} ${r.stdout.slice(-500)}`);
    assert.equal(r.timedOut, false);
  });

  it('refuses to start when the guest kernel is missing (fail secure)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = await runSandbox({
      policy: testPolicy({ entrypoint: ['python3', 'k.py'] }),
      manifestDir: join(work, 'agent'),
      imageRootfs: rootfs,
      isolation: 'microvm',
      stateDir: join(work, 'state'),
      microvm: { guestDir: join(work, 'no-guest'), allowEmulation: false },
      stdout: 'ignore',
      stderr: 'ignore',
    });
    assert.equal(r.status, 'failed_to_start');
    assert.equal(r.error?.code, 'sandbox.runtime_unavailable');
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_MICROVM_SETTINGS, MicrovmDriver, microvmAccel, microvmMode } from './microvm.js';
import { MICROVM_GUEST_PROTOCOL } from './microvm-plan.js';

describe('microvmAccel', () => {
  it('uses software emulation only when the operator allows it, KVM otherwise, and nothing without either', () => {
    assert.equal(microvmAccel(DEFAULT_MICROVM_SETTINGS, true), 'kvm');
    assert.equal(microvmAccel(DEFAULT_MICROVM_SETTINGS, false), null);
    assert.equal(microvmAccel({ ...DEFAULT_MICROVM_SETTINGS, allowEmulation: true }, false), 'tcg');
  });
});

describe('MicrovmDriver: the guest', () => {
  it('refuses a guest built from an init of another protocol (fail secure), accepts the current one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-mvguest-'));
    try {
      writeFileSync(join(dir, 'vmlinuz'), '');
      writeFileSync(join(dir, 'initramfs.cpio.gz'), '');
      const driver = new MicrovmDriver({ guestDir: dir, allowEmulation: true });
      assert.match(driver.unavailableReason() ?? '', /no protocol file.*rebuild/);
      writeFileSync(join(dir, 'protocol'), '1\n');
      assert.match(driver.unavailableReason() ?? '', /protocol "1".*rebuild/);
      writeFileSync(join(dir, 'protocol'), `${MICROVM_GUEST_PROTOCOL}\n`);
      // QEMU and unshare are on the host (scripts/setup.sh): nothing else stops this guest.
      assert.equal(driver.unavailableReason(), null);
      // Emulation allowed: no KVM probe, no refusal.
      assert.deepEqual(await microvmMode({ guestDir: dir, allowEmulation: true }), { accel: 'tcg', probe: null, refusal: null });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

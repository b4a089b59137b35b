import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_MICROVM_SETTINGS, microvmAccel } from './microvm.js';

describe('microvmAccel', () => {
  it('uses software emulation only when the operator allows it, KVM otherwise, and nothing without either', () => {
    assert.equal(microvmAccel(DEFAULT_MICROVM_SETTINGS, true), 'kvm');
    assert.equal(microvmAccel(DEFAULT_MICROVM_SETTINGS, false), null);
    assert.equal(microvmAccel({ ...DEFAULT_MICROVM_SETTINGS, allowEmulation: true }, false), 'tcg');
  });
});

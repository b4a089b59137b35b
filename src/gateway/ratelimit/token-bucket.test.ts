import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ByteQuota, TokenBucket } from './token-bucket.js';

describe('TokenBucket', () => {
  it('allows a burst, then refuses until time refills it', () => {
    let now = 1000;
    const b = new TokenBucket(2, 3, () => now);
    assert.deepEqual([b.take(), b.take(), b.take(), b.take()], [true, true, true, false]);
    now += 499; // 0.998 token
    assert.equal(b.take(), false);
    now += 2; // > 1 token accumulated overall
    assert.equal(b.take(), true);
    assert.equal(b.take(), false);
  });

  it('never holds more than burst tokens after a long idle time', () => {
    let now = 0;
    const b = new TokenBucket(10, 2, () => now);
    now += 60_000;
    assert.deepEqual([b.take(), b.take(), b.take()], [true, true, false]);
  });

  describe('when the clock goes backwards', () => {
    it('adds no tokens', () => {
      let now = 5000;
      const b = new TokenBucket(1, 1, () => now);
      assert.equal(b.take(), true);
      now = 0;
      assert.equal(b.take(), false);
    });
  });

  describe('when constructed with a nonsensical rate', () => {
    it('throws', () => {
      assert.throws(() => new TokenBucket(0, 1, () => 0), RangeError);
      assert.throws(() => new TokenBucket(1, 0, () => 0), RangeError);
    });
  });
});

describe('ByteQuota', () => {
  it('is exceeded only past the limit', () => {
    const q = new ByteQuota(100);
    assert.equal(q.charge(60), true);
    assert.equal(q.charge(40), true);
    assert.equal(q.charge(1), false);
    assert.equal(q.exceeded(), true);
    assert.equal(q.bytesUsed, 101);
  });
  it('null means unlimited', () => {
    const q = new ByteQuota(null);
    assert.equal(q.charge(Number.MAX_SAFE_INTEGER), true);
  });
});

/**
 * Token bucket (per sandbox) for new connections and requests, and a byte quota.
 * Pure: the clock is injected (milliseconds, monotonic), so tests drive time explicitly.
 */

export type Clock = () => number;

export class TokenBucket {
  private tokens: number;
  private last: number;

  /**
   * @param perSecond refill rate (tokens per second), > 0
   * @param burst capacity; the bucket starts full
   */
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: Clock,
  ) {
    if (!(perSecond > 0) || !(burst >= 1))
      throw new RangeError(`token bucket needs perSecond > 0 and burst >= 1 (got ${perSecond}, ${burst})`);
    this.tokens = burst;
    this.last = now();
  }

  /** Take one token if there is one; false means the caller must refuse (rate limited). */
  take(): boolean {
    const t = this.now();
    const elapsed = Math.max(0, t - this.last); // a clock that goes backwards adds nothing
    this.last = t;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.perSecond) / 1000);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Total bytes (both directions) a sandbox may move; `null` limit means unlimited. */
export class ByteQuota {
  private used = 0;
  constructor(private readonly limit: number | null) {}

  /** Record `n` bytes; returns false once the quota is exceeded (the bytes are still counted). */
  charge(n: number): boolean {
    this.used += n;
    return !this.exceeded();
  }

  exceeded(): boolean {
    return this.limit !== null && this.used > this.limit;
  }

  get bytesUsed(): number {
    return this.used;
  }
}

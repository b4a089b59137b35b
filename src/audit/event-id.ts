/**
 * Time-ordered unique event ids: UUIDv7 (RFC 9562 §5.7). The 12-bit rand_a field is used as a
 * counter within one millisecond (RFC 9562 §6.2 method 1) so ids from one generator sort in
 * creation order. Pure: the clock and the random source are passed in.
 */
export type RandomFill = (buf: Uint8Array) => void;

export function uuidv7Generator(now: () => number, randomFill: RandomFill): () => string {
  let lastMs = -1;
  let counter = 0;
  // Random bytes are drawn in bulk: one call to the source per 1024 ids.
  const pool = new Uint8Array(8 * 1024);
  let used = pool.length;
  return () => {
    let ms = Math.max(now(), lastMs);
    if (ms === lastMs) {
      counter++;
      if (counter > 0xfff) {
        ms = lastMs + 1; // counter exhausted: borrow the next millisecond
        counter = 0;
      }
    } else {
      counter = 0;
    }
    lastMs = ms;
    if (used === pool.length) {
      randomFill(pool);
      used = 0;
    }
    const rnd = pool.subarray(used, used + 8);
    used += 8;
    const hex = ms.toString(16).padStart(12, '0');
    const randA = (0x7000 | counter).toString(16);
    const varB = ((0x80 | ((rnd[0] as number) & 0x3f)) << 8) | (rnd[1] as number);
    const tail = Buffer.from(rnd.subarray(2)).toString('hex');
    return `${hex.slice(0, 8)}-${hex.slice(8)}-${randA}-${varB.toString(16)}-${tail}`;
  };
}

export const UUID_V7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/u;

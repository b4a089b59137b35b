/**
 * Time-ordered unique event ids: UUIDv7 (RFC 9562 §5.7). The 12-bit rand_a field is used as a
 * counter within one millisecond (RFC 9562 §6.2 method 1) so ids from one generator sort in
 * creation order. Pure: the clock and the random source are passed in. Runs once per event, so
 * it formats from a byte-to-hex table and draws random bytes in bulk.
 */
export type RandomFill = (buf: Uint8Array) => void;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function uuidv7Generator(now: () => number, randomFill: RandomFill): () => string {
  let lastMs = -1;
  let counter = 0;
  let msHex = '';
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
    if (ms !== lastMs) {
      const h = ms.toString(16).padStart(12, '0');
      msHex = `${h.slice(0, 8)}-${h.slice(8)}-`;
    }
    lastMs = ms;
    if (used === pool.length) {
      randomFill(pool);
      used = 0;
    }
    const r = used;
    used += 8;
    const randA = HEX[0x70 | (counter >> 8)] as string;
    const randA2 = HEX[counter & 0xff] as string;
    const varB = HEX[0x80 | ((pool[r] as number) & 0x3f)] as string;
    return (
      `${msHex}${randA}${randA2}-${varB}${HEX[pool[r + 1] as number] as string}-` +
      `${HEX[pool[r + 2] as number] as string}${HEX[pool[r + 3] as number] as string}${HEX[pool[r + 4] as number] as string}` +
      `${HEX[pool[r + 5] as number] as string}${HEX[pool[r + 6] as number] as string}${HEX[pool[r + 7] as number] as string}`
    );
  };
}

export const UUID_V7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/u;

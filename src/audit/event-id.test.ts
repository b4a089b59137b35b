import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { UUID_V7_RE, uuidv7Generator } from './event-id.js';

describe('uuidv7Generator', () => {
  it('makes RFC 9562 version 7 ids carrying the millisecond time', () => {
    const gen = uuidv7Generator(
      () => 0x0123456789ab,
      (b) => void randomFillSync(b),
    );
    const id = gen();
    assert.match(id, UUID_V7_RE);
    assert.equal(id.slice(0, 13), '01234567-89ab');
  });

  it('sorts in creation order within one millisecond and across a backwards clock step', () => {
    let t = 1_700_000_000_000;
    const gen = uuidv7Generator(
      () => t,
      (b) => void randomFillSync(b),
    );
    const ids: string[] = [];
    for (let i = 0; i < 5000; i++) {
      if (i === 2500) t -= 10; // clock stepped back: ids must still increase
      ids.push(gen());
    }
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) assert.match(id, UUID_V7_RE);
  });
});

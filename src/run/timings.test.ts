import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PhaseTimings } from './timings.js';

/** A clock that returns the given instants in order (the timings read it once per mark). */
function clock(...instants: number[]): () => number {
  let i = 0;
  return () => {
    const t = instants[i++];
    if (t === undefined) throw new Error('clock read more often than expected');
    return t;
  };
}

describe('PhaseTimings', () => {
  it('each mark closes the phase since the previous one; the first starts at the origin', () => {
    const t = new PhaseTimings(clock(40, 55, 95.5), 0);
    t.mark('start');
    t.mark('load');
    t.mark('run');
    assert.deepEqual(t.summary(), {
      phases: [
        { name: 'start', ms: 40 },
        { name: 'load', ms: 15 },
        { name: 'run', ms: 40.5 },
      ],
      totalMs: 95.5,
    });
  });

  it('a phase marked twice adds up, in the order of its first mark', () => {
    const t = new PhaseTimings(clock(12, 15, 20, 30), 10);
    t.mark('a');
    t.mark('b');
    t.mark('a');
    t.mark('c');
    assert.deepEqual(t.summary(), {
      phases: [
        { name: 'a', ms: 7 },
        { name: 'b', ms: 3 },
        { name: 'c', ms: 10 },
      ],
      totalMs: 20,
    });
  });

  it('formats one line per phase and the total, with the prefix', () => {
    const t = new PhaseTimings(clock(1.25, 3), 0);
    t.mark('node_and_cli_start');
    t.mark('x');
    assert.equal(
      t.format('aegis run: timing: '),
      'aegis run: timing: node_and_cli_start     1.3 ms\n' +
        'aegis run: timing: x                      1.8 ms\n' +
        'aegis run: timing: total                  3.0 ms\n',
    );
  });

  it('without marks: only the total, zero', () => {
    const t = new PhaseTimings(clock(), 5);
    assert.equal(t.format('> '), '> total     0.0 ms\n');
  });
});

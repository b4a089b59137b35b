/**
 * Reading an agent's history back from the end of the log: bounded, the partial first execution
 * dropped, and the cheap first look used when it holds enough runs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HISTORY_WINDOW, type BaselineEvent } from './baseline.js';
import { FIRST_LOOK_EVENTS, type HistorySource, readRecentExecutions } from './baseline-history.js';

/** A log of `runs` executions of `agent`, `perRun` events each (the last two end the run). */
function logOf(runs: number, perRun: number, agent = 'a'): HistorySource & { readFrom: number[] } {
  const events: BaselineEvent[] = [];
  for (let x = 0; x < runs; x++)
    for (let i = 0; i < perRun; i++)
      events.push({
        action: i === perRun - 1 ? 'run.exit' : 'net.dns',
        decision: 'allow',
        actor: { agent, execution: `x${x}` },
        payload: i === perRun - 1 ? { durationMs: 100 } : { name: 'api.openai.com' },
      });
  const readFrom: number[] = [];
  return {
    readFrom,
    size: events.length,
    read(from: number) {
      readFrom.push(from);
      return (async function* () {
        for (const e of events.slice(from)) yield { decoded: { event: e } };
      })();
    },
  };
}

describe('readRecentExecutions', () => {
  it('reads at most maxEvents from the end, and drops the execution cut by the window', async () => {
    const log = logOf(100, 10);
    const records = await readRecentExecutions(log, 95);
    assert.deepEqual(log.readFrom, [905]);
    assert.equal(records.length, 9, 'x90 began before the window: dropped');
    assert.equal(records[0]!.execution, 'x91');
    assert.equal(records[0]!.features.dnsQuestions, 9);
  });

  it('keeps everything when the window reaches the start of the log', async () => {
    const records = await readRecentExecutions(logOf(5, 10), 1000);
    assert.equal(records.length, 5);
  });

  it('for one agent, stops after the first look when it holds the whole history window', async () => {
    const small = logOf(250, 10); // 2,500 events: the first look holds 199 runs
    const r = await readRecentExecutions(small, 20_000, 'a');
    assert.deepEqual(small.readFrom, [small.size - FIRST_LOOK_EVENTS]);
    assert.ok(r.length > HISTORY_WINDOW);
    // Runs too big for the first look: it reads the whole window.
    const big = logOf(HISTORY_WINDOW + 10, 100); // 6,000 events: 19 runs in the first look
    const all = await readRecentExecutions(big, 20_000, 'a');
    assert.deepEqual(big.readFrom, [big.size - FIRST_LOOK_EVENTS, 0]);
    assert.equal(all.length, HISTORY_WINDOW + 10);
    // Another agent's runs do not count as this one's history.
    const other = logOf(250, 10, 'b');
    await readRecentExecutions(other, 20_000, 'a');
    assert.equal(other.readFrom.length, 2);
  });
});

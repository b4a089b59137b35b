import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../../audit/event.js';
import { DEFAULT_FOLD_LIMITS, RefusalFolder, type RefusedQuestion } from './fold.js';

const actor = { agent: 'a', execution: 'e1' };
const RL = 'gateway.rate_limited';
const NA = 'net.denied.not_in_allowlist';

/** A folder on a clock the test moves, and the totals a reader of the log would compute. */
function setup(limits = {}) {
  let t = 1_000;
  const f = new RefusalFolder(actor, () => t, limits);
  const full: RefusedQuestion[] = [];
  const summaries: AuditEventInput[] = [];
  return {
    f,
    advance(ms: number) {
      t += ms;
    },
    ask(q: RefusedQuestion) {
      if (f.admit(q)) full.push(q);
    },
    flush() {
      const ev = f.flush();
      summaries.push(...ev);
      return ev;
    },
    full,
    summaries,
    /** Refusals the log accounts for: full events plus summary counts. */
    accounted: () => full.length + summaries.reduce((n, e) => n + (e.payload.count as number), 0),
  };
}

describe('RefusalFolder', () => {
  it('keeps the first occurrences of each (name, type, reason) in full and counts the rest in one summary per reason', () => {
    const s = setup();
    for (let i = 0; i < 10; i++) s.ask({ name: 'x.attacker.com', type: 'TXT', reason: NA });
    for (let i = 0; i < 5; i++) s.ask({ name: 'api.openai.com', type: 'A', reason: RL });
    s.advance(1000);
    const ev = s.flush();
    assert.equal(s.full.length, 2 * DEFAULT_FOLD_LIMITS.firstPerKey);
    assert.deepEqual(
      ev.map((e) => [
        e.action,
        e.decision,
        e.reason,
        e.payload.count,
        e.payload.questions,
        e.payload.questionsOmitted,
        e.payload.intervalMs,
      ]),
      [
        ['net.dns.summary', 'deny', RL, 2, [{ name: 'api.openai.com', type: 'A', count: 2 }], 0, 1000],
        ['net.dns.summary', 'deny', NA, 7, [{ name: 'x.attacker.com', type: 'TXT', count: 7 }], 0, 1000],
      ],
    );
    assert.equal(
      ev[1]!.payload.detail,
      `7 DNS questions refused (${NA}) in the last 1000 ms, counted instead of logged one by one: TXT x.attacker.com x7`,
    );
    assert.deepEqual(ev[0]!.actor, actor);
    assert.equal(s.accounted(), 15);
    assert.deepEqual(s.flush(), [], 'nothing new: no event');
  });

  it('a flood of random names gets at most fullPerSecond full events a second, and every question is counted', () => {
    const s = setup({ fullPerSecond: 10 });
    let asked = 0;
    for (let sec = 0; sec < 3; sec++) {
      for (let i = 0; i < 5000; i++) {
        s.ask({ name: `${sec}-${i}.attacker.com`, type: 'A', reason: i % 2 ? RL : NA });
        asked++;
        if (i % 500 === 0) s.advance(100);
      }
      s.flush();
    }
    // the bucket starts full (10) and refills 10 per simulated second (3 s = 30 x 100 ms)
    assert.ok(s.full.length <= 10 + 30, String(s.full.length));
    assert.ok(s.full.length >= 10, String(s.full.length));
    assert.equal(s.summaries.length, 6, 'one summary per reason and flush');
    assert.equal(s.accounted(), asked);
    for (const e of s.summaries) {
      assert.ok((e.payload.questions as unknown[]).length <= DEFAULT_FOLD_LIMITS.listed);
      const listed = (e.payload.questions as Array<{ count: number }>).reduce((n, q) => n + q.count, 0);
      assert.equal(listed + (e.payload.questionsOmitted as number), e.payload.count);
    }
  });

  it('remembers at most maxKeys keys: later new names are only counted, and pairs past maxPendingPerReason only in questionsOmitted', () => {
    const s = setup({ maxKeys: 4, maxPendingPerReason: 2, listed: 1, fullPerSecond: 1000 });
    for (let i = 0; i < 6; i++) s.ask({ name: `n${i}.attacker.com`, type: 'A', reason: NA });
    s.ask({ name: 'n5.attacker.com', type: 'A', reason: NA });
    assert.deepEqual(
      s.full.map((q) => q.name),
      ['n0.attacker.com', 'n1.attacker.com', 'n2.attacker.com', 'n3.attacker.com'],
    );
    const [e] = s.flush();
    assert.equal(e!.payload.count, 3);
    assert.deepEqual(e!.payload.questions, [{ name: 'n5.attacker.com', type: 'A', count: 2 }]);
    assert.equal(e!.payload.questionsOmitted, 1);
    assert.equal(s.accounted(), 7);
  });

  it('unparseable questions (no name, no type) are folded like the others', () => {
    const s = setup();
    for (let i = 0; i < 5; i++) s.ask({ name: '', type: '', reason: 'gateway.malformed' });
    const [e] = s.flush();
    assert.equal(s.full.length, 3);
    assert.match(String(e!.payload.detail), /\(unparseable\) x2/);
  });
});

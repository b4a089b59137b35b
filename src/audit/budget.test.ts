import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from './event.js';
import { AuditError } from './errors.js';
import { AuditBudget, BudgetedSink, DEFAULT_AUDIT_BUDGET, parseAuditBudget } from './budget.js';

const actor = { agent: 'a', execution: 'e1' };
const dns = (i: number): AuditEventInput => ({
  actor,
  action: 'net.dns',
  decision: 'deny',
  reason: 'net.denied.not_in_allowlist',
  payload: { name: `${i}.attacker.com` },
});
const lifecycle = (action: string): AuditEventInput => ({ actor, action, decision: 'info', payload: {} });

/** A sink that keeps what it is given. */
const collector = () => {
  const events: AuditEventInput[] = [];
  return { events, append: (e: AuditEventInput) => void events.push(e) };
};

describe('AuditBudget (accounting)', () => {
  it('writes up to maxEvents, then says exhausted once, then folds', () => {
    const b = new AuditBudget({ maxEvents: 3, maxBytes: 1_000_000, onExhausted: 'stop' }, () => 0);
    const verdicts = [0, 1, 2, 3, 4, 5].map((i) => b.charge(dns(i), 100));
    assert.deepEqual(verdicts, ['write', 'write', 'write', 'exhausted', 'fold', 'fold']);
    assert.equal(b.exhausted, true);
  });

  it('counts bytes: an event that would pass maxBytes exhausts the budget', () => {
    const b = new AuditBudget({ maxEvents: 100, maxBytes: 250, onExhausted: 'continue' }, () => 0);
    assert.deepEqual(
      [b.charge(dns(0), 100), b.charge(dns(1), 100), b.charge(dns(2), 100), b.charge(dns(3), 10)],
      ['write', 'write', 'exhausted', 'fold'],
    );
  });

  it('lifecycle events (run.*, resource.usage, audit.*) are written past the budget, and count in it', () => {
    const b = new AuditBudget({ maxEvents: 2, maxBytes: 1_000_000, onExhausted: 'stop' }, () => 0);
    assert.equal(b.charge(lifecycle('run.start'), 50), 'write');
    assert.equal(b.charge(dns(0), 50), 'write');
    assert.equal(b.charge(dns(1), 50), 'exhausted');
    assert.deepEqual(
      [b.charge(lifecycle('run.killed'), 50), b.charge(lifecycle('resource.usage'), 50), b.charge(lifecycle('run.exit'), 50)],
      ['write', 'write', 'write'],
    );
  });

  it('the exhaustion event names the limits, the usage, the trigger and the time since the start', () => {
    let t = 1000;
    const b = new AuditBudget({ maxEvents: 1, maxBytes: 1_000_000, onExhausted: 'stop' }, () => t);
    b.charge(dns(0), 120);
    t = 3500;
    b.charge(dns(1), 120);
    const e = b.exhaustedEvent(actor);
    assert.deepEqual([e.action, e.decision, e.reason], ['audit.budget_exhausted', 'deny', 'audit.budget_exhausted']);
    const { detail, ...rest } = e.payload;
    assert.deepEqual(rest, {
      events: 1,
      bytes: 120,
      maxEvents: 1,
      maxBytes: 1_000_000,
      onExhausted: 'stop',
      trigger: 'net.dns',
      elapsedMs: 2500,
    });
    assert.match(String(detail), /the agent is stopped/);
  });

  it('the folded event adds up every event not written, per action, decision and reason', () => {
    const b = new AuditBudget({ maxEvents: 1, maxBytes: 1_000_000, onExhausted: 'continue' }, () => 0);
    assert.equal(b.foldedEvent(actor), null);
    for (let i = 0; i < 5; i++) b.charge(dns(i), 10);
    b.charge({ action: 'net.connect', decision: 'deny', reason: 'gateway.rate_limited' }, 30);
    const f = b.foldedEvent(actor)!;
    assert.equal(f.action, 'audit.budget_folded');
    assert.equal(f.payload.count, 5);
    assert.equal(f.payload.bytes, 70);
    assert.deepEqual(f.payload.byAction, [
      { action: 'net.dns', decision: 'deny', reason: 'net.denied.not_in_allowlist', count: 4, bytes: 40 },
      { action: 'net.connect', decision: 'deny', reason: 'gateway.rate_limited', count: 1, bytes: 30 },
    ]);
  });
});

describe('BudgetedSink', () => {
  it('passes events through, writes audit.budget_exhausted once and stops the agent (stop), then counts', async () => {
    const inner = collector();
    const stops: AuditEventInput[] = [];
    const sink = new BudgetedSink(
      inner,
      actor,
      { maxEvents: 10, maxBytes: 1_000_000, onExhausted: 'stop' },
      () => 0,
      (e) => stops.push(e),
    );
    await sink.append(lifecycle('run.start'));
    for (let i = 0; i < 1000; i++) await sink.append(dns(i));
    await sink.append(lifecycle('run.exit'));
    await sink.finish();
    await sink.finish();
    assert.deepEqual(
      inner.events.map((e) => e.action),
      ['run.start', ...Array<string>(9).fill('net.dns'), 'audit.budget_exhausted', 'run.exit', 'audit.budget_folded'],
    );
    assert.equal(stops.length, 1);
    assert.equal(stops[0]!.action, 'audit.budget_exhausted');
    assert.equal(inner.events.at(-1)!.payload.count, 1000 - 9);
    assert.equal(sink.exhausted, true);
  });

  it('with onExhausted continue the agent is not stopped; the event says so', async () => {
    const inner = collector();
    let stopped = false;
    const sink = new BudgetedSink(
      inner,
      actor,
      { maxEvents: 1, maxBytes: 1_000_000, onExhausted: 'continue' },
      () => 0,
      () => (stopped = true),
    );
    await sink.append(dns(0));
    await sink.append(dns(1));
    assert.equal(stopped, false);
    assert.match(String(inner.events[1]!.payload.detail), /goes on/);
  });

  it('measures bytes as the JSON of the event', async () => {
    const inner = collector();
    const e = dns(0);
    const size = Buffer.byteLength(JSON.stringify(e));
    const sink = new BudgetedSink(inner, actor, { maxEvents: 100, maxBytes: 2 * size, onExhausted: 'continue' }, () => 0);
    for (let i = 0; i < 3; i++) await sink.append(e);
    assert.deepEqual(
      inner.events.map((x) => x.action),
      ['net.dns', 'net.dns', 'audit.budget_exhausted'],
    );
  });
});

describe('parseAuditBudget (host settings)', () => {
  it('defaults to the documented budget, restrictive policy stop', () => {
    assert.deepEqual(parseAuditBudget({}), DEFAULT_AUDIT_BUDGET);
    assert.equal(DEFAULT_AUDIT_BUDGET.onExhausted, 'stop');
  });
  it('reads the three variables', () => {
    assert.deepEqual(
      parseAuditBudget({
        AEGIS_AUDIT_BUDGET_EVENTS: '200',
        AEGIS_AUDIT_BUDGET_BYTES: '65536',
        AEGIS_AUDIT_BUDGET_ON_EXHAUSTED: 'continue',
      }),
      { maxEvents: 200, maxBytes: 65536, onExhausted: 'continue' },
    );
  });
  it('refuses anything else with audit.budget_invalid', () => {
    for (const env of [
      { AEGIS_AUDIT_BUDGET_EVENTS: '0' },
      { AEGIS_AUDIT_BUDGET_EVENTS: '-1' },
      { AEGIS_AUDIT_BUDGET_BYTES: '1e9' },
      { AEGIS_AUDIT_BUDGET_EVENTS: ' 5' },
      { AEGIS_AUDIT_BUDGET_ON_EXHAUSTED: 'ignore' },
    ]) {
      assert.throws(
        () => parseAuditBudget(env),
        (e: unknown) => e instanceof AuditError && e.code === 'audit.budget_invalid',
        JSON.stringify(env),
      );
    }
  });
});

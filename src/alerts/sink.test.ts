import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../audit/event.js';
import { AlertEngine } from './engine.js';
import { DEFAULT_PACK, loadRules } from './load.js';
import { AlertingSink } from './sink.js';

const rules = await loadRules([DEFAULT_PACK]);

describe('AlertingSink', () => {
  it('gives events ids and times, forwards them, and appends each alert as alert.raised naming the event', () => {
    const logged: AuditEventInput[] = [];
    const delivered: string[] = [];
    const sink = new AlertingSink({ append: (e) => void logged.push(e) }, new AlertEngine(rules), (a, id) =>
      delivered.push(`${a.rule.id} ${id}`),
    );
    void sink.append({ actor: { execution: 'x' }, action: 'run.lost', decision: 'deny', payload: {} });
    assert.deepEqual(
      logged.map((e) => e.action),
      ['run.lost', 'alert.raised'],
    );
    assert.equal(typeof logged[0]!.id, 'string');
    assert.deepEqual((logged[1]!.payload as { eventIds: string[] }).eventIds, [logged[0]!.id]);
    assert.deepEqual(delivered, [`aegis-run-lost ${logged[1]!.id}`], 'the delivered record carries the logged alert id');
    assert.equal(sink.raised, 1);
  });
  it('an event that cannot be logged (the log failed) raises its alerts to the sinks only', () => {
    const logged: AuditEventInput[] = [];
    const delivered: string[] = [];
    const sink = new AlertingSink({ append: (e) => void logged.push(e) }, new AlertEngine(rules), (a) => delivered.push(a.rule.id));
    const alerts = sink.raiseOutsideLog({
      actor: { execution: 'x' },
      action: 'audit.write_failed',
      decision: 'deny',
      reason: 'audit.store_io',
      payload: { message: 'ENOSPC' },
    });
    assert.deepEqual(
      alerts.map((a) => a.rule.id),
      ['aegis-audit-write-failed'],
    );
    assert.deepEqual(delivered, ['aegis-audit-write-failed']);
    assert.deepEqual(logged, [], 'nothing is appended to the log that failed');
  });
});

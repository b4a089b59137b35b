/**
 * The per-agent baseline: features from events shaped as the producers write them, the model
 * (quiet below its minimum history, MAD floor), and the score with its reasons.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ABSOLUTE_FLOOR,
  type BaselineEvent,
  buildModel,
  explain,
  extractFeatures,
  FEATURES,
  type Features,
  groupExecutions,
  MIN_HISTORY,
  scoreAgainstHistory,
  scoreExecution,
  Z_THRESHOLD,
} from './baseline.js';

const actor = { agent: 'a', execution: 'x1' };
const ev = (action: string, decision: string, payload: Record<string, unknown> = {}, a = actor): BaselineEvent => ({
  time: '2026-11-30T00:00:00.000Z',
  action,
  decision,
  actor: a,
  payload,
});

/** A run of a small network agent: `i` varies it a little, as real runs vary. */
function runEvents(execution: string, i: number, extra: BaselineEvent[] = []): BaselineEvent[] {
  const a = { agent: 'a', execution };
  return [
    ev('run.spawn', 'info', { isolation: 'crun' }, a),
    ev('net.dns', 'allow', { name: 'api.openai.com', type: 'A' }, a),
    ev('net.connect', 'allow', { host: 'api.openai.com', port: 443, bytesSent: 900 + i * 7, bytesReceived: 4000 + i * 13 }, a),
    ...extra.map((e) => ({ ...e, actor: a })),
    ev('run.exit', 'info', { status: 'exited', exitCode: 0, durationMs: 400 + (i % 5) * 20 }, a),
    ev('resource.usage', 'info', { cpuMs: 80 + (i % 3) * 10, maxMemoryBytes: 12_000_000 + i * 1000, durationMs: 410 + (i % 5) * 20 }, a),
  ];
}

describe('extractFeatures', () => {
  it('reads usage, bytes, distinct destinations, DNS questions and denials from the events of one run', () => {
    const f = extractFeatures([
      ev('run.exit', 'info', { durationMs: 900 }),
      ev('resource.usage', 'info', { cpuMs: 120, maxMemoryBytes: 5_000_000, durationMs: 950 }),
      ev('net.connect', 'allow', { host: 'API.openai.com', port: 443, bytesSent: 100, bytesReceived: 2000 }),
      ev('net.connect', 'allow', { host: 'api.openai.com', port: 443, bytesSent: 50, bytesReceived: 10 }),
      ev('http.request', 'allow', { url: 'http://bench.test/x', bytesSent: 7, bytesReceived: 9 }),
      ev('net.connect', 'deny', { host: 'attacker.com', port: 443 }),
      ev('net.blocked', 'deny', { packets: 3, destinations: [{ address: '198.51.100.66', port: 53 }] }),
      ev('net.dns', 'allow', { name: 'api.openai.com' }),
      ev('net.dns', 'deny', { name: 'x.attacker.com' }),
      ev('net.dns.summary', 'deny', { count: 40 }),
    ]);
    assert.deepEqual(f, {
      durationMs: 950,
      cpuMs: 120,
      maxMemoryBytes: 5_000_000,
      bytesOut: 157,
      bytesIn: 2019,
      destinations: 4,
      dnsQuestions: 42,
      denials: 1 + 3 + 1 + 40,
    });
  });

  it('counts hostile payload values (negative, NaN, strings, missing) as zero and never throws', () => {
    const f = extractFeatures([
      ev('resource.usage', 'info', { cpuMs: -5, maxMemoryBytes: 'lots', durationMs: Number.NaN }),
      ev('net.connect', 'allow', { host: 42, bytesSent: Infinity }),
      ev('http.request', 'allow', { url: 'not a url' }),
      ev('net.blocked', 'deny', { destinations: [null, 'x', { address: 7 }] }),
      { action: 'net.dns.summary', decision: 'deny', payload: null },
    ]);
    assert.deepEqual(f, {
      durationMs: 0,
      cpuMs: 0,
      maxMemoryBytes: 0,
      bytesOut: 0,
      bytesIn: 0,
      destinations: 0,
      dnsQuestions: 0,
      denials: 2,
    });
  });

  it('takes the duration from run.exit when there is no usage event', () => {
    assert.equal(extractFeatures([ev('run.exit', 'info', { durationMs: 321 })]).durationMs, 321);
  });
});

describe('groupExecutions', () => {
  it('groups by execution, names the agent, marks complete runs, and ignores alerts and events without an execution', () => {
    const events = [
      ...runEvents('e1', 1),
      ev('run.spawn', 'info', {}, { agent: 'b', execution: 'e2' }),
      ev('alert.raised', 'info', {}, { agent: 'a', execution: 'e1' }),
      { action: 'audit.budget_exhausted', decision: 'info', actor: {} },
    ];
    const g = groupExecutions(events);
    assert.deepEqual(
      g.map((r) => [r.execution, r.agent, r.complete]),
      [
        ['e1', 'a', true],
        ['e2', 'b', false],
      ],
    );
  });
});

describe('the model', () => {
  const history: Features[] = Array.from({ length: 30 }, (_, i) => extractFeatures(runEvents(`h${i}`, i)));

  it('stays quiet below the minimum history, even for a 100x outlier', () => {
    const model = buildModel('a', history.slice(0, MIN_HISTORY - 1));
    assert.equal(model.ready, false);
    const huge = { ...history[0]!, bytesOut: history[0]!.bytesOut * 100_000 };
    const s = scoreExecution(model, huge);
    assert.equal(s.anomalous, false);
    assert.deepEqual(s.reasons, []);
    assert.ok(s.scores.find((x) => x.feature === 'bytesOut')!.z > Z_THRESHOLD, 'scored, just not alerted');
  });

  it('does not flag the executions it learned from', () => {
    const model = buildModel('a', history);
    assert.equal(model.ready, true);
    for (const h of history) assert.equal(scoreExecution(model, h).anomalous, false);
  });

  it('catches a 10x outlier and explains it: which feature, its value, the median, how far', () => {
    const model = buildModel('a', history);
    const x = { ...history[5]!, durationMs: history[5]!.durationMs * 10 };
    const s = scoreExecution(model, x);
    assert.equal(s.anomalous, true);
    assert.deepEqual(
      s.reasons.map((r) => r.feature),
      ['durationMs'],
    );
    const r = s.reasons[0]!;
    assert.equal(r.value, x.durationMs);
    assert.equal(r.median, model.features.durationMs.median);
    assert.ok(r.z >= Z_THRESHOLD);
    assert.match(explain(s.reasons), new RegExp(`^durationMs ${x.durationMs} \\(median ${r.median}, z ${r.z}\\)$`));
  });

  it('orders several reasons farthest first', () => {
    const model = buildModel('a', history);
    const s = scoreExecution(model, { ...history[0]!, destinations: 40, bytesOut: 100 * 1024 * 1024 });
    assert.deepEqual(
      s.reasons.map((r) => r.feature),
      ['bytesOut', 'destinations'],
    );
  });

  it('floors the MAD: a feature that never varied does not explode on a small change', () => {
    const model = buildModel('a', history);
    assert.equal(model.features.denials.mad, 0);
    assert.equal(model.features.denials.scale, ABSOLUTE_FLOOR.denials);
    assert.equal(model.features.destinations.mad, 0);
    // One denial and one more destination than ever before: finite and far below the threshold.
    const s = scoreExecution(model, { ...history[0]!, denials: 1, destinations: 2 });
    assert.equal(s.anomalous, false);
    for (const x of s.scores) assert.ok(Number.isFinite(x.z), x.feature);
    // The relative floor: memory varied by a few kB, yet 20 % more is not anomalous.
    assert.equal(scoreExecution(model, { ...history[0]!, maxMemoryBytes: history[0]!.maxMemoryBytes * 1.2 }).anomalous, false);
  });

  it('only flags increases: a run that does less than usual is not anomalous', () => {
    const model = buildModel('a', history);
    const zero = Object.fromEntries(FEATURES.map((f) => [f, 0])) as unknown as Features;
    assert.equal(scoreExecution(model, zero).anomalous, false);
  });

  it("scores an execution against the same agent's complete runs before it only", () => {
    const events = [
      ...Array.from({ length: 25 }, (_, i) => runEvents(`h${i}`, i)).flat(),
      // Another agent's noisy runs are not this agent's history.
      ...Array.from({ length: 5 }, (_, i) =>
        runEvents(`o${i}`, i).map((e) => ({ ...e, actor: { agent: 'other', execution: `o${i}` } })),
      ).flat(),
      ...runEvents(
        'now',
        3,
        Array.from({ length: 15 }, (_, i) => ev('net.connect', 'allow', { host: `h${i}.example`, port: 443 })),
      ),
    ];
    const records = groupExecutions(events);
    const { model, score } = scoreAgainstHistory(
      records,
      records.find((r) => r.execution === 'now')!,
      MIN_HISTORY,
    );
    assert.equal(model.executions, 25);
    assert.equal(score.anomalous, true);
    assert.equal(score.reasons[0]!.feature, 'destinations');
    assert.equal(score.reasons[0]!.value, 16);
  });
});

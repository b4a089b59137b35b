import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AlertEngine, type EngineEvent, MAX_EVENT_IDS } from './engine.js';
import { linkRules } from './rule.js';
import { parseRules } from './rule-file.js';

const rule = (id: string, action: string, extra = '') =>
  `title: ${id}\nid: ${id}\nlevel: low\n${extra}detection:\n  sel: { action: ${action} }\n  condition: sel\n`;
const corr = (id: string, type: string, rules: string, body: string, generate = '') =>
  `title: ${id}\nid: ${id}\nlevel: high\ncorrelation:\n  type: ${type}\n  rules: [${rules}]\n  group-by: [actor.execution]\n  timespan: 10s\n${body}${generate}`;
const engine = (text: string, suppressMs = 60_000) => new AlertEngine(linkRules(parseRules(text, 'r.yml')), { suppressMs });
const at = (ms: number, action: string, execution = 'x', payload: Record<string, unknown> = {}): EngineEvent => ({
  id: `${action}@${ms}`,
  time: new Date(ms).toISOString(),
  action,
  decision: 'deny',
  actor: { execution },
  payload,
});

describe('alert engine', () => {
  it('suppresses repeats of a rule per execution within the window, and says how many were folded', () => {
    const e = engine(rule('aaa', 'net.connect'), 1000);
    const out = [0, 100, 200, 900, 1000, 1500, 2100].flatMap((t) => e.evaluate(at(t, 'net.connect')));
    assert.deepEqual(
      out.map((a) => [a.time.slice(17, 23), a.suppressed]),
      [
        ['00.000', 0],
        ['01.000', 3],
        ['02.100', 1],
      ],
    );
    assert.equal(e.evaluate(at(2200, 'net.connect', 'other')).length, 1, 'another execution is its own group');
  });
  it('event_count: fires when the window holds the threshold, not when old events expired', () => {
    const e = engine(`${rule('base', 'net.connect')}---\n${corr('burst', 'event_count', 'base', '  condition: { gte: 3 }\n')}`);
    assert.equal([0, 11_000, 22_000].flatMap((t) => e.evaluate(at(t, 'net.connect'))).length, 0, 'spread over 22 s: never 3 within 10 s');
    const out = [40_000, 41_000, 42_000].flatMap((t) => e.evaluate(at(t, 'net.connect')));
    assert.equal(out.length, 1);
    assert.equal(out[0]!.count, 3);
    assert.deepEqual(out[0]!.eventIds, ['net.connect@40000', 'net.connect@41000', 'net.connect@42000']);
    assert.deepEqual(out[0]!.group, { 'actor.execution': 'x' });
  });
  it('a rule referenced by a correlation is silent unless generate: true', () => {
    assert.equal(
      engine(`${rule('base', 'net.connect')}---\n${corr('burst', 'event_count', 'base', '  condition: { gte: 3 }\n')}`).evaluate(
        at(0, 'net.connect'),
      ).length,
      0,
    );
    assert.equal(
      engine(
        `${rule('base', 'net.connect')}---\n${corr('burst', 'event_count', 'base', '  condition: { gte: 3 }\n', '  generate: true\n')}`,
      ).evaluate(at(0, 'net.connect')).length,
      1,
    );
  });
  it('value_count counts distinct values in the window', () => {
    const e = engine(
      `${rule('base', 'net.dns')}---\n${corr('names', 'value_count', 'base', '  condition: { field: payload.name, gte: 3 }\n')}`,
    );
    const names = ['a', 'a', 'b', 'b', 'c'];
    const out = names.flatMap((n, i) => e.evaluate(at(i * 100, 'net.dns', 'x', { name: n })));
    assert.equal(out.length, 1);
    assert.equal(out[0]!.count, 3);
  });
  it('temporal: fires when every referenced rule matched within the window', () => {
    const e = engine(`${rule('one', 'a.one')}---\n${rule('two', 'a.two')}---\n${corr('both', 'temporal', 'one, two', '')}`);
    assert.equal([e.evaluate(at(0, 'a.one')), e.evaluate(at(20_000, 'a.two'))].flat().length, 0);
    assert.equal(e.evaluate(at(25_000, 'a.one')).length, 1);
  });
  it('keeps bounded state: event ids per alert and groups per rule', () => {
    const e = new AlertEngine(
      linkRules(
        parseRules(`${rule('base', 'net.connect')}---\n${corr('burst', 'event_count', 'base', '  condition: { gte: 50 }\n')}`, 'r.yml'),
      ),
      { maxGroups: 10 },
    );
    const out = Array.from({ length: 50 }, (_, i) => e.evaluate(at(i, 'net.connect'))).flat();
    assert.equal(out[0]!.eventIds.length, MAX_EVENT_IDS);
    for (let i = 0; i < 1000; i++) e.evaluate(at(100 + i, 'net.connect', `exec-${i}`));
    assert.ok((e as unknown as { groups: Map<string, Map<string, unknown>> }).groups.get('burst')!.size <= 10);
  });
});

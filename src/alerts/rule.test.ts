import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { parseCondition, evalCondition } from './condition.js';
import { AlertError } from './errors.js';
import { linkRules } from './rule.js';
import { parseRules } from './rule-file.js';
import { compileField } from './selection.js';

const ev = (o: Record<string, unknown>) => ({
  id: 'e',
  time: '2026-11-30T00:00:00.000Z',
  action: 'net.connect',
  decision: 'deny',
  actor: { execution: 'x' },
  payload: {},
  ...o,
});

describe('conditions', () => {
  const sels = ['a', 'b', 'sel_1', 'sel_2'];
  const on =
    (...m: string[]) =>
    (n: string) =>
      m.includes(n);
  it('precedence: not > and > or; parentheses; quantifiers', () => {
    assert.equal(evalCondition(parseCondition('a or b and not a', sels), on('a')), true);
    assert.equal(evalCondition(parseCondition('(a or b) and not a', sels), on('a')), false);
    assert.equal(evalCondition(parseCondition('1 of sel_*', sels), on('sel_2')), true);
    assert.equal(evalCondition(parseCondition('all of sel_*', sels), on('sel_2')), false);
    assert.equal(evalCondition(parseCondition('all of them', sels), on('a', 'b', 'sel_1', 'sel_2')), true);
    assert.equal(evalCondition(parseCondition('A and NOT b', ['A', 'b']), on('A')), true, 'keywords are case-insensitive');
  });
  for (const bad of ['', 'a and', 'c', 'a b', '(a', 'a)', '1 of x*', 'all a', 'not', 'a & b']) {
    it(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => parseCondition(bad, sels)));
  }
});

describe('field matchers', () => {
  it('plain values are case-insensitive and literal (no wildcards); lists are any', () => {
    assert.equal(compileField('payload.host', 'API.Example.com')(ev({ payload: { host: 'api.example.com' } })), true);
    assert.equal(compileField('payload.host', '*.example.com')(ev({ payload: { host: 'a.example.com' } })), false);
    assert.equal(compileField('action', ['x', 'net.connect'])(ev({})), true);
  });
  it('modifiers', () => {
    const e = ev({
      payload: { host: 'evil.attacker.com', port: 22, address: '169.254.169.254', list: [{ a: '10.0.0.1' }, { a: '192.168.1.1' }] },
    });
    const t = (k: string, v: unknown) => compileField(k, v)(e);
    assert.equal(t('payload.host|endswith', '.attacker.com'), true);
    assert.equal(t('payload.host|startswith', 'evil.'), true);
    assert.equal(t('payload.host|contains', 'ATTACK'), true);
    assert.equal(t('payload.host|re', '^evil\\.'), true);
    assert.equal(t('payload.host|re', '^EVIL'), false, 're is case-sensitive');
    assert.equal(t('payload.port|gte', 22), true);
    assert.equal(t('payload.port|lt', 22), false);
    assert.equal(t('payload.address|cidr', '169.254.0.0/16'), true);
    assert.equal(t('payload.host|cidr', '0.0.0.0/0'), false, 'a name is not in any range');
    assert.equal(t('payload.list.a|cidr', '192.168.0.0/16'), true, 'through a list of objects');
    assert.equal(t('payload.missing|exists', false), true);
    assert.equal(t('payload.host|exists', true), true);
    assert.equal(t('payload.missing', null), true);
    assert.equal(t('payload.host|contains|all', ['evil', 'attacker']), true);
    assert.equal(t('payload.host|contains|all', ['evil', 'nice']), false);
    assert.equal(
      compileField('payload.address|cidr', '169.254.169.254/32')(ev({ payload: { address: '::ffff:169.254.169.254' } })),
      true,
      'IPv4-mapped IPv6',
    );
  });
  it('never matches by prototype or on a hostile event shape', () => {
    assert.equal(compileField('payload.constructor', 'x')(ev({})), false);
    assert.equal(compileField('payload.host', 'x')(ev({ payload: null })), false);
    assert.equal(
      compileField('payload.host|re', 'a')(ev({ payload: { host: 'a'.repeat(5000) } })),
      false,
      'values beyond RE_MAX_INPUT are not matched by re',
    );
  });
  for (const [k, v] of [
    ['payload.host|bogus', 'x'],
    ['payload.host|re', '('],
    ['payload.host|cidr', 'not-a-cidr'],
    ['payload.port|gt', 'many'],
    ['payload.host|contains|endswith', 'x'],
    ['bad field', 'x'],
    ['payload.host', []],
    ['payload.host', { a: 1 }],
    ['payload.host|exists', 'yes'],
  ] as const) {
    it(`refuses ${k}: ${JSON.stringify(v)}`, () => assert.throws(() => compileField(k, v)));
  }
});

describe('rule files', () => {
  const good = `title: T\nid: aegis-t\nlevel: low\ndetection:\n  sel: { action: net.connect }\n  condition: sel\n`;
  it('compiles a detection rule and a correlation that refers to it by name', () => {
    const rules = linkRules(
      parseRules(
        `${good}name: tname\n---\ntitle: C\nid: aegis-c\nlevel: high\ncorrelation:\n  type: event_count\n  rules: [tname]\n  timespan: 5s\n  condition: { gte: 2 }\n`,
        'r.yml',
      ),
    );
    assert.equal(rules.length, 2);
    assert.deepEqual(rules[1]!.kind === 'correlation' && rules[1]!.rules, ['aegis-t']);
    assert.equal(rules[0]!.kind === 'detection' && rules[0]!.matches(ev({})), true);
  });
  for (const [what, text, where] of [
    ['an unknown key, at its line and column', `${good}levle: high\n`, /^r\.yml:7:1: levle: unknown key "levle"/],
    ['a bad level', good.replace('level: low', 'level: severe'), /^r\.yml:3:8: level:/],
    [
      'an unknown selection in the condition',
      good.replace('condition: sel', 'condition: sel and other'),
      /r\.yml:6:14: detection\.condition: "other" is not a selection/,
    ],
    ['a bad modifier', good.replace('action: net.connect', 'action|regex: x'), /detection\.sel: action\|regex: unknown modifier "regex"/],
    ['broken YAML', 'title: [\n', /^r\.yml:\d+:\d+: YAML:/],
    ['duplicate keys', `${good}level: high\n`, /^r\.yml:\d+:\d+: YAML:/],
    [
      'a correlation without a threshold',
      `title: C\nid: aegis-c\nlevel: high\ncorrelation:\n  type: event_count\n  rules: [xyz]\n  timespan: 5s\n`,
      /needs a condition/,
    ],
    [
      'a value_count without a field',
      `title: C\nid: aegis-c\nlevel: high\ncorrelation:\n  type: value_count\n  rules: [xyz]\n  timespan: 5s\n  condition: { gte: 2 }\n`,
      /value_count needs a field/,
    ],
    [
      'a bad timespan',
      `title: C\nid: aegis-c\nlevel: high\ncorrelation:\n  type: event_count\n  rules: [xyz]\n  timespan: 5 minutes\n  condition: { gte: 2 }\n`,
      /timespan: must be a number and a unit/,
    ],
    ['another log source', `${good}logsource: { product: windows }\n`, /logsource\.product/],
  ] as const) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => parseRules(text, 'r.yml'),
        (e: unknown) => hasCode(AlertError, 'alerts.rule_invalid')(e) && where.test((e as Error).message),
      );
    });
  }
  it('refuses duplicate ids and dangling or correlation references when linking', () => {
    assert.throws(() => linkRules(parseRules(`${good}---\n${good}`, 'r.yml')), /already the id/);
    assert.throws(
      () =>
        linkRules(
          parseRules(`title: C\nid: aegis-c\nlevel: high\ncorrelation:\n  type: temporal\n  rules: [nope]\n  timespan: 5s\n`, 'r.yml'),
        ),
      /no rule "nope"/,
    );
  });
});

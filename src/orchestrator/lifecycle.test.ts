import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { propertyRuns } from '../test-support/props.js';
import {
  EXECUTION_STATUSES,
  executionTransition,
  isFinalExecutionStatus,
  isFinalSandboxState,
  SANDBOX_EVENTS,
  SANDBOX_STATES,
  transition,
  type SandboxEvent,
  type SandboxEventType,
  type SandboxKey,
  type SandboxState,
} from './lifecycle.js';

const KEY: SandboxKey = { agent: 'bot', version: 2, manifestDigest: 'sha256:aa', codeDigest: 'sha256:bb' };

/** An event of each type whose guard holds. */
function passing(type: SandboxEventType): SandboxEvent {
  switch (type) {
    case 'prepare':
    case 'start':
      return { type, budgetRoom: true };
    case 'claim':
      return { type, sandbox: KEY, requested: { ...KEY } };
    case 'exit':
    case 'destroy':
    case 'fail':
      return { type };
  }
}

/** Every allowed pair, written out (the issue's lifecycle): anything else is refused. */
const ALLOWED: Record<string, SandboxState> = {
  'cold prepare': 'warm',
  'cold start': 'hot',
  'cold fail': 'failed',
  'warm claim': 'hot',
  'warm destroy': 'terminated',
  'warm fail': 'failed',
  'hot exit': 'terminated',
  'hot fail': 'failed',
};

describe('sandbox lifecycle: every state x event', () => {
  for (const s of SANDBOX_STATES)
    for (const e of SANDBOX_EVENTS) {
      const want = ALLOWED[`${s} ${e}`];
      it(`${s} + ${e} -> ${want ?? 'refused'}`, () => {
        const r = transition(s, passing(e));
        if (want === undefined) {
          assert.equal(r.ok, false);
          assert.equal(!r.ok && r.code, 'orchestrator.invalid_transition');
        } else assert.deepEqual(r, { ok: true, from: s, to: want });
      });
    }

  it('a sandbox is used once: a terminated or failed one accepts no event at all', () => {
    for (const s of SANDBOX_STATES.filter(isFinalSandboxState))
      for (const e of SANDBOX_EVENTS) assert.equal(transition(s, passing(e)).ok, false);
    const hot = transition('warm', passing('claim'));
    assert.ok(hot.ok);
    assert.equal(transition(hot.to, passing('claim')).ok, false, 'a claimed sandbox cannot be claimed again');
  });
});

describe('sandbox lifecycle guards', () => {
  it('prepare and start are refused without room in the host budget', () => {
    assert.equal(transition('cold', { type: 'prepare', budgetRoom: false }).ok, false);
    assert.equal(transition('cold', { type: 'start', budgetRoom: false }).ok, false);
  });
  for (const [label, params] of propertyRuns(300))
    it(`claim holds exactly when the warm sandbox is the requested version (${label})`, () => {
      const key = fc.record({
        agent: fc.constantFrom('a', 'b'),
        version: fc.integer({ min: 1, max: 2 }),
        manifestDigest: fc.constantFrom('sha256:1', 'sha256:2'),
        codeDigest: fc.constantFrom('sha256:1', 'sha256:2'),
      });
      fc.assert(
        fc.property(key, key, (sandbox, requested) => {
          const same =
            sandbox.agent === requested.agent &&
            sandbox.version === requested.version &&
            sandbox.manifestDigest === requested.manifestDigest &&
            sandbox.codeDigest === requested.codeDigest;
          const r = transition('warm', { type: 'claim', sandbox, requested });
          assert.equal(r.ok, same);
          if (r.ok) assert.equal(r.to, 'hot');
        }),
        params,
      );
    });
  for (const [label, params] of propertyRuns(300))
    it(`any sequence of events ends in a state reachable by the table, and never leaves a final state (${label})`, () => {
      fc.assert(
        fc.property(fc.array(fc.constantFrom(...SANDBOX_EVENTS), { maxLength: 12 }), (events) => {
          let s: SandboxState = 'cold';
          let ended = false;
          for (const e of events) {
            const r = transition(s, passing(e));
            if (ended) assert.equal(r.ok, false);
            if (r.ok) s = r.to;
            ended = isFinalSandboxState(s);
          }
          assert.ok(SANDBOX_STATES.includes(s));
        }),
        params,
      );
    });
});

describe('execution status transitions', () => {
  const allowed = new Set([
    'queued running',
    'queued killed',
    'queued lost',
    'running exited',
    'running oom',
    'running timeout',
    'running killed',
    'running failed_to_start',
    'running lost',
  ]);
  for (const from of EXECUTION_STATUSES)
    for (const to of EXECUTION_STATUSES)
      it(`${from} -> ${to}: ${allowed.has(`${from} ${to}`) ? 'allowed' : 'refused'}`, () => {
        const r = executionTransition(from, to);
        assert.equal(r.ok, allowed.has(`${from} ${to}`));
        if (!r.ok) assert.equal(r.code, 'orchestrator.invalid_transition');
      });
  it('the final statuses are exactly those that accept nothing', () => {
    assert.deepEqual(EXECUTION_STATUSES.filter(isFinalExecutionStatus), ['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost']);
  });
});

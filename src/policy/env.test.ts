import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyOperatorEnv } from './env.js';
import type { Policy } from './types.js';

const policy = {
  version: '1.0',
  agent: {
    name: 'a',
    runtime: { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' },
    entrypoint: ['python3'],
    env: { MODE: 'author', LOG_LEVEL: 'info' },
    secretRefs: { OPENAI_API_KEY: 'openai' },
    isolation: null,
    code: '.',
  },
  network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
  fs: { read: [], write: [] },
  limits: { timeoutMs: 1000, memoryBytes: 1 << 27, cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 }, pids: 64 },
  syscalls: { deny: [] },
} as const satisfies Policy;

const refused = (flags: string[]): string => {
  const r = applyOperatorEnv(policy, flags);
  assert.equal(r.ok, false, `${flags.join(' ')} must be refused`);
  return r.ok ? '' : r.message;
};

describe('applyOperatorEnv', () => {
  it('adds and overrides plain values, keeps the rest, reports the names sorted', () => {
    const r = applyOperatorEnv(policy, ['MODE=operator', 'REGION=eu-west', 'EMPTY=', 'EQ=a=b']);
    assert.ok(r.ok);
    assert.deepEqual(r.policy.agent.env, { MODE: 'operator', LOG_LEVEL: 'info', REGION: 'eu-west', EMPTY: '', EQ: 'a=b' });
    assert.deepEqual(r.names, ['EMPTY', 'EQ', 'MODE', 'REGION']);
    assert.deepEqual(r.policy.agent.secretRefs, policy.agent.secretRefs);
    assert.deepEqual(policy.agent.env, { MODE: 'author', LOG_LEVEL: 'info' }, 'the input policy is not changed');
  });
  it('changes nothing without flags', () => {
    const r = applyOperatorEnv(policy, []);
    assert.ok(r.ok);
    assert.deepEqual(r.policy, policy);
    assert.deepEqual(r.names, []);
  });
  it('refuses malformed flags and bad names', () => {
    assert.match(refused(['MODE']), /expected NAME=VALUE/);
    assert.match(refused(['=x']), /not an environment variable name/);
    assert.match(refused(['1A=x']), /not an environment variable name/);
    assert.match(refused(['A-B=x']), /not an environment variable name/);
  });
  it('refuses the variables the gateway sets, in any case', () => {
    assert.match(refused(['HTTPS_PROXY=http://evil:3128']), /set by AEGIS/);
    assert.match(refused(['no_proxy=*']), /set by AEGIS/);
    assert.match(refused(['AEGIS_TOOLS_URL=http://attacker.example']), /set by AEGIS/);
  });
  it('refuses secret references and replacing a declared secret, without echoing the value', () => {
    const m = refused(['TOKEN=secret:prod-db']);
    assert.match(m, /plain values only/);
    assert.ok(!m.includes('prod-db'));
    const r = refused(['OPENAI_API_KEY=sk-live-123']);
    assert.match(r, /secret reference secret:openai/);
    assert.ok(!r.includes('sk-live-123'));
  });
  it('refuses a name given twice and values with a NUL byte or too long', () => {
    assert.match(refused(['A=1', 'A=2']), /given twice/);
    assert.match(refused(['A=x\0y']), /NUL byte/);
    assert.match(refused([`A=${'x'.repeat(70_000)}`]), /longer than/);
  });
});

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadPolicy } from './run-action.js';

describe('the compiled-policy cache of aegis run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-policy-cache-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, 'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["true"]\n');
  const state = join(dir, 'state');
  const cacheDir = join(state, 'policy-cache');
  const forge = (): void => {
    for (const f of readdirSync(cacheDir)) {
      const p = join(cacheDir, f);
      const e = JSON.parse(readFileSync(p, 'utf8')) as { policy: { network: { rules: unknown[] } } };
      e.policy.network.rules = [{ kind: 'exact', host: 'attacker.com', ports: { kind: 'any' }, source: 'attacker.com:*' }];
      writeFileSync(p, JSON.stringify(e));
    }
  };

  it('compiles, caches in a private directory, and serves the cached policy again', async () => {
    const first = await loadPolicy(file, state);
    assert.deepEqual(first.policy.network.rules, []);
    assert.equal(readdirSync(cacheDir).length, 1);
    assert.deepEqual((await loadPolicy(file, state)).policy, first.policy);
  });

  it('never trusts an entry in a directory others could write', async () => {
    forge();
    chmodSync(cacheDir, 0o777);
    assert.deepEqual((await loadPolicy(file, state)).policy.network.rules, [], 'recompiled, not the forged entry');
  });

  it('never trusts an entry file others could write', async () => {
    chmodSync(cacheDir, 0o700);
    forge();
    for (const f of readdirSync(cacheDir)) chmodSync(join(cacheDir, f), 0o666);
    assert.deepEqual((await loadPolicy(file, state)).policy.network.rules, []);
  });

  it('recompiles when the manifest changes', async () => {
    writeFileSync(file, 'version: "1.0"\nagent:\n  name: b\n  runtime: "python:3.11"\n  entrypoint: ["true"]\n');
    assert.equal((await loadPolicy(file, state)).policy.agent.name, 'b');
  });
});

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ManifestError } from '../manifest/errors.js';
import { MAX_MANIFEST_BYTES, formatIssue } from '../manifest/parse.js';
import { loadManifest } from './manifest-loader.js';

const AGENT = 'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["true"]\n';

// Moved from src/cli/run-action.test.ts with the cache itself (same cases, same assertions).
describe('the compiled-policy cache of the manifest loader', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-policy-cache-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, AGENT);
  const cacheDir = join(dir, 'state', 'policy-cache');
  const load = (f = file) => loadManifest(f, { cacheDir });
  const forge = (): void => {
    for (const f of readdirSync(cacheDir)) {
      const p = join(cacheDir, f);
      const e = JSON.parse(readFileSync(p, 'utf8')) as { policy: { network: { rules: unknown[] } } };
      e.policy.network.rules = [{ kind: 'exact', host: 'attacker.com', ports: { kind: 'any' }, source: 'attacker.com:*' }];
      writeFileSync(p, JSON.stringify(e));
    }
  };

  it('compiles, caches in a private directory, and serves the cached policy again', async () => {
    const first = await load();
    assert.deepEqual(first.policy.network.rules, []);
    assert.equal(first.source, 'compiled');
    assert.equal(readdirSync(cacheDir).length, 1);
    const second = await load();
    assert.deepEqual(second.policy, first.policy);
    assert.equal(second.source, 'cache');
  });

  it('really serves the entry on a hit: a well-formed entry changed in the trusted cache is what comes back', async () => {
    // The test before passes on a miss too (recompiling gives an equal policy). Changing the
    // entry in place (the directory and file stay private) tells a hit from a miss.
    forge();
    const hit = await load();
    assert.equal(hit.source, 'cache');
    assert.deepEqual(hit.policy.network.rules, [{ kind: 'exact', host: 'attacker.com', ports: { kind: 'any' }, source: 'attacker.com:*' }]);
  });

  it('never trusts an entry in a directory others could write', async () => {
    forge();
    chmodSync(cacheDir, 0o777);
    assert.deepEqual((await load()).policy.network.rules, [], 'recompiled, not the forged entry');
  });

  it('never trusts an entry file others could write', async () => {
    chmodSync(cacheDir, 0o700);
    forge();
    for (const f of readdirSync(cacheDir)) chmodSync(join(cacheDir, f), 0o666);
    assert.deepEqual((await load()).policy.network.rules, []);
  });

  it('recompiles when the manifest changes', async () => {
    writeFileSync(file, AGENT.replace('name: a', 'name: b'));
    assert.equal((await load()).policy.agent.name, 'b');
  });

  describe('when a private entry is not a well-formed Policy', () => {
    const DELETE = Symbol('delete');
    // [what, path of the field in the entry, new value or DELETE]
    const damage: Array<[string, string, unknown]> = [
      ['a rule of an unknown kind', 'policy.network.rules', [{ kind: 'regex', host: '.*', ports: { kind: 'any' }, source: 'x' }]],
      ['rules that are not a list', 'policy.network.rules', 'attacker.com'],
      ['a missing field', 'policy.limits.pids', DELETE],
      ['an extra field', 'policy.fs.exec', ['/']],
      ['a string where a number belongs', 'policy.limits.memoryBytes', '1e12'],
      ['another policy version', 'policy.version', '2.0'],
      ['another entry format', 'v', '1'],
      ['an entry stored under another key', 'key', '0'.repeat(64)],
      ['malformed warnings', 'warnings', ['file:1:1: hello']],
    ];
    const set = (entry: unknown, path: string, value: unknown): void => {
      const keys = path.split('.');
      const last = keys.pop() as string;
      let o = entry as Record<string, unknown>;
      for (const k of keys) o = o[k] as Record<string, unknown>;
      if (value === DELETE) delete o[last];
      else o[last] = value;
    };
    for (const [what, path, value] of damage) {
      it(`ignores it and compiles again: ${what}`, async () => {
        writeFileSync(file, AGENT.replace('name: a', 'name: c'));
        await load();
        for (const f of readdirSync(cacheDir)) {
          const p = join(cacheDir, f);
          const e = JSON.parse(readFileSync(p, 'utf8')) as { policy: { agent: { name: string } } };
          if (e.policy.agent.name !== 'c') continue;
          e.policy.agent.name = 'forged';
          set(e, path, value);
          writeFileSync(p, JSON.stringify(e), { mode: 0o600 });
        }
        const r = await load();
        assert.equal(r.source, 'compiled');
        assert.equal(r.policy.agent.name, 'c');
      });
    }
  });

  it('formats cached warnings with the path the manifest is loaded from now (regression: the path of the first load)', async () => {
    const text = AGENT.replace('entrypoint: ["true"]', 'entrypoint: ["true"]\npermissions:\n  network:\n    allow: ["*.github.io"]');
    const one = join(dir, 'one.yaml');
    const two = join(dir, 'two.yaml');
    writeFileSync(one, text);
    writeFileSync(two, text);
    const first = await load(one);
    assert.ok(first.warnings.length > 0, 'the manifest has a warning');
    const second = await load(two);
    assert.equal(second.source, 'cache');
    assert.deepEqual(
      second.warnings,
      first.warnings.map((w) => w.replace(one, two)),
    );
    assert.ok(second.warnings.every((w) => w.startsWith(`${two}:`)));
  });
});

describe('the manifest loader without a cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-loader-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("has one size limit, the parser's: a file of MAX_MANIFEST_BYTES loads, one byte more is manifest.invalid", async () => {
    const file = join(dir, 'big.yaml');
    writeFileSync(file, AGENT + '#'.repeat(MAX_MANIFEST_BYTES - AGENT.length - 1) + '\n');
    const r = await loadManifest(file);
    assert.equal(r.policy.agent.name, 'a');
    writeFileSync(file, AGENT + '#'.repeat(MAX_MANIFEST_BYTES - AGENT.length) + '\n');
    await assert.rejects(
      loadManifest(file),
      (e: unknown) => e instanceof ManifestError && e.code === 'manifest.invalid' && /larger than 64 KiB/u.test(e.message),
    );
  });

  it('reports a missing file or a directory as manifest.unreadable', async () => {
    for (const f of [join(dir, 'absent.yaml'), dir]) {
      await assert.rejects(loadManifest(f), (e: unknown) => e instanceof ManifestError && e.code === 'manifest.unreadable');
    }
  });

  it('reports every issue of an invalid manifest, formatted with the file', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'version: "1.0"\nagent:\n  name: a\n');
    await assert.rejects(
      loadManifest(file),
      (e: unknown) =>
        e instanceof ManifestError &&
        e.code === 'manifest.invalid' &&
        e.issues.length > 0 &&
        e.message === e.issues.map((i) => formatIssue(file, i)).join('\n'),
    );
  });
});

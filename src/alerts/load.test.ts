import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { AlertError } from './errors.js';
import { DEFAULT_PACK, loadRules } from './load.js';

const dir = mkdtempSync(join(tmpdir(), 'aegis-rules-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('loading rules', () => {
  it('a folder: every .yml and .yaml file, in name order; other files ignored', async () => {
    for (const [n, id] of [
      ['b.yaml', 'rule-b'],
      ['a.yml', 'rule-a'],
    ] as const) {
      writeFileSync(join(dir, n), `title: ${id}\nid: ${id}\nlevel: low\ndetection:\n  s: { action: x.y }\n  condition: s\n`);
    }
    writeFileSync(join(dir, 'notes.txt'), 'not a rule');
    assert.deepEqual(
      (await loadRules([dir])).map((r) => r.id),
      ['rule-a', 'rule-b'],
    );
  });
  it('a missing path is alerts.io', async () => {
    await assert.rejects(loadRules([join(dir, 'nope.yml')]), hasCode(AlertError, 'alerts.io'));
  });
  it('the cache: a real hit on the second load, and an entry that does not check out is ignored', async () => {
    const cache = join(dir, 'cache');
    const first = await loadRules([DEFAULT_PACK], { cacheDir: cache });
    const [entry] = readdirSync(cache);
    assert.ok(entry !== undefined && entry.endsWith('.json'));
    const path = join(cache, entry);
    // A well-formed entry with another title is what the next load returns: proof it was read.
    writeFileSync(path, readFileSync(path, 'utf8').replace('"title":"Policy denial"', '"title":"From the cache"'));
    assert.equal(
      (await loadRules([DEFAULT_PACK], { cacheDir: cache })).find((r) => r.id === 'aegis-policy-denial')?.title,
      'From the cache',
    );
    // A broken one is ignored (and the files parsed again).
    writeFileSync(path, '{"v":"1","key":"x","docs":[{"doc":{"id":1}}]}');
    assert.deepEqual(
      (await loadRules([DEFAULT_PACK], { cacheDir: cache })).map((r) => r.title),
      first.map((r) => r.title),
    );
    // An entry others could write is never read.
    writeFileSync(path, readFileSync(path, 'utf8').replace('"title":"Policy denial"', '"title":"Planted"'));
    chmodSync(path, 0o666);
    assert.equal(
      (await loadRules([DEFAULT_PACK], { cacheDir: cache })).find((r) => r.id === 'aegis-policy-denial')?.title,
      'Policy denial',
    );
  });
});

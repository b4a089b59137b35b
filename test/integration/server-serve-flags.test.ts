/**
 * `aegis serve` refuses a bad --output-retention before it opens anything (no data folder, no
 * audit log written).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AEGIS_BIN } from '../../src/test-support/repo.js';

describe('aegis serve --output-retention', () => {
  it('refuses a value that is not a duration, and leaves nothing behind', () => {
    const work = mkdtempSync(join(tmpdir(), 'aegis-serve-flags-'));
    try {
      const home = join(work, 'home');
      mkdirSync(home);
      for (const bad of ['5x', '0', '-1d', '24']) {
        const r = spawnSync(
          process.execPath,
          [AEGIS_BIN, 'serve', '--listen', '127.0.0.1:0', '--data', join(work, 'data'), '--output-retention', bad],
          { env: { ...process.env, AEGIS_HOME: home }, encoding: 'utf8', timeout: 60_000 },
        );
        assert.equal(r.status, 1, `${bad}: ${r.stderr}`);
        assert.match(r.stderr, /server\.config_invalid: --output-retention/u);
      }
      assert.equal(existsSync(join(work, 'data')), false);
      assert.deepEqual(readdirSync(home), []);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ownerHostId } from './engine.js';

describe('docker owner host id', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-owner-host-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is made once (0600, 32 hex digits) and read back the same', () => {
    const file = join(dir, 'a');
    const id = ownerHostId(file);
    assert.match(id ?? '', /^[0-9a-f]{32}$/);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8').trim(), id);
    assert.equal(ownerHostId(file), id);
  });

  it('keeps what another process wrote first; replaces a file that is not an id', () => {
    const kept = join(dir, 'b');
    writeFileSync(kept, `${'ab'.repeat(16)}\n`);
    assert.equal(ownerHostId(kept), 'ab'.repeat(16));
    const bad = join(dir, 'c');
    writeFileSync(bad, 'not an id\n');
    const id = ownerHostId(bad);
    assert.match(id ?? '', /^[0-9a-f]{32}$/);
    assert.equal(readFileSync(bad, 'utf8').trim(), id);
  });

  it('none configured, or none can be kept: undefined (objects are labelled without a host)', () => {
    assert.equal(ownerHostId(undefined), undefined);
    // (root ignores modes: a missing parent directory is what cannot be written here)
    assert.equal(ownerHostId(join(dir, 'missing', 'id')), undefined);
  });
});

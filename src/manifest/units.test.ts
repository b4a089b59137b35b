import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDuration, parseRate, parseSize } from './units.js';

describe('parseDuration', () => {
  it('reads s, m and h in any case', () => {
    assert.deepEqual(parseDuration('300s'), { ok: true, value: 300_000 });
    assert.deepEqual(parseDuration('5m'), { ok: true, value: 300_000 });
    assert.deepEqual(parseDuration('1H'), { ok: true, value: 3_600_000 });
    assert.deepEqual(parseDuration('1.5m'), { ok: true, value: 90_000 });
  });
  it('refuses a missing or unknown unit with a suggestion', () => {
    const r = parseDuration('300');
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.message : '', /try 300s/);
    assert.equal(parseDuration('3d').ok, false);
    assert.equal(parseDuration('-1s').ok, false);
    assert.equal(parseDuration('s').ok, false);
  });
});

describe('parseSize', () => {
  it('reads decimal and binary units case-insensitively', () => {
    assert.deepEqual(parseSize('512MB'), { ok: true, value: 512_000_000 });
    assert.deepEqual(parseSize('512mib'), { ok: true, value: 512 * 1024 * 1024 });
    assert.deepEqual(parseSize('1GiB'), { ok: true, value: 1024 ** 3 });
    assert.deepEqual(parseSize('64 KB'), { ok: true, value: 64_000 });
    assert.deepEqual(parseSize('1.5GB'), { ok: true, value: 1_500_000_000 });
  });
  it('says what is wrong and suggests a unit', () => {
    const r = parseSize('512XB');
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.message, '"512XB" is not a size (try 512MB)');
    assert.equal(parseSize('lots').ok, false);
    assert.equal(parseSize('').ok, false);
  });
});

describe('parseRate', () => {
  it('reads per-second, per-minute and per-hour rates', () => {
    assert.deepEqual(parseRate('20/s'), { ok: true, value: 20 });
    assert.deepEqual(parseRate('600/m'), { ok: true, value: 10 });
    assert.deepEqual(parseRate('3600/h'), { ok: true, value: 1 });
  });
  it('refuses anything else', () => {
    assert.equal(parseRate('20').ok, false);
    assert.equal(parseRate('20/d').ok, false);
    assert.equal(parseRate('x/s').ok, false);
  });
});

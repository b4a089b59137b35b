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

describe('unit hints (regression: "5min" was told to try 5s)', () => {
  const msg = (r: { ok: true; value: number } | { ok: false; message: string }): string => (r.ok ? '' : r.message);
  it('suggests the unit a duration spelling means', () => {
    assert.equal(msg(parseDuration('5min')), '"5min" is not a duration: unknown unit "min" (try 5m)');
    assert.match(msg(parseDuration('30sec')), /\(try 30s\)$/);
    assert.match(msg(parseDuration('2hours')), /\(try 2h\)$/);
    assert.match(msg(parseDuration('2d')), /\(try 48h\)$/);
    assert.match(msg(parseDuration('1500ms')), /\(try 2s: the smallest unit is s\)$/);
    assert.match(msg(parseDuration('300')), /\(try 300s\)$/);
  });
  it('suggests the size unit a short spelling means', () => {
    assert.equal(msg(parseSize('512M')), '"512M" is not a size (try 512MB)');
    assert.equal(msg(parseSize('1Gi')), '"1Gi" is not a size (try 1GiB)');
    assert.equal(msg(parseSize('2g')), '"2g" is not a size (try 2GB)');
  });
  it('suggests a rate unit for a spelled-out time unit', () => {
    assert.equal(msg(parseRate('20/sec')), '"20/sec": unknown rate unit "sec" (try 20/s)');
    assert.equal(msg(parseRate('20/fortnight')), '"20/fortnight": unknown rate unit "fortnight" (use /s, /m or /h)');
  });
});

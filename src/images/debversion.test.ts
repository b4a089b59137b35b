import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { compareDebVersions, parseDebVersion } from './debversion.js';

/** Pairs with what they test; expected results are checked against dpkg below, not hard-coded alone. */
const EDGE: Array<[string, string, number]> = [
  ['1.0', '1.0', 0],
  ['1.0', '1.0-0', 0], // an absent revision equals "0"
  ['1.0~rc1', '1.0', -1], // tilde sorts before the end
  ['1.0~rc1', '1.0~rc2', -1],
  ['1.0~~', '1.0~', -1],
  ['1.0~', '1.0', -1],
  ['1.0+dfsg', '1.0', 1],
  ['1.0a', '1.0', 1],
  ['1.0a', '1.0+', -1], // letters sort before non-letters
  ['1:1.0', '2.0', 1], // epoch first
  ['0:1.0', '1.0', 0],
  ['2:0.1', '1:9.9', 1],
  ['1.0-1', '1.0-1+deb12u1', -1],
  ['1.0-1~deb12u1', '1.0-1', -1],
  ['3.0.11-1~deb12u2', '3.0.11-1~deb12u3', -1],
  ['3.0.11-1~deb12u2', '3.0.9-1', 1], // numeric, not lexical
  ['1.00', '1.0', 0], // leading zeros
  ['1.001', '1.1', 0],
  ['1.2-3-4', '1.2-3-5', -1], // split at the last hyphen
  ['10', '9', 1],
  ['1.0.0', '1.0', 1],
  ['7.88.1-10+deb12u5', '7.88.1-10+deb12u12', -1],
  ['2.36-9+deb12u4', '2.36-9+deb12u10', -1],
  ['1:2.38.1-5+deb12u1', '2.38.1-5+deb12u3', 1],
  ['0.9~beta1', '0.9~alpha1', 1],
  ['1.0-1.1', '1.0-1a', 1], // '.' is a non-letter: after 'a'
  ['5.2.15-2+b2', '5.2.15-2', 1],
  ['4.4.0~git20200101', '4.4.0', -1],
  ['12345678901234567890', '12345678901234567891', -1], // beyond 2^53
];

/** dpkg's answer for each pair (one shell for all, reading pairs on stdin). */
function dpkgCompare(pairs: ReadonlyArray<readonly [string, string]>): number[] {
  const script =
    'while read a b; do if dpkg --compare-versions "$a" lt "$b"; then echo -1; elif dpkg --compare-versions "$a" eq "$b"; then echo 0; else echo 1; fi; done';
  const r = spawnSync('/bin/sh', ['-c', script], { input: pairs.map(([a, b]) => `${a} ${b}\n`).join(''), encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n').map(Number);
}

/** Deterministic pseudo-random valid versions (xorshift32, fixed seed). */
function randomVersions(n: number, seed: number): string[] {
  let s = seed >>> 0;
  const rnd = (k: number) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % k;
  };
  const chars = ['0', '1', '2', '9', '10', '00', 'a', 'b', 'z', 'A', '.', '+', '~', '~~'];
  const part = (len: number) => Array.from({ length: len }, () => chars[rnd(chars.length)]).join('');
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const epoch = rnd(4) === 0 ? `${rnd(3)}:` : '';
    const up = `${rnd(10)}${part(rnd(5))}`;
    const rev = rnd(2) === 0 ? `-${rnd(10)}${part(rnd(4))}` : '';
    out.push(`${epoch}${up}${rev}`);
  }
  return out;
}

describe('Debian version comparison (policy 5.6.12)', () => {
  it('edge cases: epochs, tildes, letters before non-letters, revisions, leading zeros', () => {
    for (const [a, b, want] of EDGE) {
      assert.equal(compareDebVersions(a, b), want, `${a} vs ${b}`);
      assert.equal(compareDebVersions(b, a), want === 0 ? 0 : -want, `${b} vs ${a}`);
    }
  });

  it('agrees with dpkg --compare-versions on the edge cases and 600 generated pairs', () => {
    const vs = randomVersions(1200, 0x5eed1234);
    const pairs: Array<[string, string]> = EDGE.map(([a, b]) => [a, b]);
    for (let i = 0; i < vs.length; i += 2) pairs.push([vs[i]!, vs[i + 1]!]);
    // Prefix-sharing pairs, where the subtle rules decide.
    for (let i = 0; i < 100; i++) pairs.push([vs[i]!, `${vs[i]!}~`], [vs[i]!, `${vs[i]!}.0`], [`${vs[i]!}a`, `${vs[i]!}+`]);
    const want = dpkgCompare(pairs);
    assert.equal(want.length, pairs.length);
    const diffs = pairs.filter(([a, b], i) => compareDebVersions(a, b) !== want[i]);
    assert.deepEqual(diffs, []);
  });

  it('refuses what is not a version (coded by the caller, never a wrong answer)', () => {
    for (const bad of ['', 'a:1.0', '1.0-', '1.0-rev/x', ':1', '1.0 2']) assert.equal(parseDebVersion(bad), null, bad);
    assert.throws(() => compareDebVersions('1.0', 'x:y'), RangeError);
  });
});

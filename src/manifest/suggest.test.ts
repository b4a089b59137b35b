import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { editDistance, suggestKey } from './suggest.js';

const PERMISSIONS = ['network', 'fs', 'execution_time', 'memory', 'cpu_quota', 'processes', 'syscalls'];
const AGENT = ['name', 'runtime', 'entrypoint', 'env', 'code', 'isolation'];
const NETWORK = ['allow', 'rate_limit', 'byte_quota'];

describe('editDistance', () => {
  it('counts insertions, deletions, substitutions and adjacent swaps', () => {
    assert.equal(editDistance('memory', 'memory'), 0);
    assert.equal(editDistance('memroy', 'memory'), 1);
    assert.equal(editDistance('enviroment', 'environment'), 1);
    assert.equal(editDistance('kitten', 'sitting'), 3);
  });
  it('stops counting past the cap', () => {
    assert.equal(editDistance('a', 'abcdefgh', 3), 4);
  });
});

describe('suggestKey', () => {
  it("maps other tools' words to ours, only where that key exists", () => {
    assert.equal(suggestKey('timeout', PERMISSIONS), 'execution_time');
    assert.equal(suggestKey('timeout', AGENT), undefined);
    assert.equal(suggestKey('ratelimit', NETWORK), 'rate_limit');
    assert.equal(suggestKey('rate-limit', NETWORK), 'rate_limit');
    assert.equal(suggestKey('environment', AGENT), 'env');
  });
  it('finds typos of keys and of aliases', () => {
    assert.equal(suggestKey('enviroment', AGENT), 'env');
    assert.equal(suggestKey('memroy', PERMISSIONS), 'memory');
    assert.equal(suggestKey('entrypiont', AGENT), 'entrypoint');
    assert.equal(suggestKey('Memory', PERMISSIONS), 'memory');
  });
  it('suggests nothing for unrelated or oversized keys', () => {
    assert.equal(suggestKey('bogus', PERMISSIONS), undefined);
    assert.equal(suggestKey('x'.repeat(10_000), PERMISSIONS), undefined);
    assert.equal(suggestKey('', PERMISSIONS), undefined);
  });
});

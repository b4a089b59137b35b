import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { poolTag, type PoolKey } from './pool.js';

const KEY: PoolKey = { tcpPorts: [], anyTcpPort: false, tools: false };

describe('poolTag', () => {
  it('is 16 hex digits, the same for the same key and subnet', () => {
    assert.match(poolTag('10.201.0.0/16', KEY), /^[0-9a-f]{16}$/);
    assert.equal(poolTag('10.201.0.0/16', KEY), poolTag('10.201.0.0/16', { ...KEY }));
  });
  it('differs with anything the in-namespace ruleset depends on, and with the subnet', () => {
    const tags = [
      poolTag('10.201.0.0/16', KEY),
      poolTag('10.201.0.0/16', { ...KEY, tcpPorts: [22] }),
      poolTag('10.201.0.0/16', { ...KEY, tcpPorts: [22, 5432] }),
      poolTag('10.201.0.0/16', { ...KEY, anyTcpPort: true }),
      poolTag('10.201.0.0/16', { ...KEY, tools: true }),
      poolTag('10.202.0.0/16', KEY),
    ];
    assert.equal(new Set(tags).size, tags.length);
  });
});

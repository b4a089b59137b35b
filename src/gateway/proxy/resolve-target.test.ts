import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAllowEntry } from '../../policy/host.js';
import { compileEgress } from '../../policy/net.js';
import type { NetRule } from '../../policy/types.js';
import type { Resolution, Resolver } from '../dns/upstream.js';
import { Session } from '../session.js';
import { resolveTarget } from './upstream.js';

class Zone implements Resolver {
  asked: string[] = [];
  constructor(private readonly zone: Record<string, string[]>) {}
  resolve(name: string): Promise<Resolution> {
    this.asked.push(name);
    const addresses = this.zone[name] ?? [];
    return Promise.resolve({ rcode: addresses.length ? 'NOERROR' : 'NXDOMAIN', addresses, chain: [name], ttl: 30 });
  }
}

function session(resolver: Resolver, allow: string[]): Session {
  const rules: NetRule[] = allow.map((e) => {
    const r = parseAllowEntry(e);
    assert.ok(r.ok);
    return r.rule;
  });
  const rate = { perSecond: 100, burst: 100 };
  return new Session({
    matcher: compileEgress({ rules, rateLimit: rate, byteQuota: null }),
    audit: { append: () => undefined },
    actor: { execution: 't' },
    resolver,
    rateLimit: rate,
    byteQuota: null,
    clock: () => 0,
  });
}

describe('resolveTarget (where the gateway connects)', () => {
  it('connects to an address in any spelling as that address, without asking DNS', async () => {
    const zone = new Zone({});
    const s = session(zone, ['10.1.2.0/24:5432']);
    for (const spelling of ['10.1.2.7', '167838215', '0xa.1.519', '[::ffff:10.1.2.7]']) {
      assert.deepEqual(await resolveTarget(s, spelling), { ok: true, address: '10.1.2.7' }, spelling);
    }
    assert.deepEqual(zone.asked, []);
  });
  it('resolves names itself and refuses rebinding into special ranges', async () => {
    const zone = new Zone({ 'api.openai.com': ['198.51.100.10'], 'rebind.example.com': ['198.51.100.9', '127.0.0.1'] });
    const s = session(zone, ['api.openai.com', 'rebind.example.com']);
    assert.deepEqual(await resolveTarget(s, 'API.OpenAI.com.'), { ok: true, address: '198.51.100.10' });
    assert.equal(zone.asked[0], 'api.openai.com', 'the normalized name is resolved');
    const r = await resolveTarget(s, 'rebind.example.com');
    assert.equal(r.ok, false);
  });
  it('refuses a host it cannot classify', async () => {
    const r = await resolveTarget(session(new Zone({}), ['api.openai.com']), 'a/b');
    assert.equal(r.ok, false);
  });
});

import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { describe, it } from 'node:test';
import * as packet from 'dns-packet';
import { compileEgress } from '../../policy/net.js';
import { parseAllowEntry } from '../../policy/host.js';
import type { AuditEventInput } from '../../audit/event.js';
import type { NetRule } from '../../policy/types.js';
import { GatewayError } from '../errors.js';
import { Session } from '../session.js';
import { answerQuestion, startDnsServer } from './server.js';
import { encodeFormErr, encodeResponse, parseQuery, type Question } from './message.js';
import { followChain, type Resolution, type Resolver } from './upstream.js';

const rules = (...entries: string[]): NetRule[] =>
  entries.map((e) => {
    const r = parseAllowEntry(e);
    assert.ok(r.ok);
    return r.rule;
  });

/** Upstream stand-in: a fixed zone, counting the questions it is asked. */
class ZoneResolver implements Resolver {
  asked: string[] = [];
  constructor(private readonly zone: Record<string, Resolution>) {}
  resolve(name: string): Promise<Resolution> {
    this.asked.push(name);
    const r = this.zone[name];
    return r ? Promise.resolve(r) : Promise.resolve({ rcode: 'NXDOMAIN', addresses: [], chain: [name], ttl: 30 });
  }
}

function session(resolver: Resolver, allow: string[], rate = { perSecond: 100, burst: 100 }) {
  const events: AuditEventInput[] = [];
  const s = new Session({
    matcher: compileEgress({ rules: rules(...allow), rateLimit: rate, byteQuota: null }),
    audit: { append: (e) => void events.push(e) },
    actor: { execution: 't' },
    resolver,
    rateLimit: rate,
    byteQuota: null,
    clock: () => 0,
  });
  return s;
}

const q = (name: string, type = 'A'): Question => ({ id: 7, name, type, recursionDesired: true });

describe('answerQuestion (deny first, then upstream, then rebinding guard)', () => {
  const zone = new ZoneResolver({
    'api.openai.com': { rcode: 'NOERROR', addresses: ['198.51.100.10'], chain: ['api.openai.com'], ttl: 300 },
    'rebind.allowed.test': { rcode: 'NOERROR', addresses: ['198.51.100.9', '127.0.0.1'], chain: ['rebind.allowed.test'], ttl: 5 },
  });
  const s = session(zone, ['api.openai.com', 'rebind.allowed.test', 'gone.allowed.test']);

  it('answers an allowed name with its addresses and a capped TTL', async () => {
    const o = await answerQuestion(s, q('api.openai.com'));
    assert.deepEqual(o, {
      verdict: { decision: 'allow', reason: 'net.allowed.exact' },
      rcode: 'NOERROR',
      answers: [{ type: 'A', address: '198.51.100.10', ttl: 60 }],
    });
    assert.equal(s.wasResolved('API.openai.com.'), true);
  });
  it('refuses a denied name without asking upstream (no tunnelling through the resolver)', async () => {
    zone.asked = [];
    const o = await answerQuestion(s, q('c2VjcmV0.attacker.com'));
    assert.equal(o.rcode, 'REFUSED');
    assert.equal(o.verdict.reason, 'net.denied.not_in_allowlist');
    assert.deepEqual(zone.asked, []);
  });
  it('asks upstream only for the canonical name the policy decided on, never the raw spelling', async () => {
    for (const spelling of ['a\u00adpi.openai.com', 'api\ufe0f.openai.com', '\uff21\uff30\uff29.openai.com', 'API.OpenAI.com.']) {
      zone.asked = [];
      const o = await answerQuestion(s, q(spelling));
      assert.equal(o.rcode, 'NOERROR', spelling);
      assert.deepEqual(zone.asked, ['api.openai.com'], spelling);
    }
  });
  it('refuses TXT even for an allowed name', async () => {
    const o = await answerQuestion(s, q('api.openai.com', 'TXT'));
    assert.deepEqual([o.rcode, o.verdict.reason], ['REFUSED', 'gateway.dns_type_refused']);
  });
  it('gives AAAA an empty NOERROR (sandboxes have no IPv6)', async () => {
    const o = await answerQuestion(s, q('api.openai.com', 'AAAA'));
    assert.deepEqual([o.rcode, o.answers], ['NOERROR', []]);
  });
  it('refuses the whole answer when one address is loopback (DNS rebinding)', async () => {
    const o = await answerQuestion(s, q('rebind.allowed.test'));
    assert.deepEqual([o.rcode, o.verdict.reason], ['REFUSED', 'net.denied.special_range']);
    assert.equal(s.wasResolved('rebind.allowed.test'), false);
  });
  it('passes NXDOMAIN through for an allowed name', async () => {
    assert.equal((await answerQuestion(s, q('gone.allowed.test'))).rcode, 'NXDOMAIN');
  });
  it('answers SERVFAIL when the upstream fails', async () => {
    const failing = session({ resolve: () => Promise.reject(new GatewayError('gateway.dns_upstream', 'timeout')) }, ['api.openai.com']);
    const o = await answerQuestion(failing, q('api.openai.com'));
    assert.deepEqual([o.rcode, o.verdict.reason], ['SERVFAIL', 'gateway.upstream_failed']);
  });
  it('refuses past the rate limit', async () => {
    const tight = session(zone, ['api.openai.com'], { perSecond: 1, burst: 1 });
    const rcodes: string[] = [];
    for (let i = 0; i < 7; i++) rcodes.push((await answerQuestion(tight, q('api.openai.com'))).rcode);
    assert.deepEqual(rcodes.slice(0, 5), ['NOERROR', 'NOERROR', 'NOERROR', 'NOERROR', 'NOERROR']); // DNS bucket is 5x
    assert.equal(rcodes[6], 'REFUSED');
  });
});

describe('followChain', () => {
  const a = (name: string, type: string, data: string, ttl = 100) => ({ name, type, data, ttl, class: 'IN' }) as packet.Answer;
  it('follows CNAMEs to the final addresses with the smallest TTL', () => {
    const r = followChain('storage.googleapis.com', 'A', [
      a('storage.googleapis.com', 'CNAME', 'x.l.google.com', 50),
      a('x.l.google.com', 'A', '198.51.100.11', 200),
      a('other.com', 'A', '198.51.100.99'),
    ]);
    assert.deepEqual(r, { chain: ['storage.googleapis.com', 'x.l.google.com'], addresses: ['198.51.100.11'], ttl: 50 });
  });
  it('ignores address records of names off the chain (answer injection)', () => {
    const r = followChain('a.com', 'A', [a('a.com', 'CNAME', 'b.com'), a('attacker.com', 'A', '198.51.100.66')]);
    assert.deepEqual(r.addresses, []);
  });
  it('refuses CNAME loops', () => {
    assert.throws(
      () => followChain('a.com', 'A', [a('a.com', 'CNAME', 'b.com'), a('b.com', 'CNAME', 'a.com')]),
      (e: unknown) => e instanceof GatewayError && e.code === 'gateway.dns_upstream',
    );
  });
});

describe('DNS messages', () => {
  const query = (extra: Partial<packet.Packet> = {}) =>
    packet.encode({
      type: 'query',
      id: 4242,
      flags: packet.RECURSION_DESIRED,
      questions: [{ type: 'A', name: 'api.openai.com', class: 'IN' }],
      ...extra,
    });
  it('parses a query and encodes a flattened answer', () => {
    const qq = parseQuery(query());
    assert.deepEqual(qq, { id: 4242, name: 'api.openai.com', type: 'A', recursionDesired: true });
    const res = packet.decode(encodeResponse(qq, 'NOERROR', [{ type: 'A', address: '198.51.100.10', ttl: 60 }]));
    assert.equal(res.id, 4242);
    assert.deepEqual(
      res.answers?.map((x) => [x.name, x.type, (x as { data: string }).data]),
      [['api.openai.com', 'A', '198.51.100.10']],
    );
    assert.equal((res as { rcode?: string }).rcode, 'NOERROR');
    assert.equal((packet.decode(encodeResponse(qq, 'REFUSED')) as { rcode?: string }).rcode, 'REFUSED');
  });
  describe('when the query is hostile', () => {
    const malformed = (b: Buffer): string | null => {
      try {
        parseQuery(b);
        return null;
      } catch (err) {
        return err instanceof GatewayError ? err.code : 'other';
      }
    };
    it('short, truncated, oversized, response-typed, multi-question and garbage messages are dns_malformed', () => {
      assert.equal(malformed(Buffer.alloc(5)), 'gateway.dns_malformed');
      assert.equal(malformed(query().subarray(0, 20)), 'gateway.dns_malformed');
      assert.equal(malformed(Buffer.alloc(5000)), 'gateway.dns_malformed');
      assert.equal(
        malformed(packet.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'a.com' }] })),
        'gateway.dns_malformed',
      );
      assert.equal(
        malformed(
          query({
            questions: [
              { type: 'A', name: 'a.com' },
              { type: 'A', name: 'b.com' },
            ],
          }),
        ),
        'gateway.dns_malformed',
      );
      const loop = Buffer.from(query());
      loop.writeUInt16BE(0xc00c, 12); // compression pointer to itself
      assert.equal(malformed(loop), 'gateway.dns_malformed');
    });
    it('a FORMERR keeps the id', () => {
      const f = encodeFormErr(0xbeef);
      assert.equal(f.readUInt16BE(0), 0xbeef);
      assert.equal(f.readUInt16BE(2) & 0x0f, 1);
    });
  });
});

describe('when the DNS server closes with a question in flight', { timeout: 10_000 }, () => {
  /** A session whose upstream answers only when the test says so, with its events and any uncaught error. */
  async function slowServer(closeGraceMs: number) {
    let release: (r: Resolution) => void = () => undefined;
    let onAsked: () => void = () => undefined;
    const asked = new Promise<void>((r) => (onAsked = r));
    const resolver: Resolver = {
      resolve: () => {
        onAsked();
        return new Promise<Resolution>((r) => (release = r));
      },
    };
    const events: AuditEventInput[] = [];
    const rate = { perSecond: 100, burst: 100 };
    const s = new Session({
      matcher: compileEgress({ rules: rules('api.openai.com'), rateLimit: rate, byteQuota: null }),
      audit: { append: (e) => void events.push(e) },
      actor: { execution: 't' },
      resolver,
      rateLimit: rate,
      byteQuota: null,
    });
    const dns = await startDnsServer(s, '127.0.0.1', 0, { closeGraceMs });
    const client = createSocket('udp4');
    const replies: packet.Packet[] = [];
    client.on('message', (m) => replies.push(packet.decode(m)));
    client.send(
      packet.encode({
        type: 'query',
        id: 99,
        flags: packet.RECURSION_DESIRED,
        questions: [{ type: 'A', name: 'api.openai.com', class: 'IN' }],
      }),
      dns.port,
      '127.0.0.1',
    );
    await asked;
    return { dns, client, replies, events, release: (r: Resolution) => release(r) };
  }
  const answer: Resolution = { rcode: 'NOERROR', addresses: ['198.51.100.10'], chain: ['api.openai.com'], ttl: 60 };
  const uncaught = async (body: () => Promise<void>): Promise<unknown[]> => {
    const errors: unknown[] = [];
    const onError = (e: unknown): void => void errors.push(e);
    process.on('uncaughtException', onError);
    process.on('unhandledRejection', onError);
    try {
      await body();
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off('uncaughtException', onError);
      process.off('unhandledRejection', onError);
    }
    return errors;
  };

  it('regression: a late upstream answer is dropped, never sent on the closed socket (ERR_SOCKET_DGRAM_NOT_RUNNING), and the question is recorded', async () => {
    let events: AuditEventInput[] = [];
    let replies: packet.Packet[] = [];
    const errors = await uncaught(async () => {
      const t = await slowServer(20);
      ({ events, replies } = t);
      await t.dns.close();
      const closed = events.filter((e) => e.action === 'net.dns');
      assert.deepEqual(
        closed.map((e) => [e.decision, e.reason, e.payload.name, e.payload.type, e.payload.transport, e.payload.rcode]),
        [['deny', 'gateway.closed', 'api.openai.com', 'A', 'udp', 'none']],
        'the question is in the log when close() returns',
      );
      t.release(answer); // the upstream answers after close
      await new Promise((r) => setTimeout(r, 20));
      t.client.close();
    });
    assert.deepEqual(errors, []);
    assert.equal(events.filter((e) => e.action === 'net.dns').length, 1, 'no second event for the late answer');
    assert.deepEqual(replies, []);
  });

  it('an answer that comes within the grace is still sent and recorded', async () => {
    const t = await slowServer(5_000);
    const closing = t.dns.close();
    setTimeout(() => t.release(answer), 20);
    await closing;
    const deadline = Date.now() + 2000;
    while (t.replies.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    t.client.close();
    assert.equal(t.replies.length, 1);
    assert.equal((t.replies[0] as { rcode?: string }).rcode, 'NOERROR');
    assert.deepEqual(
      t.events.filter((e) => e.action === 'net.dns').map((e) => [e.decision, e.payload.rcode, e.payload.answers]),
      [['allow', 'NOERROR', ['198.51.100.10']]],
    );
  });
});

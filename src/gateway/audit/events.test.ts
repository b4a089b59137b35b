import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bounded, connectEvent, dnsEvent, gatewayDeny, httpRequestEvent, verdictOf } from './events.js';
import { JsonlFileSink } from './jsonl-sink.js';

const actor = { agent: 'a', execution: 'e1' };

describe('audit event builders', () => {
  it('a policy denial carries the policy reason and its detail', () => {
    const v = verdictOf({ allow: false, reason: 'net.denied.not_in_allowlist', detail: 'attacker.com is not allowed' });
    const e = dnsEvent(actor, v, { name: 'attacker.com', type: 'TXT', transport: 'udp', rcode: 'REFUSED', answers: [] });
    assert.deepEqual(e, {
      actor,
      action: 'net.dns',
      decision: 'deny',
      reason: 'net.denied.not_in_allowlist',
      payload: {
        name: 'attacker.com',
        type: 'TXT',
        transport: 'udp',
        rcode: 'REFUSED',
        answers: [],
        detail: 'attacker.com is not allowed',
      },
    });
  });
  it('an allowed connection records bytes and duration, no detail', () => {
    const e = connectEvent(actor, verdictOf({ allow: true, reason: 'net.allowed.exact', rule: 'api.openai.com' }), {
      mode: 'connect',
      host: 'api.openai.com',
      port: 443,
      sni: 'api.openai.com',
      upstream: '198.51.100.10',
      bytesSent: 10,
      bytesReceived: 20,
      durationMs: 3,
    });
    assert.equal(e.decision, 'allow');
    assert.deepEqual(e.payload, {
      mode: 'connect',
      host: 'api.openai.com',
      port: 443,
      sni: 'api.openai.com',
      upstream: '198.51.100.10',
      bytesSent: 10,
      bytesReceived: 20,
      durationMs: 3,
    });
  });
  it('gateway reasons and HTTP requests', () => {
    const e = httpRequestEvent(actor, gatewayDeny('gateway.rate_limited', 'too fast'), {
      mode: 'forward',
      method: 'GET',
      url: 'http://x/',
      status: 429,
      bytesSent: 0,
      bytesReceived: 0,
      durationMs: 0,
    });
    assert.deepEqual([e.action, e.reason, e.payload.status, e.payload.detail], ['http.request', 'gateway.rate_limited', 429, 'too fast']);
  });
  it('bounded() cuts agent-controlled strings and says how much was cut', () => {
    assert.equal(bounded('abc', 5), 'abc');
    assert.equal(bounded('a'.repeat(10), 4), 'aaaa…(6 more)');
  });
});

describe('JsonlFileSink', () => {
  it('writes one JSON object per line with v and time, in order', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'aegis-jsonl-')), 'audit.jsonl');
    const sink = new JsonlFileSink(path);
    sink.append(
      dnsEvent(actor, gatewayDeny('gateway.malformed', 'x'), { name: '', type: '', transport: 'udp', rcode: 'FORMERR', answers: [] }),
    );
    sink.append({ actor, action: 'net.connect', decision: 'allow', payload: {} });
    sink.close();
    const lines = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.deepEqual(
      lines.map((l) => [l.v, l.action, typeof l.time]),
      [
        [1, 'net.dns', 'string'],
        [1, 'net.connect', 'string'],
      ],
    );
  });
});

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import type { AuditEventInput } from '../../audit/event.js';
import { parseAllowEntry } from '../../policy/host.js';
import { compileEgress } from '../../policy/net.js';
import type { NetRule } from '../../policy/types.js';
import type { Resolution, Resolver } from '../dns/upstream.js';
import { Session } from '../session.js';
import { startHttpListener } from './http.js';

const noDns: Resolver = { resolve: (): Promise<Resolution> => Promise.reject(new Error('no DNS in this test')) };

describe('the HTTP forward proxy, when the upstream is hostile', () => {
  // An upstream on loopback that answers with a status Node cannot relay.
  const upstream = createServer((sock) => {
    sock.once('data', () => sock.end('HTTP/1.1 099 Nope\r\nContent-Length: 0\r\n\r\n'));
  });
  after(() => upstream.close());

  it('answers the agent 502 and stays up (regression: status 099 threw outside any handler)', async () => {
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const port = (upstream.address() as AddressInfo).port;
    const r = parseAllowEntry(`127.0.0.0/8:${port}`);
    assert.ok(r.ok);
    const rules: NetRule[] = [r.rule];
    const events: AuditEventInput[] = [];
    const rate = { perSecond: 100, burst: 100 };
    const session = new Session({
      matcher: compileEgress({ rules, rateLimit: rate, byteQuota: null }),
      audit: { append: (e) => void events.push(e) },
      actor: { execution: 't' },
      resolver: noDns,
      rateLimit: rate,
      byteQuota: null,
    });
    const proxy = await startHttpListener(session, 'explicit', '127.0.0.1');
    const proxyPort = (proxy.address() as AddressInfo).port;
    try {
      for (let i = 0; i < 2; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port: proxyPort, method: 'GET', path: `http://127.0.0.1:${port}/x` }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
          req.end();
        });
        assert.equal(status, 502);
      }
      assert.ok(events.some((e) => e.action === 'http.request' && e.decision === 'error' && e.reason === 'gateway.upstream_failed'));
    } finally {
      proxy.close();
    }
  });
});

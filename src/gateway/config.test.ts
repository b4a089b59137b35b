import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GatewayError } from './errors.js';
import { firstNameserver, parseGatewayConfig } from './config.js';

const HOST_RESOLV = '# generated\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\n';

describe('parseGatewayConfig', () => {
  it('defaults to the host resolver, 10.201.0.0/16 and /run/aegis', () => {
    assert.deepEqual(parseGatewayConfig({}, null, HOST_RESOLV), {
      upstreamDns: { host: '192.0.2.53', port: 53 },
      sandboxSubnet: '10.201.0.0/16',
      stateDir: '/run/aegis',
    });
  });
  it('environment overrides the config file', () => {
    const c = parseGatewayConfig(
      { AEGIS_UPSTREAM_DNS: '198.51.100.53:5353' },
      { upstreamDns: '198.51.100.1:53', sandboxSubnet: '10.99.0.0/20' },
      HOST_RESOLV,
    );
    assert.deepEqual(c.upstreamDns, { host: '198.51.100.53', port: 5353 });
    assert.equal(c.sandboxSubnet, '10.99.0.0/20');
  });
  describe('when the configuration is invalid', () => {
    const codeOf = (fn: () => unknown) => {
      try {
        fn();
        return null;
      } catch (e) {
        return e instanceof GatewayError ? e.code : 'other';
      }
    };
    it('bad resolver, bad subnet, unknown keys, relative state dir: config_invalid with the path', () => {
      assert.equal(
        codeOf(() => parseGatewayConfig({ AEGIS_UPSTREAM_DNS: 'dns.example:53' }, null, HOST_RESOLV)),
        'gateway.config_invalid',
      );
      assert.equal(
        codeOf(() => parseGatewayConfig({ AEGIS_SANDBOX_SUBNET: '10.0.0.0/8' }, null, HOST_RESOLV)),
        'gateway.config_invalid',
      );
      assert.equal(
        codeOf(() => parseGatewayConfig({}, { upstreamDNS: '1.2.3.4:53' }, HOST_RESOLV)),
        'gateway.config_invalid',
      );
      assert.equal(
        codeOf(() => parseGatewayConfig({ AEGIS_STATE_DIR: 'run' }, null, HOST_RESOLV)),
        'gateway.config_invalid',
      );
    });
    it('a resolver inside the sandbox subnet is config_invalid (the gateway could not reach it)', () => {
      assert.equal(
        codeOf(() => parseGatewayConfig({ AEGIS_UPSTREAM_DNS: '10.201.3.9:53' }, null, HOST_RESOLV)),
        'gateway.config_invalid',
      );
      assert.equal(
        codeOf(() => parseGatewayConfig({}, { sandboxSubnet: '192.0.2.0/24' }, HOST_RESOLV)),
        'gateway.config_invalid',
      );
    });
    it('an extraCaFile key is refused with the reason (the setting is upstreamCaFile)', () => {
      assert.equal(
        codeOf(() => parseGatewayConfig({}, { extraCaFile: '/etc/ssl/extra.pem' }, HOST_RESOLV)),
        'gateway.config_invalid',
      );
      assert.throws(() => parseGatewayConfig({}, { extraCaFile: '/x.pem' }, HOST_RESOLV), /not a gateway setting; upstreamCaFile/);
      // the variable is other components' business: ignored here, not an error
      assert.equal(parseGatewayConfig({ AEGIS_EXTRA_CA_FILE: '/x.pem' }, null, HOST_RESOLV).upstreamDns.host, '192.0.2.53');
    });
    it('upstreamCaFile: from the file, overridden by AEGIS_UPSTREAM_CA_FILE, absolute only', () => {
      assert.equal(parseGatewayConfig({}, null, HOST_RESOLV).upstreamCaFile, undefined);
      assert.equal(parseGatewayConfig({}, { upstreamCaFile: '/etc/aegis/up.pem' }, HOST_RESOLV).upstreamCaFile, '/etc/aegis/up.pem');
      assert.equal(
        parseGatewayConfig({ AEGIS_UPSTREAM_CA_FILE: '/run/ca.pem' }, { upstreamCaFile: '/etc/aegis/up.pem' }, HOST_RESOLV).upstreamCaFile,
        '/run/ca.pem',
      );
      assert.equal(
        codeOf(() => parseGatewayConfig({ AEGIS_UPSTREAM_CA_FILE: 'rel.pem' }, null, HOST_RESOLV)),
        'gateway.config_invalid',
      );
    });
    it('netnsPool: absent unless set (no pool), from the file, overridden by AEGIS_NETNS_POOL, 0..16 only', () => {
      assert.equal(parseGatewayConfig({}, null, HOST_RESOLV).netnsPool, undefined);
      assert.equal(parseGatewayConfig({ AEGIS_NETNS_POOL: '0' }, null, HOST_RESOLV).netnsPool, undefined);
      assert.equal(parseGatewayConfig({}, { netnsPool: 3 }, HOST_RESOLV).netnsPool, 3);
      assert.equal(parseGatewayConfig({ AEGIS_NETNS_POOL: '2' }, { netnsPool: 3 }, HOST_RESOLV).netnsPool, 2);
      for (const bad of ['17', '-1', '1.5', 'two', '0x2'])
        assert.equal(
          codeOf(() => parseGatewayConfig({ AEGIS_NETNS_POOL: bad }, null, HOST_RESOLV)),
          'gateway.config_invalid',
          bad,
        );
    });
    it('no resolver anywhere is config_invalid', () => {
      assert.equal(
        codeOf(() => parseGatewayConfig({}, null, 'nameserver ::1\n')),
        'gateway.config_invalid',
      );
    });
  });
  it('firstNameserver skips IPv6 entries', () => {
    assert.equal(firstNameserver(HOST_RESOLV), '192.0.2.53');
  });
});

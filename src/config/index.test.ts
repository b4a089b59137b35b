import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import {
  ConfigError,
  DEFAULT_IMAGES_DIR,
  DEFAULT_MONITOR_IDLE_MS,
  DEFAULT_ROTATION_OVERLAP_MS,
  parseConfig,
  parseServerUrl,
  type HostFacts,
} from './index.js';

const host: HostFacts = { homedir: '/home/op', operator: { uid: 1000, name: 'op' }, isDirectory: (p) => p === '/srv/aegis-home' };

describe('parseConfig', () => {
  it('defaults: ~/.aegis, the host-wide image store, no audit or gateway settings', () => {
    assert.deepEqual(parseConfig({ PATH: '/bin', USER: 'someone-else' }, host), {
      home: '/home/op/.aegis',
      imagesDir: DEFAULT_IMAGES_DIR,
      operator: { uid: 1000, name: 'op' },
      auditEnv: {},
      gatewayEnv: {},
      alertRules: undefined,
      secretsDir: '/home/op/.aegis/secrets',
      secretsRotationOverlapMs: DEFAULT_ROTATION_OVERLAP_MS,
      alertWebhook: undefined,
      alertSyslog: undefined,
      baseline: { enabled: true, minHistory: 20 },
      imageTrustedKeys: undefined,
      registryAuthFile: '/home/op/.aegis/registry-auth.json',
      registryCaFile: undefined,
      client: { server: undefined, apiKey: undefined },
      monitor: 'auto',
      monitorIdleMs: DEFAULT_MONITOR_IDLE_MS,
      dockerHost: undefined,
      dockerTls: undefined,
      dockerContext: undefined,
      dockerRefused: undefined,
      dockerNetwork: 'auto',
      dockerEngine: 'auto',
      microvm: { guestDir: '/var/lib/aegis/microvm', allowEmulation: false },
    });
  });
  it('monitor: auto by default; on and off; anything else is config.invalid', () => {
    assert.equal(parseConfig({ AEGIS_MONITOR: 'on' }, host).monitor, 'on');
    assert.equal(parseConfig({ AEGIS_MONITOR: 'off' }, host).monitor, 'off');
    assert.equal(parseConfig({ AEGIS_MONITOR: ' ' }, host).monitor, 'auto');
    assert.throws(() => parseConfig({ AEGIS_MONITOR: 'yes' }, host), hasCode(ConfigError, 'config.invalid'));
  });
  it('monitor idle: a duration (default 60s, 0 allowed, at most 24h); anything else is config.invalid', () => {
    assert.equal(DEFAULT_MONITOR_IDLE_MS, 60_000);
    assert.equal(parseConfig({ AEGIS_MONITOR_IDLE: '2s' }, host).monitorIdleMs, 2000);
    assert.equal(parseConfig({ AEGIS_MONITOR_IDLE: '0' }, host).monitorIdleMs, 0);
    for (const bad of ['soon', '-1s', '25h'])
      assert.throws(() => parseConfig({ AEGIS_MONITOR_IDLE: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
  });
  it('DOCKER_HOST: a unix socket path or tcp host:port, anything else refused', () => {
    assert.equal(parseConfig({ DOCKER_HOST: 'unix:///run/user/1000/docker.sock' }, host).dockerHost, 'unix:///run/user/1000/docker.sock');
    assert.equal(parseConfig({ DOCKER_HOST: 'tcp://127.0.0.1:2375' }, host).dockerHost, 'tcp://127.0.0.1:2375');
    for (const bad of ['ssh://me@host', '/var/run/docker.sock', 'tcp://host', 'unix://relative', 'npipe:////./pipe/docker_engine'])
      assert.throws(() => parseConfig({ DOCKER_HOST: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
  });
  it('AEGIS_DOCKER_NETWORK: auto by default; host-netns and gateway-container; anything else is config.invalid', () => {
    assert.equal(parseConfig({ AEGIS_DOCKER_NETWORK: 'gateway-container' }, host).dockerNetwork, 'gateway-container');
    assert.equal(parseConfig({ AEGIS_DOCKER_NETWORK: 'host-netns' }, host).dockerNetwork, 'host-netns');
    assert.equal(parseConfig({ AEGIS_DOCKER_ENGINE: 'remote' }, host).dockerEngine, 'remote');
    assert.equal(parseConfig({ AEGIS_DOCKER_ENGINE: 'local' }, host).dockerEngine, 'local');
    assert.throws(() => parseConfig({ AEGIS_DOCKER_ENGINE: 'vm' }, host), hasCode(ConfigError, 'config.invalid'));
    assert.throws(
      () => parseConfig({ AEGIS_DOCKER_ENGINE: 'remote', AEGIS_DOCKER_NETWORK: 'host-netns' }, host),
      hasCode(ConfigError, 'config.invalid'),
    );
    assert.equal(parseConfig({ AEGIS_DOCKER_NETWORK: ' auto ' }, host).dockerNetwork, 'auto');
    for (const bad of ['internal', 'bridge', 'none'])
      assert.throws(() => parseConfig({ AEGIS_DOCKER_NETWORK: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
  });
  it('alert webhook: an https URL with a secret file (and an optional CA file)', () => {
    assert.deepEqual(
      parseConfig(
        {
          AEGIS_ALERT_WEBHOOK: 'https://hooks.example.com/aegis?x=1',
          AEGIS_ALERT_WEBHOOK_SECRET_FILE: '/etc/aegis/hook.secret',
          AEGIS_ALERT_WEBHOOK_CA_FILE: '/etc/aegis/ca.pem',
        },
        host,
      ).alertWebhook,
      { url: 'https://hooks.example.com/aegis?x=1', secretFile: '/etc/aegis/hook.secret', caFile: '/etc/aegis/ca.pem' },
    );
    const secret = { AEGIS_ALERT_WEBHOOK_SECRET_FILE: '/etc/aegis/hook.secret' };
    assert.equal(
      parseConfig({ AEGIS_ALERT_WEBHOOK: 'http://127.0.0.1:8080/h', ...secret }, host).alertWebhook?.url,
      'http://127.0.0.1:8080/h',
    );
    const invalid = hasCode(ConfigError, 'config.invalid');
    for (const env of [
      { AEGIS_ALERT_WEBHOOK: 'http://hooks.example.com/h', ...secret }, // cleartext off the host
      { AEGIS_ALERT_WEBHOOK: 'ftp://hooks.example.com/h', ...secret },
      { AEGIS_ALERT_WEBHOOK: 'not a url', ...secret },
      { AEGIS_ALERT_WEBHOOK: 'https://user:pw@hooks.example.com/h', ...secret }, // credentials in the environment
      { AEGIS_ALERT_WEBHOOK: 'https://hooks.example.com/h' }, // unsigned
      { AEGIS_ALERT_WEBHOOK: 'https://hooks.example.com/h', AEGIS_ALERT_WEBHOOK_SECRET_FILE: 'hook.secret' },
      { AEGIS_ALERT_WEBHOOK: 'http://127.0.0.1/h', ...secret, AEGIS_ALERT_WEBHOOK_CA_FILE: '/ca.pem' },
      { ...secret }, // a secret without a webhook: a typo in the variable name
    ])
      assert.throws(() => parseConfig(env, host), invalid, JSON.stringify(env));
  });
  it('alert syslog: udp, tcp or tls to host:port (IPv6 in brackets); a CA file only for tls', () => {
    assert.deepEqual(parseConfig({ AEGIS_ALERT_SYSLOG: 'udp://127.0.0.1:514' }, host).alertSyslog, {
      protocol: 'udp',
      host: '127.0.0.1',
      port: 514,
      caFile: undefined,
    });
    assert.deepEqual(parseConfig({ AEGIS_ALERT_SYSLOG: 'tls://[::1]:6514', AEGIS_ALERT_SYSLOG_CA_FILE: '/ca.pem' }, host).alertSyslog, {
      protocol: 'tls',
      host: '::1',
      port: 6514,
      caFile: '/ca.pem',
    });
    assert.equal(parseConfig({ AEGIS_ALERT_SYSLOG: 'tcp://logs.example.com:601' }, host).alertSyslog?.host, 'logs.example.com');
    const invalid = hasCode(ConfigError, 'config.invalid');
    for (const env of [
      { AEGIS_ALERT_SYSLOG: 'syslog.example.com:514' },
      { AEGIS_ALERT_SYSLOG: 'udp://syslog.example.com' },
      { AEGIS_ALERT_SYSLOG: 'udp://syslog.example.com:0' },
      { AEGIS_ALERT_SYSLOG: 'tcp://syslog.example.com:70000' },
      { AEGIS_ALERT_SYSLOG: 'tcp://syslog.example.com:514/path' },
      { AEGIS_ALERT_SYSLOG: 'http://syslog.example.com:514' },
      { AEGIS_ALERT_SYSLOG: 'tcp://syslog.example.com:514', AEGIS_ALERT_SYSLOG_CA_FILE: '/ca.pem' },
      { AEGIS_ALERT_SYSLOG: 'tls://syslog.example.com:6514', AEGIS_ALERT_SYSLOG_CA_FILE: 'ca.pem' },
      { AEGIS_ALERT_SYSLOG_CA_FILE: '/ca.pem' },
    ])
      assert.throws(() => parseConfig(env, host), invalid, JSON.stringify(env));
  });
  it('secret rotation overlap: a duration, or 0 for none; anything else is refused', () => {
    assert.equal(parseConfig({ AEGIS_SECRETS_ROTATION_OVERLAP: '2h' }, host).secretsRotationOverlapMs, 7_200_000);
    assert.equal(parseConfig({ AEGIS_SECRETS_ROTATION_OVERLAP: '0' }, host).secretsRotationOverlapMs, 0);
    for (const bad of ['-5m', '10', '1w', '0s'])
      assert.throws(() => parseConfig({ AEGIS_SECRETS_ROTATION_OVERLAP: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
  });
  it('baseline: on by default, off with AEGIS_BASELINE=off or alerting off; a bounded minimum history', () => {
    assert.deepEqual(parseConfig({ AEGIS_BASELINE: 'off' }, host).baseline, { enabled: false, minHistory: 20 });
    assert.deepEqual(parseConfig({ AEGIS_ALERT_RULES: 'none' }, host).baseline, { enabled: false, minHistory: 20 });
    assert.deepEqual(parseConfig({ AEGIS_BASELINE_MIN_HISTORY: '3' }, host).baseline, { enabled: true, minHistory: 3 });
    for (const bad of ['1', '1001', '2.5', '-3', 'x', '0x10'])
      assert.throws(() => parseConfig({ AEGIS_BASELINE_MIN_HISTORY: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
    assert.throws(() => parseConfig({ AEGIS_BASELINE: 'yes' }, host), hasCode(ConfigError, 'config.invalid'));
  });
  it('alert rules: paths, or none to turn alerting off', () => {
    assert.deepEqual(parseConfig({ AEGIS_ALERT_RULES: '/etc/aegis/rules:/srv/more.yml' }, host).alertRules, [
      '/etc/aegis/rules',
      '/srv/more.yml',
    ]);
    assert.deepEqual(parseConfig({ AEGIS_ALERT_RULES: 'none' }, host).alertRules, []);
    assert.throws(() => parseConfig({ AEGIS_ALERT_RULES: 'rules' }, host), hasCode(ConfigError, 'config.invalid'));
  });
  it('image trusted keys: absolute public key files separated by ":"; unset means signatures are not required', () => {
    assert.equal(parseConfig({}, host).imageTrustedKeys, undefined);
    assert.deepEqual(parseConfig({ AEGIS_IMAGE_TRUSTED_KEYS: '/etc/aegis/a.pub:/etc/aegis/b.pub' }, host).imageTrustedKeys, [
      '/etc/aegis/a.pub',
      '/etc/aegis/b.pub',
    ]);
    for (const bad of ['keys/a.pub', ':', '/etc/a.pub:rel.pub'])
      assert.throws(() => parseConfig({ AEGIS_IMAGE_TRUSTED_KEYS: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
  });
  it('registry: an auth file (default under the home) and an extra CA, absolute paths only', () => {
    const c = parseConfig({ AEGIS_REGISTRY_AUTH_FILE: '/etc/aegis/auth.json', AEGIS_REGISTRY_CA_FILE: '/etc/aegis/ca.pem' }, host);
    assert.equal(c.registryAuthFile, '/etc/aegis/auth.json');
    assert.equal(c.registryCaFile, '/etc/aegis/ca.pem');
    for (const name of ['AEGIS_REGISTRY_AUTH_FILE', 'AEGIS_REGISTRY_CA_FILE'])
      assert.throws(() => parseConfig({ [name]: 'relative.pem' }, host), hasCode(ConfigError, 'config.invalid'), name);
  });
  it('regression: a mistyped AEGIS_HOME is an error, not a new empty log', () => {
    assert.throws(() => parseConfig({ AEGIS_HOME: '/srv/aegis-hmoe' }, host), hasCode(ConfigError, 'config.home_missing'));
    assert.throws(() => parseConfig({ AEGIS_HOME: 'relative/home' }, host), hasCode(ConfigError, 'config.invalid'));
    assert.equal(parseConfig({ AEGIS_HOME: '/srv/aegis-home/' }, host).home, '/srv/aegis-home');
  });
  it('the default home may be named explicitly before it exists (first use creates it)', () => {
    assert.equal(parseConfig({ AEGIS_HOME: '/home/op/.aegis' }, host).home, '/home/op/.aegis');
    assert.equal(parseConfig({ AEGIS_HOME: '' }, host).home, '/home/op/.aegis');
  });
  it('hands each area its own variables, and makes the image store absolute', () => {
    const c = parseConfig(
      { AEGIS_AUDIT_STORE: 'file', AEGIS_AUDIT_RETENTION_DAYS: '7', AEGIS_UPSTREAM_DNS: '1.1.1.1:53', AEGIS_IMAGES: 'imgs', OTHER: 'x' },
      host,
    );
    assert.deepEqual(c.auditEnv, { AEGIS_AUDIT_STORE: 'file', AEGIS_AUDIT_RETENTION_DAYS: '7' });
    assert.deepEqual(c.gatewayEnv, { AEGIS_UPSTREAM_DNS: '1.1.1.1:53' });
    assert.ok(c.imagesDir.startsWith('/') && c.imagesDir.endsWith('/imgs'));
  });
  it('client: AEGIS_SERVER (http, https or a unix socket) and AEGIS_API_KEY', () => {
    assert.deepEqual(parseConfig({ AEGIS_SERVER: 'http://127.0.0.1:8080/', AEGIS_API_KEY: 'ak_1.secret' }, host).client, {
      server: 'http://127.0.0.1:8080',
      apiKey: 'ak_1.secret',
    });
    assert.equal(parseConfig({ AEGIS_SERVER: 'https://aegis.example.com' }, host).client.server, 'https://aegis.example.com');
    assert.equal(parseConfig({ AEGIS_SERVER: 'unix:/run/aegis/../aegis/aegis.sock' }, host).client.server, 'unix:/run/aegis/aegis.sock');
    for (const bad of ['ftp://x', 'localhost:8080', 'unix:relative.sock', 'http://user:pw@host', 'http://h/?key=1']) {
      assert.throws(() => parseConfig({ AEGIS_SERVER: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
      assert.throws(() => parseServerUrl(bad, '--server'), hasCode(ConfigError, 'config.invalid'), bad);
    }
    assert.throws(() => parseConfig({ AEGIS_API_KEY: 'two words' }, host), hasCode(ConfigError, 'config.invalid'));
  });
});

describe('parseConfig: microvm', () => {
  it('allows software emulation only for AEGIS_MICROVM_ALLOW_EMULATION=1, and takes an absolute guest dir', () => {
    assert.deepEqual(parseConfig({ AEGIS_MICROVM_ALLOW_EMULATION: '1', AEGIS_MICROVM_GUEST: '/srv/guest' }, host).microvm, {
      guestDir: '/srv/guest',
      allowEmulation: true,
    });
    assert.equal(parseConfig({ AEGIS_MICROVM_ALLOW_EMULATION: '0' }, host).microvm.allowEmulation, false);
    for (const bad of ['yes', 'true', ' 1'])
      assert.throws(() => parseConfig({ AEGIS_MICROVM_ALLOW_EMULATION: bad }, host), hasCode(ConfigError, 'config.invalid'), bad);
    assert.throws(() => parseConfig({ AEGIS_MICROVM_GUEST: 'relative/dir' }, host), hasCode(ConfigError, 'config.invalid'));
  });
});

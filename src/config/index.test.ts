import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { ConfigError, DEFAULT_IMAGES_DIR, parseConfig, type HostFacts } from './index.js';

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
      baseline: { enabled: true, minHistory: 20 },
    });
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
});

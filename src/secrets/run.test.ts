import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseAllowEntry } from '../policy/host.js';
import type { Policy } from '../policy/types.js';
import { hasCode } from '../test-support/errors.js';
import { SecretsError } from './errors.js';
import { prepareRunSecrets, revealRunSecrets, secretBindEvents, secretDeniedEvent, secretValidity, withPlaceholders } from './run.js';
import { SecretStore } from './store.js';

const root = mkdtempSync(join(tmpdir(), 'aegis-run-secrets-'));
after(() => rmSync(root, { recursive: true, force: true }));
const dir = join(root, 'secrets');
const H = 3_600_000;
const t0 = Date.UTC(2026, 10, 1);
const VALUE = 'sk-live-RUNVALUE-77aa';

function policy(secretRefs: Record<string, string>, ...allow: string[]): Policy {
  return {
    version: '1.0',
    agent: {
      name: 'a',
      runtime: { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' },
      entrypoint: ['python3'],
      env: { MODE: 'x' },
      secretRefs,
      isolation: null,
      code: '.',
    },
    network: {
      rules: allow.map((a) => {
        const r = parseAllowEntry(a);
        assert.ok(r.ok);
        return r.rule;
      }),
      rateLimit: { perSecond: 1, burst: 2 },
      byteQuota: null,
    },
    fs: { read: [], write: [] },
    limits: { timeoutMs: 1000, memoryBytes: 1 << 27, cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 }, pids: 64 },
    syscalls: { deny: [] },
  };
}

describe('prepareRunSecrets', async () => {
  const store = SecretStore.at(dir);
  await store.set({
    name: 'openai',
    hosts: ['api.openai.com'],
    header: 'authorization',
    value: Buffer.from(VALUE),
    now: t0,
    expiresAt: null,
    by: 'op',
  });
  await store.set({ name: 'old', hosts: ['api.openai.com'], header: null, value: Buffer.from('v'), now: t0, expiresAt: t0 + H, by: 'op' });

  it('no references: nothing read, nothing added', async () => {
    const r = await prepareRunSecrets({ dir: join(root, 'absent'), policy: policy({}), now: t0 });
    assert.deepEqual(r, { env: {}, bindings: [] });
  });

  it('each reference becomes a fresh placeholder bound to the allowed hosts; the value is nowhere', async () => {
    const p = policy({ OPENAI_API_KEY: 'openai', ALSO: 'openai' }, 'api.openai.com', 'example.com');
    const a = await prepareRunSecrets({ dir, policy: p, now: t0 });
    const b = await prepareRunSecrets({ dir, policy: p, now: t0 });
    assert.match(a.env['OPENAI_API_KEY']!, /^aegis-ph-[0-9a-f]{32}$/);
    assert.notEqual(a.env['OPENAI_API_KEY'], a.env['ALSO'], 'unique per variable');
    assert.notEqual(a.env['OPENAI_API_KEY'], b.env['OPENAI_API_KEY'], 'unique per execution');
    assert.deepEqual(
      a.bindings.map((x) => [x.variable, x.secret, x.version, x.hosts, x.header]),
      [
        ['ALSO', 'openai', 1, ['api.openai.com'], 'authorization'],
        ['OPENAI_API_KEY', 'openai', 1, ['api.openai.com'], 'authorization'],
      ],
    );
    const env = withPlaceholders(p, a).agent.env;
    assert.deepEqual(env, { MODE: 'x', ...a.env });
    const events = JSON.stringify(secretBindEvents(a, 'e1', 'a'));
    assert.ok(!events.includes(VALUE) && !events.includes(a.env['ALSO']!), 'neither value nor placeholder in the events');
    assert.ok(!JSON.stringify(a).includes(VALUE));
  });

  it('refuses missing, expired and unbound secrets with their codes, and names the secret in secret.denied', async () => {
    const cases = [
      [policy({ K: 'nope' }, 'api.openai.com'), t0, 'secrets.missing', 'nope'],
      [policy({ K: 'old' }, 'api.openai.com'), t0 + H, 'secrets.expired', 'old'],
      [policy({ K: 'openai' }, 'example.com'), t0, 'secrets.unbound', 'openai'],
      [policy({ K: 'openai' }), t0, 'secrets.unbound', 'openai'],
    ] as const;
    for (const [p, now, code, name] of cases) {
      const err = await prepareRunSecrets({ dir, policy: p, now }).then(
        () => assert.fail(`${code} expected`),
        (e: unknown) => e,
      );
      assert.ok(hasCode(SecretsError, code)(err), `${code}: ${String(err)}`);
      assert.deepEqual(secretDeniedEvent(err, 'e1', undefined), {
        actor: { execution: 'e1' },
        action: 'secret.denied',
        decision: 'deny',
        reason: code,
        payload: { secret: name },
      });
    }
    assert.equal(secretDeniedEvent(new Error('x'), 'e1', undefined), undefined);
  });

  it('an expiry in the future does not refuse', async () => {
    const r = await prepareRunSecrets({ dir, policy: policy({ K: 'old' }, 'api.openai.com'), now: t0 + H - 1 });
    assert.equal(r.bindings[0]?.secret, 'old');
  });
});

describe('the gateway half: values and validity for a run', async () => {
  const gdir = join(root, 'gateway-secrets');
  const store = SecretStore.at(gdir);
  const started = Date.now();
  await store.set({
    name: 'rot',
    hosts: ['api.openai.com'],
    header: 'authorization',
    value: Buffer.from(VALUE),
    now: started - 10,
    expiresAt: null,
    by: 'op',
  });

  it("revealRunSecrets: the bound version's value, with placeholder, hosts and header", async () => {
    const prepared = await prepareRunSecrets({ dir: gdir, policy: policy({ KEY: 'rot' }, 'api.openai.com'), now: started });
    const got = await revealRunSecrets(gdir, prepared);
    assert.deepEqual(got, [
      { secret: 'rot', version: 1, hosts: ['api.openai.com'], header: 'authorization', placeholder: prepared.env['KEY'], value: VALUE },
    ]);
    assert.deepEqual(await revealRunSecrets(join(root, 'nowhere'), { env: {}, bindings: [] }), []);
  });

  it('secretValidity: a rotated-out version stays valid for a running run during the overlap only; removed: never', async () => {
    await store.rotate({ name: 'rot', value: Buffer.from('second-value'), now: started + 1, expiresAt: null, overlapMs: H });
    assert.equal(await secretValidity(gdir, started, H)('rot', 1), true, 'within the overlap');
    assert.equal(await secretValidity(gdir, started, 0)('rot', 1), false, 'no overlap');
    assert.equal(await secretValidity(gdir, started + 2, H)('rot', 1), false, 'a run started after the rotation');
    assert.equal(await secretValidity(gdir, started + 2, H)('rot', 2), true);
    await store.rm('rot');
    assert.equal(await secretValidity(gdir, started + 2, H)('rot', 2), false, 'removed');
  });
});

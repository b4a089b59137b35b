/**
 * `aegis run` with a secret reference, end to end under crun behind the egress gateway: the
 * agent's variable holds a per-execution placeholder (`aegis-ph-` + 32 hex digits), a new one on
 * every run, and the real value is nowhere the agent can look (its environment, every
 * /proc/<pid>/environ and cmdline it can read); the audit log names the secret and version it
 * was bound to, never the value or the placeholder.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { requirementsOrSkip } from './gateway-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

const VALUE = 'sk-live-NEVERINSIDE-1b2c3d4e';
const AGENT = `import glob, json, os
seen = {}
for p in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):
    try:
        seen[p] = open(p, 'rb').read().decode('latin1')
    except OSError:
        pass
print(json.dumps({'API_KEY': os.environ.get('API_KEY'), 'environ': dict(os.environ), 'proc': seen}))
`;

describe('aegis run: secret references become placeholders', { ...requirementsOrSkip(['ip', 'nft', 'crun']), timeout: 180_000 }, () => {
  let work = '';
  let home = '';
  let file = '';
  let inet: FakeInternet | undefined;
  let unavailable: string | null = null;
  const aegis = (args: string[], input?: string) => {
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, AEGIS_HOME: home, AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`, AEGIS_ALERT_RULES: 'none' },
      timeout: 90_000,
      ...(input !== undefined ? { input } : { stdio: ['ignore', 'pipe', 'pipe'] }),
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  before(async () => {
    unavailable = await sandboxUnavailable();
    work = mkdtempSync('/var/tmp/aegis-run-secrets-');
    chmodSync(work, 0o755);
    home = join(work, 'home');
    mkdirSync(home);
    const code = join(work, 'agent');
    mkdirSync(code);
    chmodSync(code, 0o755);
    writeFileSync(join(code, 'main.py'), AGENT);
    file = join(code, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent:\n  name: secret-probe\n  runtime: "python:3.11"\n  entrypoint: ["python3", "main.py"]\n  isolation: crun\n  env:\n    API_KEY: "secret:openai"\npermissions:\n  network:\n    allow: ["api.openai.com"]\n',
    );
    if (unavailable === null) inet = await startFakeInternet();
  });
  after(async () => {
    await inet?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('the agent sees a fresh placeholder, never the value; the log names secret and version only', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const set = aegis(['secret', 'set', 'openai', '--hosts', 'api.openai.com', '--header', 'authorization'], `${VALUE}\n`);
    assert.equal(set.code, 0, set.err);
    const runs = [1, 2].map((i) => {
      const summary = join(work, `summary-${i}.json`);
      const r = aegis(['run', file, '--state-dir', join(work, 'state'), '--summary', summary]);
      assert.equal(r.code, 0, r.err);
      assert.ok(!r.out.includes(VALUE) && !r.err.includes(VALUE), 'the value is nowhere in the sandbox');
      const seen = JSON.parse(r.out) as { API_KEY: string; environ: Record<string, string>; proc: Record<string, string> };
      assert.match(seen.API_KEY, /^aegis-ph-[0-9a-f]{32}$/);
      assert.ok(Object.keys(seen.proc).length > 0, 'the agent read /proc');
      const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
      return { placeholder: seen.API_KEY, executionId };
    });
    assert.notEqual(runs[0]!.placeholder, runs[1]!.placeholder, 'a placeholder is unique to its execution');

    const q = aegis(['audit', 'query', '--json', '--execution', runs[0]!.executionId, '--action', 'secret.bind']);
    assert.equal(q.code, 0, q.err);
    const bind = q.out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { event: { payload: unknown } }).event.payload);
    assert.deepEqual(bind, [{ secret: 'openai', version: 1, variable: 'API_KEY', hosts: ['api.openai.com'], header: 'authorization' }]);
    const all = aegis(['audit', 'export']);
    assert.equal(all.code, 0, all.err);
    for (const r of runs) assert.ok(!all.out.includes(r.placeholder), 'no placeholder in the log');
    assert.ok(!all.out.includes(VALUE), 'no value in the log');
  });
});

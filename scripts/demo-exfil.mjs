// The egress demo behind `bash scripts/demo.sh`: a prompt-injected agent (examples/exfil-demo)
// makes one allowed API call, then tries to exfiltrate a secret every way it knows, run by
// `aegis run` exactly as a user would run it. There is no internet here, so a "fake internet"
// (DNS + HTTPS servers for api.openai.com, attacker.com, ... on 198.51.100.0/24, certificates
// from a throw-away test CA) is built in a network namespace first and removed afterwards.
// Then examples/db-api-agent uses a real PostgreSQL (db.internal:5432, on the same fake
// internet) and the HTTPS API at once; its refused connections fail at once. Last,
// examples/secret-agent calls the API with a key it never holds (the gateway swaps its
// placeholder on the way to api.openai.com only) and then fails to send it anywhere else.
//
//   npm run build && node scripts/demo-exfil.mjs [--isolation crun|runc|gvisor|docker|microvm]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// `--isolation <runtime>` is handed to the three `aegis run`s (the same policies on another backend).
const at = process.argv.indexOf('--isolation');
const isolation = at > 0 && process.argv[at + 1] ? ['--isolation', process.argv[at + 1]] : [];
const aegis = (args, env = {}) =>
  spawnSync(process.execPath, [join(root, 'bin', 'aegis.js'), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
const { startFakeInternet, UPSTREAM_DNS, FAKE_API_KEY } = await import(
  join(root, 'dist', 'test', 'integration', 'gateway-fake-internet.js')
);

const inet = await startFakeInternet({ postgres: true });
const summaryFile = join(mkdtempSync(join(tmpdir(), 'aegis-demo-')), 'summary.json');
let run;
let dbRun;
let secretRun;
try {
  console.log(`$ aegis run examples/exfil-demo/agent.yaml --volume <test CA>:/data:ro ${isolation.join(' ')}`);
  run = aegis(['run', 'examples/exfil-demo/agent.yaml', ...isolation, '--volume', `${inet.dir}:/data:ro`, '--summary', summaryFile], {
    AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`,
  });
  process.stdout.write(run.stdout);
  process.stderr.write(run.stderr);
  console.log(`\n$ aegis run examples/db-api-agent/agent.yaml --volume <test CA>:/data:ro ${isolation.join(' ')}`);
  dbRun = aegis(['run', 'examples/db-api-agent/agent.yaml', ...isolation, '--volume', `${inet.dir}:/data:ro`], {
    AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`,
  });
  process.stdout.write(dbRun.stdout);
  process.stderr.write(dbRun.stderr);
  // The fake internet's API key, stored encrypted; the agent only ever sees a placeholder. The
  // gateway trusts the fake internet's test CA as the operator's upstream CA (never the agent).
  aegis(['secret', 'rm', 'demo-openai']);
  console.log('\n$ aegis secret set demo-openai --hosts api.openai.com --header authorization   # the key on stdin');
  const set = spawnSync(
    process.execPath,
    [join(root, 'bin', 'aegis.js'), 'secret', 'set', 'demo-openai', '--hosts', 'api.openai.com', '--header', 'authorization'],
    { cwd: root, env: process.env, encoding: 'utf8', input: `${FAKE_API_KEY}\n` },
  );
  process.stdout.write(set.stdout);
  process.stderr.write(set.stderr);
  console.log(`\n$ AEGIS_UPSTREAM_CA_FILE=<test CA> aegis run examples/secret-agent/agent.yaml ${isolation.join(' ')}`);
  secretRun = aegis(['run', 'examples/secret-agent/agent.yaml', ...isolation], {
    AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53`,
    AEGIS_UPSTREAM_CA_FILE: inet.caFile,
  });
  process.stdout.write(secretRun.stdout);
  process.stderr.write(secretRun.stderr);
} finally {
  await inet.close();
}
const summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
console.log(
  `\nagent ${summary.status}, exit code ${summary.exitCode}; its audit events (aegis audit query --execution ${summary.executionId}):`,
);
const q = aegis(['audit', 'query', '--json', '--execution', summary.executionId]);
for (const line of q.stdout.trim().split('\n').filter(Boolean)) {
  const e = JSON.parse(line).event;
  if (!e) continue;
  const p = e.payload ?? {};
  const what =
    e.action === 'net.blocked'
      ? `${p.packets} ${p.protocol} packet(s) dropped`
      : (p.name ?? p.url ?? (p.host !== undefined ? `${p.host}:${p.port}` : ''));
  console.log(`  ${e.decision.padEnd(5)} ${e.action.padEnd(16)} ${String(e.reason ?? '').padEnd(30)} ${p.mode ?? p.type ?? ''} ${what}`);
}
const leaked = run.stdout.split('\n').filter((l) => l.startsWith('LEAKED'));
if (summary.status !== 'exited' || summary.exitCode !== 0 || leaked.length > 0) {
  console.error(`demo failed: ${leaked.length} leak(s), agent ${summary.status} ${summary.exitCode}`);
  process.exit(1);
}
if (dbRun.status !== 0 || !/answers stored in the database: 2/.test(dbRun.stdout) || /REACHED/.test(dbRun.stdout)) {
  console.error(`db-api demo failed (exit ${dbRun.status})`);
  process.exit(1);
}
if (
  secretRun.status !== 0 ||
  !/API call with the key: HTTP 200/.test(secretRun.stdout) ||
  /LEAKED/.test(secretRun.stdout) ||
  secretRun.stdout.includes(FAKE_API_KEY)
) {
  console.error(`secret-agent demo failed (exit ${secretRun.status})`);
  process.exit(1);
}

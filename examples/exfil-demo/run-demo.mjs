// Runs the exfiltration demo end to end on this machine (root; needs crun, ip, nft, openssl):
// a fake internet in a network namespace, the egress gateway, the agent in a crun sandbox.
// Prints the agent's output, then its audit events (JSON lines, also kept in ./audit.jsonl).
//
//   npm run build && node examples/exfil-demo/run-demo.mjs
//
// Until `aegis run` wires the gateway, this script does what it will do.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', '..', 'dist');
const { parseManifestOrThrow } = await import(join(dist, 'src/manifest/parse.js'));
const { compilePolicy } = await import(join(dist, 'src/policy/compile.js'));
const { runSandbox } = await import(join(dist, 'src/sandbox/run.js'));
const { startSandboxNetwork, JsonlFileSink } = await import(join(dist, 'src/gateway/index.js'));
const { startFakeInternet, UPSTREAM_DNS } = await import(join(dist, 'test/integration/gateway-fake-internet.js'));

const policy = compilePolicy(parseManifestOrThrow(readFileSync(join(here, 'agent.yaml'), 'utf8'), 'agent.yaml'));
const auditPath = join(process.cwd(), 'audit.jsonl');
const audit = new JsonlFileSink(auditPath);
const inet = await startFakeInternet();
let net;
try {
  net = await startSandboxNetwork({
    network: policy.network,
    executionId: `demo-${Date.now()}`,
    agent: policy.agent.name,
    audit,
    config: { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-demo' },
  });
  const r = await runSandbox({
    policy,
    manifestDir: here,
    imageRootfs: '/',
    isolation: 'crun',
    network: { kind: 'netns', path: net.netnsPath },
    extraEnv: net.env,
    volumes: [{ host: inet.dir, sandbox: '/data', mode: 'ro' }],
    stdout: 'inherit',
    stderr: 'inherit',
  });
  console.log(`\nagent ${r.status}, exit code ${r.exitCode}\n\naudit events (${auditPath}):`);
} finally {
  await net?.close();
  await inet.close();
  audit.close();
}
for (const line of readFileSync(auditPath, 'utf8').trim().split('\n')) {
  const e = JSON.parse(line);
  const what = e.action === 'net.blocked' ? `${e.payload.packets} ${e.payload.protocol} packet(s) dropped by nftables, to ${e.payload.destinations.map((d) => (d.port === null ? d.address : `${d.address}:${d.port}`)).join(' ')}` : (e.payload.name ?? e.payload.url ?? `${e.payload.host}:${e.payload.port}`);
  console.log(`${e.decision.padEnd(5)} ${e.action.padEnd(13)} ${String(e.reason).padEnd(30)} ${e.payload.mode ?? e.payload.type ?? ''} ${what}`);
}

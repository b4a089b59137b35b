/**
 * The exfiltration demo agent (examples/exfil-demo) in a real sandbox (crun) whose only way
 * out is the egress gateway, against the fake internet, through the library API the server
 * will call. The image is the real python:3.11 runtime image; the test CA is mounted at /data.
 * (The same agent through `aegis run`, under crun and gVisor: run-gateway.test.ts.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { JsonlFileSink, startSandboxNetwork, type SandboxNetwork } from '../../src/gateway/index.js';
import { parseManifestOrThrow } from '../../src/manifest/parse.js';
import { compilePolicy } from '../../src/manifest/compile.js';
import { resolveImage } from '../../src/images/index.js';
import { runSandbox } from '../../src/sandbox/run.js';
import { REPO_ROOT } from '../../src/test-support/repo.js';
import type { AuditEventInput } from '../../src/audit/event.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { MemorySink, requirementsOrSkip } from './gateway-support.js';

const DEMO = join(REPO_ROOT, 'examples', 'exfil-demo');

describe(
  'exfil demo agent in a crun sandbox behind the gateway',
  { ...requirementsOrSkip(['ip', 'nft', 'openssl', 'python3', 'crun']), timeout: 120_000 },
  () => {
    let inet: FakeInternet;
    let net: SandboxNetwork;
    const memory = new MemorySink();
    const auditFile = join(mkdtempSync(join(tmpdir(), 'aegis-exfil-')), 'audit.jsonl');
    const file = new JsonlFileSink(auditFile);
    let stdout = '';
    let result: Awaited<ReturnType<typeof runSandbox>>;

    before(async () => {
      inet = await startFakeInternet();
      const policy = compilePolicy(parseManifestOrThrow(readFileSync(join(DEMO, 'agent.yaml'), 'utf8'), 'agent.yaml'));
      net = await startSandboxNetwork({
        network: policy.network,
        executionId: 'exfil-demo',
        agent: policy.agent.name,
        audit: { append: (e: AuditEventInput) => (memory.append(e), file.append(e)) },
        config: { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' },
      });
      result = await runSandbox({
        policy,
        manifestDir: DEMO,
        imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
        isolation: 'crun',
        network: { kind: 'netns', path: net.netnsPath, resolvConf: net.resolvConfPath },
        extraEnv: net.env,
        volumes: [{ host: inet.dir, sandbox: '/data', mode: 'ro' }],
        stdout: (c) => void (stdout += c.toString()),
        stderr: 'inherit',
      });
      await net.close(); // as the runner does when the sandbox ends: the last drop counters are read here
    });
    after(async () => {
      await net?.close();
      await inet?.close();
      file.close();
    });

    it('calls the allowed API and leaks nothing (exit 0)', () => {
      assert.equal(result.status, 'exited', result.error?.message);
      assert.match(stdout, /^ALLOWED https:\/\/api\.openai\.com\/v1\/models: HTTP 200 api\.openai\.com$/m);
      assert.doesNotMatch(stdout, /^LEAKED/m);
      assert.equal(result.exitCode, 0, stdout);
      assert.equal((stdout.match(/^BLOCKED /gm) ?? []).length, 11, stdout);
    });

    it('the fake attacker.com never received a request', () => {
      assert.deepEqual(
        inet.requestsSeen().filter((r) => r.host !== 'api.openai.com'),
        [],
      );
    });

    it('every attempt is a denial in the audit file, with the reason code', () => {
      const lines = readFileSync(auditFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as AuditEventInput & { v: number; time: string });
      assert.ok(
        lines.every((e) => e.v === 1 && typeof e.time === 'string' && e.actor.execution === 'exfil-demo' && e.actor.agent === 'exfil-demo'),
      );
      const denied = lines.filter((e) => e.decision === 'deny').map((e) => `${e.action} ${e.reason}`);
      for (const expected of [
        'net.connect net.denied.not_in_allowlist', // CONNECT attacker.com
        'http.request net.denied.not_in_allowlist', // plain http via proxy, forged Host
        'net.dns net.denied.not_in_allowlist', // no-proxy lookup, TXT, subdomain, outside resolver
        'http.request net.denied.ip_literal', // by IP
        'http.request net.denied.special_range', // metadata, decimal IP
        'net.blocked gateway.no_route', // raw TCP to attacker:22 (dropped by nftables)
      ]) {
        assert.ok(denied.includes(expected), `missing "${expected}" in ${JSON.stringify(denied)}`);
      }
      assert.ok(memory.find('net.dns', 'deny', { name: 'c2stZGVtby0wMTIz.attacker.com' }).length === 1);
      assert.ok(memory.find('net.dns', 'deny', { name: 'attacker.com', type: 'TXT' }).length === 1);
      assert.ok(memory.find('net.connect', 'allow', { host: 'api.openai.com' }).length >= 1);
      assert.ok(memory.find('net.blocked', 'deny', { protocol: 'tcp' }).length >= 1);
    });
  },
);

/**
 * End to end, as a user runs it: `aegis run examples/exfil-demo/agent.yaml` under crun, under
 * gVisor, on the Docker engine (the agent's container in the gateway's namespace) and in a
 * microVM (its virtio-net on a tap in the gateway's namespace; under software emulation here, so
 * that case boots a kernel), behind the egress gateway, against the fake internet. The agent makes one
 * allowed HTTPS call and then tries to exfiltrate a secret every way it knows. Every attempt
 * must fail, and every one must be in the tamper-evident audit log as a denial, with the
 * policy's reason code, and the log must verify.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { engineClient, engineUnavailableReason } from '../../src/sandbox/docker/engine.js';
import { LABEL_RUN } from '../../src/sandbox/docker/options.js';
import { DEFAULT_MICROVM_SETTINGS, MicrovmDriver } from '../../src/sandbox/drivers/index.js';
import { requireOrSkip } from './sandbox-conformance.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { requirementsOrSkip } from './gateway-support.js';

function aegis(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 180_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe(
  'aegis run behind the egress gateway: the exfiltration demo',
  { ...requirementsOrSkip(['ip', 'nft', 'openssl', 'crun', 'runsc']), timeout: 480_000 },
  () => {
    let inet: FakeInternet;
    const home = mkdtempSync(join(tmpdir(), 'aegis-run-gw-home-'));
    const env = { AEGIS_HOME: home, AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53` };

    before(async () => {
      inet = await startFakeInternet();
    });
    after(async () => {
      await inet?.close();
      rmSync(home, { recursive: true, force: true });
    });

    // The microVM runs under software emulation (these hosts' KVM runs only patched guests), as an
    // operator allows it; AEGIS_MICROVM_GUEST (a guest built elsewhere) is passed on as it is.
    const microvmEnv = { AEGIS_MICROVM_ALLOW_EMULATION: '1' };
    const guestDir = process.env['AEGIS_MICROVM_GUEST'] ?? DEFAULT_MICROVM_SETTINGS.guestDir;

    // docker twice: the agent's container in the gateway's namespace (host-netns), and behind a
    // gateway container that relays over the engine's API (gateway-container, the mode for an
    // engine in a VM), selected here on the local engine.
    const cases = [
      { isolation: 'crun', mode: '' },
      { isolation: 'gvisor', mode: '' },
      { isolation: 'docker', mode: 'host-netns' },
      { isolation: 'docker', mode: 'gateway-container' },
      // The engine used as a remote one (only its API: code, volumes and limits through it).
      { isolation: 'docker', mode: 'remote' },
      { isolation: 'microvm', mode: '' },
    ] as const;
    for (const { isolation, mode } of cases) {
      it(`refuses and audits every attempt under ${isolation}${mode ? ` (${mode})` : ''}`, async (t) => {
        if (isolation === 'docker' && !requireOrSkip(t, engineUnavailableReason())) return;
        if (isolation === 'microvm' && !requireOrSkip(t, new MicrovmDriver({ guestDir, allowEmulation: true }).unavailableReason())) return;
        const summary = join(home, `summary-${isolation}${mode}.json`);
        const r = aegis(
          ['run', 'examples/exfil-demo/agent.yaml', '--isolation', isolation, '--volume', `${inet.dir}:/data:ro`, '--summary', summary],
          isolation === 'microvm'
            ? { ...env, ...microvmEnv }
            : mode === 'remote'
              ? { ...env, AEGIS_DOCKER_ENGINE: 'remote' }
              : mode
                ? { ...env, AEGIS_DOCKER_NETWORK: mode }
                : env,
        );
        assert.equal(r.code, 0, `agent failed:\n${r.out}\n${r.err}`);
        assert.match(r.out, /^ALLOWED https:\/\/api\.openai\.com\/v1\/models: HTTP 200/m);
        assert.doesNotMatch(r.out, /^LEAKED/m);
        assert.equal((r.out.match(/^BLOCKED /gm) ?? []).length, 11, r.out);
        assert.ok(!inet.requestsSeen().some((q) => q.host.includes('attacker')), 'no request reached attacker.com');

        const { executionId } = JSON.parse(readFileSync(summary, 'utf8')) as { executionId: string };
        const q = aegis(['audit', 'query', '--json', '--execution', executionId], env);
        assert.equal(q.code, 0, q.err);
        const events = q.out
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { event: AuditEvent }).event);
        const has = (
          action: string,
          decision: string,
          reason: string | undefined,
          pred: (p: Record<string, unknown>) => boolean = () => true,
        ) =>
          assert.ok(
            events.some((e) => e.action === action && e.decision === decision && e.reason === reason && pred(e.payload)),
            `missing ${action} ${decision} ${reason} in\n${events.map((e) => `${e.action} ${e.decision} ${e.reason ?? ''} ${JSON.stringify(e.payload)}`).join('\n')}`,
          );
        has('run.spawn', 'info', undefined, (p) => p.isolation === isolation);
        has('run.start', 'info', undefined);
        has('net.connect', 'allow', 'net.allowed.exact', (p) => p.host === 'api.openai.com');
        has('net.connect', 'deny', 'net.denied.not_in_allowlist', (p) => p.host === 'attacker.com');
        has('http.request', 'deny', 'net.denied.not_in_allowlist', (p) => String(p.url).startsWith('http://attacker.com/'));
        has('http.request', 'deny', 'net.denied.ip_literal');
        has('http.request', 'deny', 'net.denied.special_range', (p) => String(p.url).includes('169.254.169.254'));
        // DNS goes through the gateway (the agent's resolver is the gateway's address only).
        has('net.dns', 'allow', 'net.allowed.exact', (p) => p.name === 'api.openai.com');
        has('net.dns', 'deny', 'net.denied.not_in_allowlist', (p) => p.type === 'TXT');
        has('net.dns', 'deny', 'net.denied.not_in_allowlist', (p) => String(p.name).endsWith('.attacker.com'));
        has('net.blocked', 'deny', 'gateway.no_route', (p) => p.protocol === 'tcp');
        has('run.exit', 'info', undefined, (p) => p.status === 'exited' && p.exitCode === 0);

        const v = aegis(['audit', 'verify'], env);
        assert.equal(v.code, 0, v.out + v.err);
        assert.match(v.out, /^ok: \d+ entries, root /);
        if (isolation === 'docker') {
          const left = await engineClient().listContainers({ all: true, filters: { label: [`${LABEL_RUN}=${executionId}`] } });
          assert.deepEqual(
            left.map((c) => c.Names),
            [],
            'the engine holds nothing of the run',
          );
        }
      });
    }
  },
);

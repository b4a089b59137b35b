/**
 * The egress compatibility suite: real client libraries from Debian (image
 * egress-clients:bookworm, built by scripts/setup.sh) inside a real sandbox, under crun and
 * under gVisor (runsc --network=host in the gateway's namespace, own bundle), behind the gateway, against the fake internet (HTTPS API, git smart HTTP,
 * PostgreSQL, SSH). Every client runs with the proxy variables the gateway sets and without
 * them; both must end in the same decision. Allowed attempts must get the server's answer;
 * denied ones must fail with a refusal (never a timeout) and be denials in the audit log.
 * The agent is test/integration/compat-agent; the table in docs/gateway.md comes from here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSandboxNetwork, type SandboxNetwork } from '../../src/gateway/index.js';
import { resolveImage } from '../../src/images/index.js';
import { parseManifestOrThrow } from '../../src/manifest/parse.js';
import { compilePolicy } from '../../src/manifest/compile.js';
import type { Policy } from '../../src/policy/types.js';
import { runSandbox } from '../../src/sandbox/run.js';
import { REPO_ROOT } from '../../src/test-support/repo.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { MemorySink, requirementsOrSkip } from './gateway-support.js';

const AGENT = join(REPO_ROOT, 'test', 'integration', 'compat-agent');
const config = { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' };

/** Run the compat agent under runsc (--network=host in the gateway's namespace), with its own minimal bundle. */
async function runGvisorBundle(
  policy: Policy,
  rootfs: string,
  net: SandboxNetwork,
  dataDir: string,
): Promise<{ stdout: string; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-compat-gvisor-'));
  const id = `aegis-compat-${process.pid}`;
  // The data dir goes on /workspace, a mount point every image has: runsc would otherwise create
  // /data inside the image's root filesystem (read-only is not enforced for mount points), and
  // the image would no longer match its digest.
  const agentEnv = Object.fromEntries(Object.entries(policy.agent.env).map(([k, v]) => [k, v.replaceAll('/data/', '/workspace/')]));
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', ...agentEnv, ...net.env };
  const bind = (destination: string, source: string) => ({ destination, type: 'bind', source, options: ['rbind', 'ro'] });
  const config = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 65534, gid: 65534 },
      args: [...policy.agent.entrypoint],
      env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      cwd: '/agent',
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: true },
    hostname: 'aegis',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev'] },
      bind('/agent', AGENT),
      bind('/workspace', dataDir),
      bind('/etc/resolv.conf', net.resolvConfPath),
    ],
    linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: net.netnsPath }] },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const runsc = (args: string[], timeout: number) =>
    new Promise<{ stdout: string; stderr: string }>((resolve) => {
      execFile(
        'runsc',
        ['--root', join(dir, 'state'), ...args],
        { timeout, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
        (_err, stdout, stderr) => resolve({ stdout, stderr }),
      );
    });
  try {
    return await runsc(['--platform=ptrace', '--network=host', 'run', '--bundle', dir, id], 600_000);
  } finally {
    await runsc(['delete', '--force', id], 20_000);
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Row {
  readonly client: string;
  readonly expect: 'allowed' | 'denied';
  readonly mode: 'proxy' | 'direct';
  readonly ok: boolean;
  readonly ms: number;
  readonly detail: string;
}

function parseRows(stdout: string): Row[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('RESULT '))
    .map((l) => {
      const m = /^RESULT (\S+) (allowed|denied) (proxy|direct) (ok|fail) (\d+) (.*)$/.exec(l);
      assert.ok(m, `unparseable line ${l}`);
      return {
        client: m[1]!,
        expect: m[2] as Row['expect'],
        mode: m[3] as Row['mode'],
        ok: m[4] === 'ok',
        ms: Number(m[5]),
        detail: JSON.parse(m[6]!) as string,
      };
    });
}

describe(
  'egress compatibility suite: real clients in a sandbox',
  { ...requirementsOrSkip(['ip', 'nft', 'openssl', 'crun', 'runsc', 'psql', 'dropbear', 'runuser']), timeout: 900_000 },
  () => {
    let inet: FakeInternet;
    before(async () => {
      inet = await startFakeInternet({ postgres: true, ssh: true });
    });
    after(async () => {
      await inet?.close();
    });

    for (const isolation of ['crun', 'gvisor'] as const) {
      it(`every client gets through when allowed and is refused when denied, with and without proxy variables (${isolation})`, async (t) => {
        const policy = compilePolicy(parseManifestOrThrow(readFileSync(join(AGENT, 'agent.yaml'), 'utf8'), 'agent.yaml'));
        const audit = new MemorySink();
        const net = await startSandboxNetwork({
          network: policy.network,
          executionId: `compat-${isolation}`,
          agent: policy.agent.name,
          audit,
          config,
        });
        let stdout = '';
        let stderr = '';
        try {
          if (isolation === 'crun') {
            const result = await runSandbox({
              policy,
              manifestDir: AGENT,
              imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
              isolation,
              network: { kind: 'netns', path: net.netnsPath, resolvConf: net.resolvConfPath },
              extraEnv: net.env,
              volumes: [{ host: inet.dir, sandbox: '/data', mode: 'ro' }],
              stdout: (c) => void (stdout += c.toString()),
              stderr: (c) => void (stderr += c.toString()),
            });
            assert.equal(result.status, 'exited', `${result.error?.message ?? ''}\n${stderr}`);
          } else {
            // Own bundle, as gateway-gvisor.test.ts: under `runSandbox`'s gVisor profile no thread
            // can be created ("can't start new thread"; a sandbox-runner issue, reported), which
            // would fail every threaded client for a reason that has nothing to do with egress.
            ({ stdout, stderr } = await runGvisorBundle(policy, (await resolveImage(policy.agent.runtime)).rootfs, net, inet.dir));
          }
        } finally {
          await net.close();
        }
        assert.match(stdout, /^DONE$/m, stdout + stderr);
        const rows = parseRows(stdout);
        for (const r of rows)
          t.diagnostic(`${isolation} ${r.client} ${r.expect} ${r.mode}: ${r.ok ? 'ok' : 'FAIL'} ${r.ms} ms ${r.detail}`);
        // Per mode: 8 HTTP clients x (GET, POST) allowed + 8 denied, and git, psql, psycopg2, ssh allowed and denied.
        assert.equal(rows.length, 2 * (8 * 2 + 8 + 4 * 2), 'every client ran in both modes');
        const failed = rows.filter((r) => !r.ok);
        assert.deepEqual(failed, [], 'clients that did not end as expected');
        // Denied means refused, never a hang until the client's own timeout.
        assert.deepEqual(
          rows.filter((r) => r.expect === 'denied' && /time(d)?[ -]?out/i.test(r.detail)),
          [],
        );
        // The same decision with and without proxy variables, for every client.
        for (const r of rows.filter((x) => x.mode === 'proxy')) {
          assert.equal(rows.find((x) => x.mode === 'direct' && x.client === r.client && x.expect === r.expect)?.ok, r.ok, r.client);
        }
        // Every denial is in the audit log with the policy's reason: by name (DNS, CONNECT), by port, by address.
        assert.ok(audit.find('net.dns', 'deny', { name: 'attacker.com', reason: 'net.denied.not_in_allowlist' }).length >= 1);
        assert.ok(
          audit.find('net.connect', 'deny', { mode: 'connect', host: 'attacker.com', reason: 'net.denied.not_in_allowlist' }).length >= 1,
        );
        assert.ok(
          audit
            .find('net.blocked', 'deny', { protocol: 'tcp' })
            .some((e) => (e.payload.destinations as Array<{ port: number }>).some((d) => d.port === 5433)),
        );
        assert.ok(
          audit.find('net.connect', 'deny', { mode: 'transparent-tcp', host: '198.51.100.66', port: 22, reason: 'net.denied.ip_literal' })
            .length >= 1,
        );
        assert.ok(audit.find('net.connect', 'allow', { mode: 'transparent-tcp', host: 'db.internal', port: 5432 }).length >= 1);
        assert.ok(audit.find('net.connect', 'allow', { mode: 'transparent-tcp', host: 'git.example.com', port: 22 }).length >= 1);
      });
    }
  },
);

/**
 * The Docker backend's gateway-container network mode (the design for an engine in a VM),
 * selected on this host's local engine: the agent's container joins a per-run gateway
 * container's namespace, whose relay carries every flow over the engine's API to the run's
 * sandbox namespace on this host. What the agent can do there, and what the host's gateway sees
 * and audits (the exfiltration demo itself, in this mode: run-gateway.test.ts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSandboxNetwork, type SandboxNetwork } from '../../src/gateway/index.js';
import { parseManifestOrThrow } from '../../src/manifest/parse.js';
import { compilePolicy } from '../../src/manifest/compile.js';
import { resolveImage } from '../../src/images/index.js';
import { runSandbox } from '../../src/sandbox/run.js';
import { engineClient, engineImage, IMAGE_REPO } from '../../src/sandbox/docker/engine.js';
import { DEFAULT_STATE_DIR } from '../../src/sandbox/state.js';
import { useDockerNetwork } from '../../src/sandbox/docker/host.js';
import { LABEL_ROLE, LABEL_RUN } from '../../src/sandbox/docker/options.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { MemorySink, requirementsOrSkip } from './gateway-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

const DEMO = join(REPO_ROOT, 'examples', 'exfil-demo');
const STALE_KEY = 'f'.repeat(64);
const STALE_ROOT = join(DEFAULT_STATE_DIR, 'docker', 'gateway', 'sha256', STALE_KEY);

/** Host processes that are relay dialers, children of `parent` (their command line names relay-main.js dial). */
function dialersOf(parent: number): string[] {
  return readdirSync('/proc')
    .filter((p) => /^[0-9]+$/.test(p))
    .filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return ppid === parent && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('relay-main.js\0dial');
      } catch {
        return false;
      }
    });
}

// Each line: `<probe> <outcome>`.
const PROBE = `
import errno, socket
def out(name, f):
    try:
        print(name, f())
    except OSError as e:
        print(name, type(e).__name__, errno.errorcode.get(e.errno, e.errno))
print("ifaces", sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]))
print("capeff", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
out("icmp_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) and "opened")
out("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) and "opened")
def relay_direct():
    s = socket.create_connection(("127.0.0.1", 15001), timeout=3)
    return s.recv(10)
out("relay_direct", relay_direct)
out("tcp22", lambda: socket.create_connection(("198.51.100.66", 22), timeout=3) and "connected")
out("tcp6", lambda: socket.create_connection(("2001:db8::66", 443), timeout=3) and "connected")
out("dns_allowed", lambda: socket.gethostbyname("api.openai.com"))
out("dns_denied", lambda: socket.gethostbyname("attacker.com"))
`;

describe(
  'docker gateway-container mode: the agent behind a relay to the host gateway',
  { ...requirementsOrSkip(['ip', 'nft', 'openssl', 'python3', 'nsenter']), timeout: 180_000 },
  () => {
    let inet: FakeInternet;
    let net: SandboxNetwork;
    const audit = new MemorySink();
    let stdout = '';
    let result: Awaited<ReturnType<typeof runSandbox>> | undefined;
    let seenGateway: string[] = [];
    let unavailable: string | null = null;

    before(async () => {
      unavailable = await sandboxUnavailable('docker');
      if (unavailable !== null) return;
      useDockerNetwork('gateway-container');
      // A gateway image of an earlier AEGIS (another relay): removed when the current one is used.
      mkdirSync(join(STALE_ROOT, 'rootfs'), { recursive: true });
      const py = await engineImage(
        engineClient(),
        (await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' })).rootfs,
        DEFAULT_STATE_DIR,
      );
      await engineClient().getImage(py).tag({ repo: IMAGE_REPO, tag: STALE_KEY });
      assert.equal((await engineClient().listImages({ filters: { reference: [`${IMAGE_REPO}:${STALE_KEY}`] } })).length, 1);
      inet = await startFakeInternet();
      const demo = compilePolicy(parseManifestOrThrow(readFileSync(join(DEMO, 'agent.yaml'), 'utf8'), 'agent.yaml'));
      const policy = { ...demo, agent: { ...demo.agent, entrypoint: ['python3', '-c', PROBE] } };
      net = await startSandboxNetwork({
        network: policy.network,
        executionId: 'docker-gw-probe',
        agent: policy.agent.name,
        audit,
        config: { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' },
      });
      const docker = engineClient();
      result = await runSandbox({
        policy,
        manifestDir: DEMO,
        imageRootfs: (await resolveImage(policy.agent.runtime)).rootfs,
        isolation: 'docker',
        network: { kind: 'netns', path: net.netnsPath, resolvConf: net.resolvConfPath },
        extraEnv: net.env,
        stdout: (c) => {
          stdout += c.toString();
          // While the agent runs: the engine holds its gateway container.
          if (seenGateway.length === 0)
            void docker
              .listContainers({ filters: { label: [`${LABEL_ROLE}=net-gateway`] } })
              .then((l) => (seenGateway = l.map((c) => c.Labels[LABEL_RUN] ?? '')));
        },
        stderr: 'inherit',
      });
      await net.close();
    });
    after(async () => {
      useDockerNetwork('auto');
      await net?.close();
      await inet?.close();
    });

    const line = (probe: string): string => new RegExp(`^${probe} (.*)$`, 'm').exec(stdout)?.[1] ?? `(no ${probe} line in ${stdout})`;

    it("runs in the gateway container's namespace, with no capability and no ICMP or raw socket", (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      assert.equal(result?.status, 'exited', result?.error?.message);
      assert.equal(result?.exitCode, 0, stdout);
      assert.equal(
        line('ifaces'),
        "['aegis-void', 'eth0', 'lo']",
        "the relay's namespace (the host's sandbox namespace has only eth0 and lo)",
      );
      assert.ok(seenGateway.length > 0, 'a gateway container was running');
      assert.equal(line('capeff'), '0000000000000000');
      assert.equal(line('icmp_socket'), 'PermissionError EACCES');
      assert.equal(line('raw_socket'), 'PermissionError EPERM');
    });

    it('cannot use the relay directly, and what the sandbox table refuses is refused at once', (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      assert.match(line('relay_direct'), /^(ConnectionResetError ECONNRESET|b'')$/);
      assert.equal(line('tcp22'), 'ConnectionRefusedError ECONNREFUSED');
      assert.equal(line('tcp6'), 'ConnectionRefusedError ECONNREFUSED');
    });

    it("names resolve only through the host's gateway, which audits them", (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      assert.equal(line('dns_allowed'), '198.51.100.10');
      assert.match(line('dns_denied'), /^gaierror/);
      assert.ok(audit.find('net.dns', 'allow', { name: 'api.openai.com' }).length >= 1);
      assert.ok(audit.find('net.dns', 'deny', { name: 'attacker.com' }).length >= 1);
    });

    it("the refused attempts are the gateway's net.blocked events, as under crun", (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      assert.ok(audit.find('net.blocked', 'deny', { protocol: 'tcp' }).length >= 1, JSON.stringify(audit.events));
      assert.ok(audit.find('net.blocked', 'deny', { protocol: 'ipv6' }).length >= 1, JSON.stringify(audit.events));
    });

    it('removes the gateway images of earlier versions (engine tag and state folder)', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      assert.equal(existsSync(STALE_ROOT), false);
      assert.deepEqual(await engineClient().listImages({ filters: { reference: [`${IMAGE_REPO}:${STALE_KEY}`] } }), []);
    });

    it('leaves nothing: no container of the run in the engine, no relay dialer on this host', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const left = await engineClient().listContainers({ all: true, filters: { label: [`${LABEL_ROLE}=net-gateway`] } });
      assert.deepEqual(
        left.filter((c) => seenGateway.includes(c.Labels[LABEL_RUN] ?? '')).map((c) => c.Names),
        [],
      );
      assert.deepEqual(dialersOf(process.pid), []);
    });
  },
);

describe(
  'docker gateway-container mode: aegis run killed mid-run',
  { ...requirementsOrSkip(['ip', 'nft', 'nsenter']), timeout: 180_000 },
  () => {
    it("the dialer ends with AEGIS, and the next run's sweep removes the gateway container", async (t) => {
      if (!requireOrSkip(t, await sandboxUnavailable('docker'))) return;
      const home = mkdtempSync(join(tmpdir(), 'aegis-docker-gw-home-'));
      const dir = mkdtempSync('/var/tmp/aegis-docker-gw-');
      chmodSync(dir, 0o755);
      mkdirSync(join(dir, 'agent'), { mode: 0o755 });
      const file = join(dir, 'agent', 'agent.yaml');
      writeFileSync(
        file,
        `version: "1.0"\nagent:\n  name: docker-gw-lost\n  runtime: "python:3.11"\n  entrypoint: ["python3", "-c", "import sys, time\\nprint('up', flush=True)\\ntime.sleep(float(sys.argv[1]))"]\npermissions:\n  network:\n    allow: ["api.openai.com:443"]\n  execution_time: 60s\n`,
      );
      const env = { ...process.env, AEGIS_HOME: home, AEGIS_DOCKER_NETWORK: 'gateway-container', AEGIS_UPSTREAM_DNS: `${UPSTREAM_DNS}:53` };
      const state = join(dir, 'state');
      const docker = engineClient();
      try {
        const child = spawn(process.execPath, [AEGIS_BIN, 'run', file, '--isolation', 'docker', '--state-dir', state, '--', '60'], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env,
        });
        let err = '';
        child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`agent did not start: ${err}`)), 60_000);
          child.stdout.on('data', (b: Buffer) => {
            if (b.toString().includes('up')) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
        const [id] = readdirSync(join(state, 'runs'));
        assert.ok(id !== undefined);
        const gateways = () =>
          docker.listContainers({ all: true, filters: { label: [`${LABEL_RUN}=${id}`, `${LABEL_ROLE}=net-gateway`] } });
        assert.equal((await gateways()).length, 1, 'the run has its gateway container');
        const dialer = dialersOf(child.pid!);
        assert.equal(dialer.length, 1, 'and its dialer');
        // Nothing of AEGIS's environment reaches the dialer (regression: the operator's whole environment), and it runs as the agent.
        assert.equal(readFileSync(`/proc/${dialer[0]}/environ`, 'utf8'), 'PATH=/usr/sbin:/usr/bin:/sbin:/bin\0');
        const status = readFileSync(`/proc/${dialer[0]}/status`, 'utf8');
        assert.match(status, /^Uid:\t101000\t101000\t101000\t101000$/m);
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        // Its input (from AEGIS) is gone: the dialer ends by itself.
        for (let i = 0; i < 50 && readdirSync('/proc').includes(dialer[0]!); i++) await new Promise((r) => setTimeout(r, 100));
        assert.ok(!readdirSync('/proc').includes(dialer[0]!), 'the dialer outlived AEGIS');
        const next = spawn(process.execPath, [AEGIS_BIN, 'run', file, '--isolation', 'docker', '--state-dir', state, '--', '0'], {
          stdio: 'ignore',
          env,
        });
        assert.equal(await new Promise((r) => next.once('exit', r)), 0);
        assert.deepEqual(
          (await gateways()).map((c) => c.Names),
          [],
        );
        assert.deepEqual(
          (await docker.listContainers({ all: true, filters: { label: [`${LABEL_RUN}=${id}`] } })).map((c) => c.Names),
          [],
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
        rmSync(home, { recursive: true, force: true });
      }
    });
  },
);

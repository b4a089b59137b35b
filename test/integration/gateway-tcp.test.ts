/**
 * The generic TCP path against real servers on the fake internet: PostgreSQL at
 * db.internal:5432 (psql, psycopg2), SSH at git.example.com:22 (OpenSSH client against
 * dropbear), a raw echo at bench.test:9001. Clients run in the sandbox's namespace without any
 * proxy support; allowed connections work, denied ones are refused at once (reset) with the
 * reason in the audit log, with the host's IPv4 forwarding off and on. Upstream failures of an
 * allowed destination are `error` outcomes, not denials.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { startSandboxNetwork, type SandboxNetwork } from '../../src/gateway/index.js';
import { DB_ADDRESS, RAW_ECHO_PORT, SSH_ADDRESS, startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { inNetns, MemorySink, networkPolicy, requirementsOrSkip } from './gateway-support.js';

const ALLOW = [
  'api.openai.com',
  'db.internal:5432',
  'git.example.com:22',
  `bench.test:${RAW_ECHO_PORT}`,
  'closed.internal:7777',
  'bench.test:7000',
];
const config = { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' };
const PG_ENV = { PGPASSWORD: 'agent-pw', PGCONNECT_TIMEOUT: '8' };

/** Python: connect to host:port and report how it ended (refused, reset, timeout, data, ...). */
const CONNECT_PY = `
import socket, sys, json
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=8)
    s.sendall(b"hello\\n")
    s.settimeout(8)
    data = s.recv(100)
    out = "data" if data else "eof"
except ConnectionRefusedError:
    out = "refused"
except ConnectionResetError:
    out = "reset"
except socket.timeout:
    out = "timeout"
except OSError as e:
    out = "oserror:" + str(e.errno)
print(json.dumps({"result": out}))
`;

describe(
  'egress gateway: generic TCP (real PostgreSQL and SSH servers)',
  { ...requirementsOrSkip(['ip', 'nft', 'python3', 'psql', 'ssh', 'dropbear', 'dropbearkey', 'runuser']), timeout: 240_000 },
  () => {
    let inet: FakeInternet;
    let net: SandboxNetwork;
    const audit = new MemorySink();
    let ns: string;

    before(async () => {
      inet = await startFakeInternet({ postgres: true, ssh: true });
      net = await startSandboxNetwork({
        network: networkPolicy(ALLOW),
        executionId: 'exec-tcp',
        agent: 'tcp-tests',
        audit,
        config,
        blockedPollMs: 200,
      });
      ns = net.netnsName;
    });
    after(async () => {
      await net?.close();
      await inet?.close();
    });

    const tryConnect = async (host: string, port: number): Promise<{ result: string }> => {
      const r = await inNetns(ns, ['python3', '-c', CONNECT_PY, host, String(port)]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as { result: string };
    };

    it('captures exactly the ports the policy names (besides 53/80/443)', () => {
      assert.deepEqual(net.tcpPorts, [22, 5432, 7000, 7777, RAW_ECHO_PORT]);
      assert.equal(net.env.ALL_PROXY, undefined, 'no ALL_PROXY (httpx would need socksio)');
    });

    it('psql reaches an allowed db.internal:5432 directly (no proxy support in the client)', async () => {
      const r = await inNetns(
        ns,
        ['psql', 'postgresql://agent@db.internal:5432/app?sslmode=disable', '-Atc', 'select name from items order by id'],
        PG_ENV,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'first\nsecond');
      const ev = await audit.eventually('net.connect', 'allow', { mode: 'transparent-tcp', host: 'db.internal', port: 5432 });
      assert.equal(ev.length, 1);
      assert.equal(ev[0]!.reason, 'net.allowed.exact');
      assert.equal(ev[0]!.payload.upstream, DB_ADDRESS);
    });

    it('psycopg2 reaches it too, with the proxy variables set (they do not apply to PostgreSQL: the same decision)', async () => {
      const py = `import psycopg2; c = psycopg2.connect(host="db.internal", port=5432, dbname="app", user="agent", password="agent-pw", connect_timeout=8); cur = c.cursor(); cur.execute("select count(*) from items"); print(cur.fetchone()[0])`;
      const r = await inNetns(ns, ['python3', '-c', py], { ...net.env });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), '2');
    });

    it('the same client to a port not in the allowlist is refused at once (TCP reset), and counted', async () => {
      const r = await inNetns(ns, ['psql', 'postgresql://agent@db.internal:5433/app?sslmode=disable', '-Atc', 'select 1'], PG_ENV);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /Connection refused/);
      // A reset, not a timeout: the kind of failure shows the refusal came at once.
      assert.equal((await tryConnect('db.internal', 5433)).result, 'refused');
      const ev = await audit.eventually('net.blocked', 'deny', { protocol: 'tcp' }, 3000);
      assert.ok(
        ev.some((e) =>
          (e.payload.destinations as Array<{ address: string; port: number }>).some((d) => d.address === DB_ADDRESS && d.port === 5433),
        ),
      );
    });

    it('an allowed port on a host the policy does not allow there is reset at once, with the policy reason', async () => {
      // attacker.com is not resolvable through the gateway: dial its address directly.
      assert.equal((await tryConnect('198.51.100.66', 5432)).result, 'reset');
      const ev = await audit.eventually('net.connect', 'deny', { mode: 'transparent-tcp', host: '198.51.100.66', port: 5432 });
      assert.equal(ev[0]?.reason, 'net.denied.ip_literal');
      // An allowed name's address, on a port allowed only for another name: denied by port.
      const r = await inNetns(ns, ['getent', 'hosts', 'db.internal']);
      assert.equal(r.code, 0, r.stderr);
      const p = await tryConnect(DB_ADDRESS, 22);
      assert.equal(p.result, 'reset');
      const byPort = await audit.eventually('net.connect', 'deny', { mode: 'transparent-tcp', host: 'db.internal', port: 22 });
      assert.equal(byPort[0]?.reason, 'net.denied.port');
    });

    it('SSH to an allowed git.example.com:22 reaches the server banner; to another host it is refused', async () => {
      const ssh = (host: string) =>
        inNetns(ns, [
          'ssh',
          '-v',
          '-o',
          'BatchMode=yes',
          '-o',
          'StrictHostKeyChecking=no',
          '-o',
          'UserKnownHostsFile=/dev/null',
          '-o',
          'ConnectTimeout=8',
          `git@${host}`,
          'true',
        ]);
      const ok = await ssh('git.example.com');
      assert.match(ok.stderr, /remote software version dropbear/);
      assert.match(ok.stderr, /Permission denied \(publickey\)/, 'the server answered; only authentication failed');
      const ev = await audit.eventually('net.connect', 'allow', { mode: 'transparent-tcp', host: 'git.example.com', port: 22 });
      assert.equal(ev[0]?.payload.upstream, SSH_ADDRESS);
      const denied = await ssh('198.51.100.66');
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /Connection (refused|reset|closed)|kex_exchange_identification/);
      assert.doesNotMatch(denied.stderr, /timed out/);
    });

    it('an allowed destination whose upstream refuses is an error outcome, not a denial', async () => {
      // bench.test:7000 is allowed, and nothing listens there.
      const r = await inNetns(ns, ['getent', 'hosts', 'bench.test']);
      assert.equal(r.code, 0, r.stderr);
      const t = await tryConnect('bench.test', 7000);
      assert.equal(t.result, 'reset');
      const ev = audit.events.filter((e) => e.action === 'net.connect' && e.payload.port === 7000);
      assert.equal(ev.length, 1);
      assert.equal(ev[0]!.decision, 'error');
      assert.equal(ev[0]!.reason, 'gateway.upstream_failed');
    });

    it('a rule with any port (bench.test:*) captures every other TCP port too; other hosts are reset', async () => {
      const anyAudit = new MemorySink();
      const anyNet = await startSandboxNetwork({
        network: networkPolicy(['bench.test:*']),
        executionId: 'exec-tcp-any',
        audit: anyAudit,
        config,
        blockedPollMs: 200,
      });
      try {
        assert.equal(anyNet.anyTcpPort, true);
        const r = await inNetns(anyNet.netnsName, ['getent', 'hosts', 'bench.test']);
        assert.equal(r.code, 0, r.stderr);
        const run = (host: string, port: number) => inNetns(anyNet.netnsName, ['python3', '-c', CONNECT_PY, host, String(port)]);
        // 9001 is named by no rule: the any-port listener finds the port in conntrack.
        assert.equal(JSON.parse((await run('bench.test', RAW_ECHO_PORT)).stdout).result, 'data');
        const ev = await anyAudit.eventually('net.connect', 'allow', { mode: 'transparent-tcp', host: 'bench.test', port: RAW_ECHO_PORT });
        assert.equal(ev[0]?.reason, 'net.allowed.exact');
        assert.equal(JSON.parse((await run('198.51.100.66', 6000)).stdout).result, 'reset');
        assert.equal(
          (await anyAudit.eventually('net.connect', 'deny', { mode: 'transparent-tcp', host: '198.51.100.66', port: 6000 }))[0]?.reason,
          'net.denied.ip_literal',
        );
      } finally {
        await anyNet.close();
      }
    });

    for (const forwarding of ['0', '1']) {
      it(`fast refusals do not depend on the host's forwarding (net.ipv4.ip_forward=${forwarding}); allowed raw TCP still echoes`, async (t) => {
        const saved = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
        writeFileSync('/proc/sys/net/ipv4/ip_forward', forwarding);
        t.after(() => writeFileSync('/proc/sys/net/ipv4/ip_forward', saved));
        const echo = await tryConnect('bench.test', RAW_ECHO_PORT);
        assert.equal(echo.result, 'data');
        for (const [host, port, how] of [
          ['198.51.100.66', 6000, 'refused'],
          ['198.51.100.66', RAW_ECHO_PORT, 'reset'],
          ['10.0.0.5', 22, 'reset'],
        ] as const) {
          assert.equal((await tryConnect(host, port)).result, how, `${host}:${port}`);
        }
        // Other protocols get an ICMP error at once instead of silence: UDP to another port.
        const udp = await inNetns(ns, [
          'python3',
          '-c',
          'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.connect(("198.51.100.66", 5353)); s.send(b"x"); s.recv(10)',
        ]);
        assert.notEqual(udp.code, 0);
        assert.doesNotMatch(udp.stderr, /timed out/);
      });
    }
  },
);

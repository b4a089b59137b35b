/**
 * Fail secure: the enforcement stays when the gateway is gone, and does not depend on the
 * rules inside the sandbox's namespace (which gVisor's netstack would bypass).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startSandboxNetwork } from '../../src/gateway/index.js';
import { destroySandboxNet, hostTableExists, releaseSlot, sweepStaleSandboxNets } from '../../src/gateway/netns/adapter.js';
import type { SandboxNetPlan } from '../../src/gateway/netns/plan.js';
import { startFakeInternet, UPSTREAM_DNS, type FakeInternet } from './gateway-fake-internet.js';
import { inNetns, MemorySink, networkPolicy, requirementsOrSkip } from './gateway-support.js';

const config = { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' };

describe('egress gateway: fail secure', { ...requirementsOrSkip(), timeout: 120_000 }, () => {
  let inet: FakeInternet;
  before(async () => {
    inet = await startFakeInternet();
  });
  after(async () => {
    await inet?.close();
  });

  // Regression: on a new machine (net.ipv4.ip_forward=0) the route lookup discarded the UDP probe
  // before any input/forward hook, so the drop escaped the audit log; after a Docker engine had
  // run once (ip_forward=1) it passed. The host's forwarding setting must not matter.
  for (const forwarding of ['0', '1'])
    it(`with the in-namespace table removed, the host-side table alone still confines the sandbox (net.ipv4.ip_forward=${forwarding})`, async (t) => {
      const saved = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
      writeFileSync('/proc/sys/net/ipv4/ip_forward', forwarding);
      t.after(() => writeFileSync('/proc/sys/net/ipv4/ip_forward', saved));
      const audit = new MemorySink();
      const net = await startSandboxNetwork({
        network: networkPolicy(['api.openai.com']),
        executionId: 'exec-hostonly',
        audit,
        config,
        blockedPollMs: 200,
      });
      try {
        const del = await inNetns(net.netnsName, ['nft', 'delete', 'table', 'inet', 'aegis']);
        assert.equal(del.code, 0, del.stderr);
        // Allowed traffic still works (captured on the host side).
        const ok = await inNetns(net.netnsName, ['curl', '-sS', '--max-time', '5', '--cacert', inet.caFile, 'https://api.openai.com/'], {});
        assert.equal(ok.code, 0, ok.stderr);
        // Direct TCP to another port, UDP to another port, ICMP and a spoofed source all go nowhere.
        const probes = `
import socket
def tcp():
    socket.create_connection(("198.51.100.66", 22), timeout=2)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"x", ("198.51.100.53", 5353)); s.recv(10)
def icmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
    s.sendto(b"\\x08\\x00\\xf7\\xff\\x00\\x00\\x00\\x00", ("198.51.100.66", 0)); data = s.recv(100)
    # A raw ICMP socket also receives the gateway's refusal (destination unreachable, type 3):
    # only an echo reply (type 0) would mean the ping got through.
    if data[(data[0] & 15) * 4] != 0: raise OSError("icmp type %d" % data[(data[0] & 15) * 4])
def gateway_host_ssh():
    socket.create_connection(("${net.gatewayAddress}", 22), timeout=2)
for f in (tcp, udp, icmp, gateway_host_ssh):
    try:
        f(); print(f.__name__, "REACHED")
    except OSError as e:
        print(f.__name__, "blocked")
`;
        const r = await inNetns(net.netnsName, ['python3', '-c', probes], {}, 20_000);
        assert.deepEqual(r.stdout.trim().split('\n'), ['tcp blocked', 'udp blocked', 'icmp blocked', 'gateway_host_ssh blocked'], r.stderr);
        // ... and the host table's counters alone still put every one of them in the audit log.
        for (const protocol of ['tcp', 'udp', 'icmp']) {
          assert.ok(
            (await audit.eventually('net.blocked', 'deny', { protocol, reason: 'gateway.no_route' }, 3000)).length >= 1,
            `net.blocked ${protocol}`,
          );
        }
        const named = audit
          .find('net.blocked', 'deny')
          .flatMap((e) => (e.payload.destinations as Array<{ address: string; port: number | null }>).map((d) => `${d.address}:${d.port}`));
        for (const d of ['198.51.100.66:22', '198.51.100.53:5353', '198.51.100.66:null', `${net.gatewayAddress}:22`])
          assert.ok(named.includes(d), `${d} in ${named.join(' ')}`);
        const attacker = await inNetns(net.netnsName, [
          'curl',
          '-sS',
          '--max-time',
          '5',
          '-k',
          '--resolve',
          'attacker.com:443:198.51.100.66',
          'https://attacker.com/',
        ]);
        assert.notEqual(attacker.code, 0);
        assert.equal(audit.find('net.connect', 'deny', { mode: 'transparent-tls', sni: 'attacker.com' }).length, 1);
      } finally {
        await net.close();
      }
    });

  it('when the gateway process dies, the sandbox has no network at all (no fallback)', async () => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./gateway-failsecure-main.js', import.meta.url))], {
      env: { ...process.env, GATEWAY_FAILSECURE_MAIN: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const info = await new Promise<{ plan: SandboxNetPlan; env: Record<string, string> }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('gateway child did not start')), 20_000);
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        if (buf.includes('\n')) {
          clearTimeout(timer);
          resolve(JSON.parse(buf.split('\n')[0]!) as { plan: SandboxNetPlan; env: Record<string, string> });
        }
      });
    });
    const plan = info.plan;
    try {
      const before = await inNetns(
        plan.netnsName,
        ['curl', '-sS', '--max-time', '5', '--cacert', inet.caFile, 'https://api.openai.com/'],
        info.env,
      );
      assert.equal(before.code, 0, before.stderr);
      const seenBefore = inet.requestsSeen().length;
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      assert.equal(await hostTableExists(plan), true, 'the host-side rules outlive the gateway');
      for (const args of [
        ['curl', '-sS', '--max-time', '3', '--cacert', inet.caFile, 'https://api.openai.com/'],
        [
          'curl',
          '-sS',
          '--max-time',
          '3',
          '--noproxy',
          '*',
          '--cacert',
          inet.caFile,
          '--resolve',
          'api.openai.com:443:198.51.100.10',
          'https://api.openai.com/',
        ],
        ['curl', '-sS', '--max-time', '3', 'http://198.51.100.10/'],
        ['dig', '+tries=1', '+time=2', '@198.51.100.53', 'api.openai.com'],
      ]) {
        const r = await inNetns(plan.netnsName, args, args.includes('--noproxy') ? {} : info.env);
        assert.notEqual(r.code, 0, `${args.join(' ')} worked after the gateway died: ${r.stdout}`);
      }
      assert.equal(inet.requestsSeen().length, seenBefore, 'nothing reached the fake internet after the crash');
      // The next gateway start (or an operator) sweeps what the dead gateway left behind.
      const swept = await sweepStaleSandboxNets(config.stateDir, config.sandboxSubnet);
      assert.deepEqual(
        swept.map((s) => s.id),
        [plan.id],
      );
      assert.equal(await hostTableExists(plan), false);
      assert.notEqual((await inNetns(plan.netnsName, ['true'])).code, 0, 'namespace removed');
    } finally {
      child.kill('SIGKILL');
      await destroySandboxNet(plan, `${config.stateDir}/net/${plan.id}`);
      await releaseSlot(`${config.stateDir}/net-slots`, plan.slot);
    }
  });
});

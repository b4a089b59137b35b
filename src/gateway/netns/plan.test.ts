import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../../test-support/errors.js';
import { GatewayError } from '../errors.js';
import {
  hostLinkBatch,
  hostRuleset,
  namespaceSetupScript,
  parseSubnet,
  planSandboxNet,
  proxyEnv,
  resolvConf,
  sandboxRuleset,
  GUEST_LINK,
  socksUrl,
  slotsInUse,
  subnetConflicts,
  subnetContains,
  teardownBatch,
  teardownScript,
  type HostRoute,
} from './plan.js';

const ports = {
  dns: 40001,
  httpProxy: 40002,
  socks: 40003,
  transparentHttp: 40004,
  transparentTls: 40005,
  tcp: new Map([
    [22, 40006],
    [5432, 40007],
  ]),
};

describe('planSandboxNet', () => {
  it('gives slot n the n-th /30, gateway .1 and sandbox .2', () => {
    const p = planSandboxNet('0a1b2c3d', 65, '10.201.0.0/16');
    assert.deepEqual(
      [p.hostAddress, p.sandboxAddress, p.netnsName, p.netnsPath, p.hostIf, p.hostTable],
      ['10.201.1.5', '10.201.1.6', 'aegis-0a1b2c3d', '/run/netns/aegis-0a1b2c3d', 'aeh0a1b2c3d', 'aegis_0a1b2c3d'],
    );
    assert.ok(p.hostIf.length <= 15 && p.sandboxIfTemp.length <= 15, 'interface names fit IFNAMSIZ');
  });
  it('refuses ids that are not 8 hex digits (they end up in commands and rules)', () => {
    assert.throws(
      () => planSandboxNet('x; rm -rf', 0, '10.201.0.0/16'),
      (e: unknown) => e instanceof GatewayError && e.code === 'gateway.netns_failed',
    );
  });
  it('refuses slots outside the subnet', () => {
    assert.equal(parseSubnet('10.201.0.0/28').slots, 4);
    assert.throws(
      () => planSandboxNet('00000000', 4, '10.201.0.0/28'),
      (e: unknown) => e instanceof GatewayError && e.code === 'gateway.netns_exhausted',
    );
  });
  it('refuses subnets with host bits or odd prefixes', () => {
    for (const s of ['10.201.0.1/16', '10.0.0.0/8', '10.201.0.0/30', 'x/16']) assert.throws(() => parseSubnet(s), GatewayError, s);
  });
});

/** `ip -j -4 route show table all` on the CI host (Debian 12), 2026-11-25, trimmed to dst/dev/table. */
const HOST_ROUTES: HostRoute[] = [
  { dst: 'default', dev: 'eth0' },
  { dst: '172.17.0.0/16', dev: 'docker0' },
  { dst: '192.0.2.0/24', dev: 'eth0' },
  { dst: '127.0.0.0/8', dev: 'lo', table: 'local' },
  { dst: '127.0.0.1', dev: 'lo', table: 'local' },
  { dst: '127.255.255.255', dev: 'lo', table: 'local' },
  { dst: '172.17.0.1', dev: 'docker0', table: 'local' },
  { dst: '172.17.255.255', dev: 'docker0', table: 'local' },
  { dst: '192.0.2.2', dev: 'eth0', table: 'local' },
  { dst: '192.0.2.255', dev: 'eth0', table: 'local' },
];

describe('subnetConflicts', () => {
  it('the default subnet is free on the CI host (LAN 192.0.2.0/24, docker 172.17.0.0/16, resolver 10.255.255.53 via default)', () => {
    assert.deepEqual(subnetConflicts('10.201.0.0/16', HOST_ROUTES), []);
    assert.equal(subnetContains('10.201.0.0/16', '10.255.255.53'), false);
  });
  it("the gateway's own veths and the default route are not conflicts", () => {
    const own = [...HOST_ROUTES, { dst: '10.201.0.0/30', dev: 'aeh0a1b2c3d' }, { dst: '10.201.0.1', dev: 'aeh0a1b2c3d', table: 'local' }];
    assert.deepEqual(subnetConflicts('10.201.0.0/16', own), []);
  });
  describe('when the subnet overlaps a host route', () => {
    it('a route inside it, one containing it, and a host address in it are all reported', () => {
      assert.deepEqual(
        subnetConflicts('172.17.0.0/16', HOST_ROUTES).map((r) => r.dst),
        ['172.17.0.0/16', '172.17.0.1', '172.17.255.255'],
      );
      assert.deepEqual(
        subnetConflicts('10.201.0.0/16', [{ dst: '10.0.0.0/8', dev: 'tun0' }]).map((r) => r.dst),
        ['10.0.0.0/8'],
      );
      assert.deepEqual(
        subnetConflicts('10.201.0.0/16', [{ dst: '10.201.255.253', dev: 'wg0' }]).map((r) => r.dst),
        ['10.201.255.253'],
      );
      assert.deepEqual(
        subnetConflicts('10.201.0.0/16', [
          { dst: '10.202.0.0/16', dev: 'wg0' },
          { dst: '10.200.255.255', dev: 'wg0' },
        ]),
        [],
      );
    });
  });
});

describe('slotsInUse', () => {
  it('the /30s of the subnet routed on the gateway’s own veths (another state dir’s networks), by slot', () => {
    const routes: HostRoute[] = [
      { dst: '10.201.0.4/30', dev: 'aehdeadbeef' },
      { dst: '10.201.1.0/30', dev: 'aeh01234567', table: 'main' },
      { dst: '10.201.0.8/30', dev: 'eth0' }, // not a veth of ours: subnetConflicts refuses it instead
      { dst: '10.202.0.0/30', dev: 'aeh89abcdef' }, // another subnet
      { dst: 'default', dev: 'eth0' },
    ];
    assert.deepEqual(
      [...slotsInUse('10.201.0.0/16', routes)].sort((a, b) => a - b),
      [1, 64],
    );
    assert.deepEqual([...slotsInUse('10.201.0.0/16', [])], []);
  });
});

describe('rulesets', () => {
  const p = planSandboxNet('0a1b2c3d', 0, '10.201.0.0/16');
  it('host table: redirect DNS/80/443/proxy ports, accept only the listeners, drop the rest and all forwarding', () => {
    const r = hostRuleset(p, ports);
    assert.match(r, /^create table inet aegis_0a1b2c3d\n/);
    assert.doesNotMatch(r, /delete/);
    assert.match(r, /iifname "aeh0a1b2c3d" ip saddr 10\.201\.0\.2 meta l4proto \{ tcp, udp \} th dport 53 dnat ip to 10\.201\.0\.1:40001/);
    assert.match(r, /tcp dport 443 dnat ip to 10\.201\.0\.1:40005/);
    assert.match(r, /tcp dport \{ 40001, 40002, 40003, 40004, 40005, 40006, 40007 \} accept\n\s+iifname "aeh0a1b2c3d" jump blocked\n\s+\}/);
    assert.match(r, /chain forward \{[^}]*iifname "aeh0a1b2c3d" jump blocked\s+oifname "aeh0a1b2c3d" drop/);
  });
  it('host table: every port the policy names goes to its own listener, and its source becomes the original destination', () => {
    const r = hostRuleset(p, ports);
    assert.match(
      r,
      /iifname "aeh0a1b2c3d" ip saddr 10\.201\.0\.2 tcp dport \{ 22, 5432 \} dnat ip to 10\.201\.0\.1 : tcp dport map \{ 22 : 40006, 5432 : 40007 \}/,
    );
    const restore = /chain restore_dst \{\n([\s\S]*?)\n {2}\}/.exec(r)?.[1] ?? '';
    assert.deepEqual(
      restore
        .trim()
        .split('\n')
        .map((l) => l.trim()),
      [
        'type nat hook input priority 100; policy accept;',
        'iifname "aeh0a1b2c3d" ip saddr 10.201.0.2 ip daddr 10.201.0.1 tcp dport { 40006, 40007 } snat ip to ct original ip daddr',
      ],
    );
    const none = hostRuleset(p, { ...ports, tcp: new Map() });
    assert.doesNotMatch(none, /restore_dst|tcp dport map/);
  });
  it('host table: with an any-port rule, every other TCP port goes to one more listener, after the named ones', () => {
    const r = hostRuleset(p, { ...ports, tcpAny: 40008 });
    const pre = /chain prerouting \{\n([\s\S]*?)\n {2}\}/.exec(r)?.[1] ?? '';
    const rules = pre
      .trim()
      .split('\n')
      .map((l) => l.trim());
    assert.equal(rules.at(-1), 'iifname "aeh0a1b2c3d" ip saddr 10.201.0.2 meta l4proto tcp dnat ip to 10.201.0.1:40008');
    assert.match(rules.at(-2)!, /tcp dport map \{ 22 : 40006, 5432 : 40007 \}$/);
    assert.match(r, /ip daddr 10\.201\.0\.1 tcp dport \{ 40006, 40007, 40008 \} snat ip to ct original ip daddr/);
    assert.match(r, /tcp dport \{ 40001, 40002, 40003, 40004, 40005, 40006, 40007, 40008 \} accept/);
    assert.match(sandboxRuleset(p, [22], true), /\n\s+meta l4proto tcp accept\n\s+jump blocked\n/);
  });
  it('regression: host table drops and counts in prerouting, after DNAT and before the route lookup (ip_forward=0 dropped uncounted)', () => {
    const r = hostRuleset(p, ports);
    const admit = /chain admit \{\n([\s\S]*?)\n {2}\}/.exec(r)?.[1] ?? '';
    const rules = admit
      .trim()
      .split('\n')
      .map((l) => l.trim());
    assert.equal(rules[0], 'type filter hook prerouting priority dstnat + 10; policy accept;');
    assert.deepEqual(rules.slice(1), [
      'iifname "aeh0a1b2c3d" ip saddr 10.201.0.2 ip daddr 10.201.0.1 udp dport 40001 accept',
      'iifname "aeh0a1b2c3d" ip saddr 10.201.0.2 ip daddr 10.201.0.1 tcp dport { 40001, 40002, 40003, 40004, 40005, 40006, 40007 } accept',
      'iifname "aeh0a1b2c3d" jump blocked',
    ]);
  });
  it('sandbox table: output policy drop, no IPv6 out, only DNS, gateway ports, 80/443 and the captured ports', () => {
    assert.match(sandboxRuleset(p, [22, 5432]), /tcp dport \{ 80, 443, 22, 5432 \} accept\n\s+jump blocked\n\s+\}/);
    // Regression (issue 18): a `delete table` in the load made every commit wait for an RCU grace period.
    assert.match(sandboxRuleset(p), /^create table inet aegis\n/);
    assert.doesNotMatch(sandboxRuleset(p), /delete/);
    const r = sandboxRuleset(p);
    assert.match(
      r,
      /type filter hook output priority filter; policy drop;\n\s+oifname "lo" accept\n\s+oifname "aegisvm0" ip daddr 169\.254\.77\.2 accept\n\s+meta nfproto ipv6 jump blocked\n/,
    );
    assert.match(r, /ip daddr 10\.201\.0\.1 tcp dport \{ 53, 3128, 1080 \} accept/);
    assert.match(r, /tcp dport \{ 80, 443 \} accept\n\s+jump blocked\n\s+\}/);
  });
  it('sandbox table: a microVM guest on the tap is forwarded under the output rules, counted when refused, and leaves as the sandbox address', () => {
    const chain = (r: string, name: string): string[] =>
      (new RegExp(`chain ${name} \\{\n([\\s\\S]*?)\n {2}\\}`).exec(r)?.[1] ?? '')
        .trim()
        .split('\n')
        .map((l) => l.trim());
    const r = sandboxRuleset(p, [22], false, true);
    assert.deepEqual(chain(r, 'forward'), [
      'type filter hook forward priority filter; policy drop;',
      `iifname "${GUEST_LINK.tap}" oifname "eth0" jump guest_out`,
      `iifname "eth0" oifname "${GUEST_LINK.tap}" ct state established,related accept`,
    ]);
    assert.deepEqual(chain(r, 'guest_out'), [
      'meta nfproto ipv6 jump blocked',
      'ip saddr 169.254.77.2 ip daddr 10.201.0.1 tcp dport { 53, 3128, 1080, 3129 } accept',
      'ip saddr 169.254.77.2 udp dport 53 accept',
      'ip saddr 169.254.77.2 tcp dport { 80, 443, 22 } accept',
      'jump blocked',
    ]);
    assert.deepEqual(chain(r, 'guest_nat'), [
      'type nat hook postrouting priority srcnat; policy accept;',
      `iifname "${GUEST_LINK.tap}" oifname "eth0" ip saddr 169.254.77.2 snat ip to 10.201.0.2`,
    ]);
    assert.match(chain(sandboxRuleset(p, [], true), 'guest_out').join('\n'), /^ip saddr 169\.254\.77\.2 meta l4proto tcp accept$/m);
  });
  it('both tables: one named counter per class, destination sets, and the counting chain ends in an unconditional reject (fast refusal)', () => {
    for (const r of [sandboxRuleset(p), hostRuleset(p, ports)]) {
      for (const c of ['tcp', 'udp', 'icmp', 'ipv6', 'other']) assert.match(r, new RegExp(`counter blocked_${c} \\{ \\}`));
      for (const set of ['blocked_dst4', 'blocked_ip4', 'blocked_dst6', 'blocked_ip6'])
        assert.match(r, new RegExp(`set ${set} \\{ type [^;]+; size 1024; flags dynamic; counter; \\}`));
      const chain = /chain blocked \{\n([\s\S]*?)\n {2}\}/.exec(r)?.[1] ?? '';
      const rules = chain
        .trim()
        .split('\n')
        .map((l) => l.trim());
      assert.equal(rules.at(-1), 'counter name "blocked_other" reject with icmpx admin-prohibited');
      assert.ok(
        rules.every((l) => l.endsWith(' drop') || l.includes(' reject with ') || / update @blocked_(dst|ip)[46] \{ [^}]+ \}$/.test(l)),
        'every rule drops or rejects, or only names the destination',
      );
      assert.ok(
        rules.filter((l) => l.includes(' reject with ')).every((l) => /(^| )counter name "blocked_[a-z0-9]+" reject with /.test(l)),
        'nothing is rejected uncounted',
      );
      assert.ok(rules.includes('meta l4proto tcp counter name "blocked_tcp" reject with tcp reset'), 'TCP is refused with a reset');
      assert.ok(
        rules.indexOf('meta nfproto ipv6 counter name "blocked_ipv6" reject with icmpx admin-prohibited') <
          rules.indexOf('meta l4proto tcp counter name "blocked_tcp" reject with tcp reset'),
        'IPv6 TCP counts as ipv6',
      );
    }
  });
  it('env and resolv.conf point at the gateway', () => {
    assert.equal(proxyEnv(p).HTTPS_PROXY, 'http://10.201.0.1:3128');
    // Regression: ALL_PROXY=socks5h:// made httpx (the OpenAI SDK) fail without the socksio package.
    assert.deepEqual(Object.keys(proxyEnv(p)).sort(), ['HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']);
    assert.equal(socksUrl(p), 'socks5h://10.201.0.1:1080');
    assert.match(resolvConf(p), /^nameserver 10\.201\.0\.1$/m);
  });
});

describe('generated setup and teardown commands (issue 18: a few processes, not one per step)', () => {
  const p = planSandboxNet('0a1b2c3d', 65, '10.201.0.0/16');
  const tools = { nft: '/usr/sbin/nft', ip: '/usr/sbin/ip' };

  it('the host batch makes the namespace before the veth whose sandbox end goes into it, and brings up only the host end', () => {
    assert.deepEqual(hostLinkBatch(p).trimEnd().split('\n'), [
      'netns add aegis-0a1b2c3d',
      'link add aeh0a1b2c3d type veth peer name aes0a1b2c3d netns aegis-0a1b2c3d',
      'addr add 10.201.1.5/30 dev aeh0a1b2c3d',
      'link set aeh0a1b2c3d up',
    ]);
  });

  it('the namespace script stops at the first failure and loads the ruleset after the sysctls and before any link is up', () => {
    const lines = namespaceSetupScript(p, tools).split('\n');
    assert.equal(lines[0], 'set -e');
    const nft = lines.indexOf('/usr/sbin/nft -f -');
    const firstUp = lines.findIndex((l) => / up$/.test(l));
    const lastSysctl = lines.map((l) => l.startsWith('echo ')).lastIndexOf(true);
    assert.ok(nft > 0 && lastSysctl < nft && nft < firstUp, `order: sysctls ${lastSysctl}, nft ${nft}, first link up ${firstUp}`);
    assert.ok(lines.includes('echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'));
    assert.ok(lines.includes('echo 0 > /proc/sys/net/ipv6/conf/aes0a1b2c3d/accept_ra'));
    assert.equal(lines.at(-2), 'AEGIS_IP_BATCH', 'the here-document is closed');
  });

  it('no ip batch line starts with a global option (`ip -batch` refuses `-6` on a line)', () => {
    const batchLines = [
      ...hostLinkBatch(p).split('\n'),
      ...teardownBatch(p).split('\n'),
      ...namespaceSetupScript(p, tools).split("<<'AEGIS_IP_BATCH'\n")[1]!.split('\n'),
    ];
    assert.ok(batchLines.includes('route add ::/0 dev eth0'), 'the IPv6 default route by its prefix');
    assert.deepEqual(
      batchLines.filter((l) => l.startsWith('-')),
      [],
    );
  });

  it('teardown takes the host end down and strips its address before the namespace goes', () => {
    assert.deepEqual(teardownBatch(p).trimEnd().split('\n'), [
      'link set aeh0a1b2c3d down',
      'addr flush dev aeh0a1b2c3d',
      'netns del aegis-0a1b2c3d',
    ]);
  });

  it('refuses to generate a command with anything but plain words in it (fail secure)', () => {
    const bad = { ...p, netnsName: 'aegis-x; reboot' };
    assert.throws(() => hostLinkBatch(bad), hasCode(GatewayError, 'gateway.netns_failed'));
    assert.throws(() => teardownBatch(bad), hasCode(GatewayError, 'gateway.netns_failed'));
    assert.throws(() => namespaceSetupScript(p, { ...tools, nft: '/usr/sbin/nft $(id)' }), hasCode(GatewayError, 'gateway.netns_failed'));
    assert.throws(
      () => teardownScript(p, bgTools, { runDir: '/run/aegis/net/x y', slotLock: '/run/aegis/net-slots/0' }),
      hasCode(GatewayError, 'gateway.netns_failed'),
    );
  });

  const bgTools = { ...tools, rm: '/usr/bin/rm', grep: '/usr/bin/grep' };
  const paths = { runDir: '/run/aegis/net/0a1b2c3d', slotLock: '/run/aegis/net-slots/0' };
  it('background teardown: waits for its stdin to close (it owns the slot lock by then), then the batch and the host table', () => {
    const lines = teardownScript(p, bgTools, paths).split('\n');
    assert.equal(lines[0], 'read -r _ || true');
    assert.ok(lines.includes('/usr/sbin/nft delete table inet aegis_0a1b2c3d 2>/dev/null &'));
    assert.ok(lines.includes(`if /usr/sbin/ip -force -batch - <<'AEGIS_IP_BATCH'`));
    assert.ok(lines.join('\n').includes(teardownBatch(p)));
  });
  it('background teardown: the slot lock goes last, only when the address is gone and the lock still names this network', () => {
    const lines = teardownScript(p, bgTools, paths).trimEnd().split('\n');
    assert.equal(
      lines.at(-1),
      `if [ $ok = 1 ] && /usr/bin/grep -qF '"id":"0a1b2c3d"' /run/aegis/net-slots/0; then /usr/bin/rm -f /run/aegis/net-slots/0; fi`,
    );
    assert.ok(lines.indexOf('wait') < lines.length - 1, 'after the host table is deleted');
  });
});

describe('the tools broker port (3129)', () => {
  const p = planSandboxNet('0a1b2c3d', 0, '10.201.0.0/16');
  it('is closed unless a broker listens: neither table lets 3129 through without one', () => {
    assert.doesNotMatch(hostRuleset(p, ports), /3129/);
    assert.match(sandboxRuleset(p), /ip daddr 10\.201\.0\.1 tcp dport \{ 53, 3128, 1080 \} accept/);
    assert.equal(proxyEnv(p).AEGIS_TOOLS_URL, undefined);
  });
  it('with a broker: gateway:3129 goes to its listener, admitted from the sandbox only, and the agent is told where it is', () => {
    const r = hostRuleset(p, { ...ports, tools: 40009 });
    assert.match(r, /iifname "aeh0a1b2c3d" ip saddr 10\.201\.0\.2 ip daddr 10\.201\.0\.1 tcp dport 3129 dnat ip to 10\.201\.0\.1:40009/);
    assert.match(
      r,
      /ip saddr 10\.201\.0\.2 ip daddr 10\.201\.0\.1 tcp dport \{ 40001, 40002, 40003, 40004, 40005, 40006, 40007, 40009 \} accept/,
    );
    // Before the generic TCP capture, so a rule naming port 3129 elsewhere cannot take the broker's traffic.
    assert.ok(r.indexOf('tcp dport 3129 dnat') < r.indexOf('tcp dport map'));
    assert.match(sandboxRuleset(p, [], false, true), /ip daddr 10\.201\.0\.1 tcp dport \{ 53, 3128, 1080, 3129 \} accept/);
    const env = proxyEnv(p, true);
    assert.equal(env.AEGIS_TOOLS_URL, 'http://10.201.0.1:3129');
    assert.equal(env.NO_PROXY, 'localhost,127.0.0.1,::1,10.201.0.1');
    assert.equal(env.no_proxy, env.NO_PROXY);
  });
});

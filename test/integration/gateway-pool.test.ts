/**
 * The pool of sandbox networks prepared ahead (src/gateway/netns/pool.ts, issue 18), with real
 * namespaces, veths and nftables: refill and claim, two AEGIS processes claiming at once, the
 * sweep (ready entries kept, half-prepared ones removed), stale entries, a pooled network that
 * cannot be told from one built at start and carries nothing of an earlier run, and the
 * teardown in the background. Root, ip, nft and python3; under the integration lock.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startSandboxNetwork, type SandboxNetwork } from '../../src/gateway/index.js';
import {
  claimSlot,
  createSandboxLink,
  destroySandboxNet,
  hostTableExists,
  releaseSlot,
  sweepStaleSandboxNets,
} from '../../src/gateway/netns/adapter.js';
import { parseBlockedTable } from '../../src/gateway/netns/blocked.js';
import { planSandboxNet, type SandboxNetPlan } from '../../src/gateway/netns/plan.js';
import {
  claimPooledNet,
  drainNetPool,
  POOL_ENTRY_MAX_AGE_MS,
  poolTag,
  prepareNet,
  refillNetPool,
  type PoolKey,
} from '../../src/gateway/netns/pool.js';
import { parseLockOwner } from '../../src/host/pid-lock.js';
import { inNetns, MemorySink, networkPolicy, requirementsOrSkip } from './gateway-support.js';

const STATE = '/run/aegis-test-pool';
const SUBNET = '10.201.64.0/20';
const KEY: PoolKey = { tcpPorts: [], anyTcpPort: false, tools: false };
const config = { upstreamDns: { host: '198.51.100.53', port: 53 }, sandboxSubnet: SUBNET, stateDir: STATE };
const POOL = `${STATE}/net-pool`;
const SLOTS = `${STATE}/net-slots`;

async function cleanup(): Promise<void> {
  await drainNetPool(STATE, SUBNET);
  // claimed or half-made networks of earlier runs of this file: their owners are dead
  await sweepStaleSandboxNets(STATE, SUBNET);
  await rm(STATE, { recursive: true, force: true });
}

async function ready(): Promise<string[]> {
  return (await readdir(POOL).catch(() => [] as string[])).filter((n) => n.endsWith('.ready')).sort();
}

async function lockOf(slot: number): Promise<Record<string, unknown> | null> {
  return parseLockOwner<Record<string, unknown>>(await readFile(`${SLOTS}/${slot}`, 'utf8').catch(() => ''));
}

async function waitFor(cond: () => Promise<boolean> | boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const MAIN = fileURLToPath(new URL('./gateway-pool-main.js', import.meta.url));

/** Another AEGIS process preparing one pooled network; it has exited when this resolves. */
function prepareInChild(): string {
  const r = spawnSync(process.execPath, [MAIN, 'prepare', STATE, SUBNET], {
    env: { ...process.env, GATEWAY_POOL_MAIN: '1' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

/** What a sandbox sees of its network, with the plan's addresses and names replaced by placeholders. */
async function snapshot(n: { netnsName: string; plan: SandboxNetPlan }): Promise<unknown> {
  const r = await inNetns(n.netnsName, [
    'sh',
    '-c',
    'ip -j addr; echo ===; ip -j -4 route; echo ===; ip -j -6 route; echo ===; ip -j neigh; echo ===; nft list ruleset; echo ===; ' +
      'for f in all default lo eth0; do for k in disable_ipv6 accept_ra autoconf accept_dad addr_gen_mode; do ' +
      'printf "%s/%s=%s\\n" $f $k "$(cat /proc/sys/net/ipv6/conf/$f/$k)"; done; done; cat /proc/sys/net/ipv4/ip_forward',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const octets = n.plan.hostAddress.split('.');
  const network = [...octets.slice(0, 3), Number(octets[3]) - 1].join('.'); // the /30's first address
  const text = r.stdout
    .split(`${network}/30`)
    .join('NETWORK/30')
    .split(n.plan.hostAddress)
    .join('GATEWAY')
    .split(n.plan.sandboxAddress)
    .join('SANDBOX')
    .split(n.plan.id)
    .join('ID');
  const [addr, route4, route6, neigh, ruleset, sysctls] = text.split('===\n');
  const links = (JSON.parse(addr!) as Array<Record<string, unknown>>).map((l) => ({
    ifname: l.ifname,
    flags: l.flags,
    operstate: l.operstate,
    mtu: l.mtu,
    addrs: (l.addr_info as Array<Record<string, unknown>>).map((a) => `${String(a.family)} ${String(a.local)}/${String(a.prefixlen)}`),
  }));
  const json = (t: string | undefined): unknown => JSON.parse(t?.trim() || '[]');
  return { links, route4: json(route4), route6: json(route6), neigh: json(neigh), ruleset, sysctls };
}

async function conntrack(ns: string): Promise<string> {
  const r = await inNetns(ns, ['cat', '/proc/net/nf_conntrack']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

describe('sandbox network pool', { ...requirementsOrSkip(['ip', 'nft', 'python3']), timeout: 120_000 }, () => {
  before(cleanup);
  after(cleanup);

  it('refill prepares networks up to the target; a claim makes one the claimer’s, for its key only', async () => {
    assert.equal(await refillNetPool(STATE, SUBNET, KEY, 2), 2);
    assert.equal(await refillNetPool(STATE, SUBNET, KEY, 2), 0, 'already full');
    const tag = poolTag(SUBNET, KEY);
    assert.equal((await ready()).filter((n) => n.startsWith(`${tag}.`)).length, 2);
    assert.equal(await claimPooledNet(STATE, SUBNET, { ...KEY, tcpPorts: [22] }, 'exec-other'), null, 'no network for another key');
    const plan = await claimPooledNet(STATE, SUBNET, KEY, 'exec-1');
    assert.ok(plan);
    try {
      const lock = await lockOf(plan.slot);
      assert.equal(lock?.id, plan.id);
      assert.equal(lock?.execution, 'exec-1');
      assert.equal(lock?.pid, process.pid);
      assert.equal(lock?.pooled, undefined);
      assert.deepEqual(
        (await readdir(POOL)).filter((n) => n.includes(plan.id)),
        [],
        'its entry is gone',
      );
      assert.equal((await ready()).length, 1);
      assert.ok(existsSync(plan.netnsPath));
    } finally {
      await destroySandboxNet(plan, `${STATE}/net/${plan.id}`);
      await releaseSlot(SLOTS, plan.slot);
    }
    assert.equal(await drainNetPool(STATE, SUBNET), 1);
    assert.deepEqual(await ready(), []);
  });

  it('two AEGIS processes claiming at once never get the same network; a claimer that died is swept', async () => {
    await refillNetPool(STATE, SUBNET, KEY, 2);
    const claimers = Array.from({ length: 4 }, (_, i) =>
      spawn(process.execPath, [MAIN, 'claim', STATE, SUBNET, `exec-claim-${i}`], {
        env: { ...process.env, GATEWAY_POOL_MAIN: '1' },
        stdio: ['pipe', 'pipe', 'inherit'],
      }),
    );
    const outputs = claimers.map(
      (c) =>
        new Promise<string>((resolve) => {
          let out = '';
          c.stdout.on('data', (d: Buffer) => (out += d.toString()));
          c.once('exit', () => resolve(out));
        }),
    );
    // all four loaded and waiting, then released together
    await Promise.all(claimers.map((c) => new Promise<void>((resolve) => c.stdout.once('data', () => resolve()))));
    for (const c of claimers) c.stdin.end('go\n');
    const got = (await Promise.all(outputs)).map((o) => o.replace('ready\n', '').trim());
    const ids = got.filter((g) => g !== 'none');
    assert.equal(ids.length, 2, `claims: ${got.join(', ')}`);
    assert.equal(new Set(ids).size, 2, 'two different networks');
    assert.deepEqual(await ready(), []);
    // The claimers exited without tearing down: their networks are lost runs, swept and reported.
    const swept = await sweepStaleSandboxNets(STATE, SUBNET);
    assert.deepEqual(swept.map((s) => s.id).sort(), [...ids].sort());
    assert.ok(swept.every((s) => s.execution?.startsWith('exec-claim-')));
    for (const id of ids) assert.equal(existsSync(`/run/netns/aegis-${id}`), false);
  });

  it('the sweep keeps a ready network whose preparer exited and one being claimed, and removes a half-prepared one', async () => {
    const kept = prepareInChild();
    // A network whose preparer died before its entry was written: a pooled lock with a dead owner.
    const half = 'c0ffee00';
    const slot = await claimSlot(SLOTS, SUBNET, half, undefined, true);
    const plan = planSandboxNet(half, slot, SUBNET);
    await createSandboxLink(plan);
    const dead = spawnSync('true').pid;
    await writeFile(`${SLOTS}/${slot}`, JSON.stringify({ id: half, pooled: true, pid: dead, start: '1' }));
    assert.deepEqual(await sweepStaleSandboxNets(STATE, SUBNET), [], 'a pool network served no run: not reported as lost');
    assert.equal(existsSync(plan.netnsPath), false, 'the half-prepared network is gone');
    assert.equal(existsSync(`${SLOTS}/${slot}`), false);
    assert.equal(existsSync(`/run/netns/aegis-${kept}`), true, 'the ready one is kept');
    // Being claimed (entry renamed, lock not yet rewritten): kept too.
    const [entry] = await ready();
    const claimed = `${POOL}/${entry!.replace(/\.ready$/, '.claimed')}`;
    await rename(`${POOL}/${entry!}`, claimed);
    await sweepStaleSandboxNets(STATE, SUBNET);
    assert.equal(existsSync(`/run/netns/aegis-${kept}`), true, 'the one being claimed is kept');
    await rename(claimed, `${POOL}/${entry!}`);
    const plan2 = await claimPooledNet(STATE, SUBNET, KEY, 'exec-after-sweep');
    assert.equal(plan2?.id, kept);
    await destroySandboxNet(plan2, `${STATE}/net/${kept}`);
    await releaseSlot(SLOTS, plan2.slot);
  });

  describe('stale entries are torn down at claim, never handed out', () => {
    it('its namespace is gone', async () => {
      const id = prepareInChild();
      spawnSync('ip', ['netns', 'del', `aegis-${id}`]);
      assert.equal(await claimPooledNet(STATE, SUBNET, KEY, 'exec-stale'), null);
      assert.deepEqual(await readdir(POOL), []);
      assert.deepEqual(
        (await readdir(SLOTS)).filter((n) => /^[0-9]+$/.test(n)),
        [],
        'its slot is free',
      );
    });
    it('its entry names another subnet', async () => {
      const id = prepareInChild();
      const [entry] = await ready();
      const text = JSON.parse(await readFile(`${POOL}/${entry!}`, 'utf8')) as Record<string, unknown>;
      await writeFile(`${POOL}/${entry!}`, JSON.stringify({ ...text, subnet: '10.99.0.0/16' }));
      assert.equal(await claimPooledNet(STATE, SUBNET, KEY, 'exec-stale'), null);
      assert.equal(existsSync(`/run/netns/aegis-${id}`), false, 'torn down');
      assert.deepEqual(await readdir(POOL), []);
    });
    it('its slot lock names another network (the lock is left to its owner)', async () => {
      const id = prepareInChild();
      const [entry] = await ready();
      const { slot } = JSON.parse(await readFile(`${POOL}/${entry!}`, 'utf8')) as { slot: number };
      const other = JSON.stringify({ id: 'ffffffff', pooled: true, pid: process.pid, start: null });
      await writeFile(`${SLOTS}/${slot}`, other);
      assert.equal(await claimPooledNet(STATE, SUBNET, KEY, 'exec-stale'), null);
      assert.equal(existsSync(`/run/netns/aegis-${id}`), false, 'torn down');
      assert.equal(await readFile(`${SLOTS}/${slot}`, 'utf8'), other);
      await releaseSlot(SLOTS, slot);
    });
    it('prepared more than an hour ago (any key): the next refill tears it down', async () => {
      const id = prepareInChild();
      const [entry] = await ready();
      const old = new Date(Date.now() - POOL_ENTRY_MAX_AGE_MS - 60_000);
      await utimes(`${POOL}/${entry!}`, old, old);
      assert.equal(await refillNetPool(STATE, SUBNET, { ...KEY, tcpPorts: [5432] }, 0), 0);
      assert.equal(existsSync(`/run/netns/aegis-${id}`), false, 'torn down');
      assert.deepEqual(await readdir(POOL), []);
      assert.deepEqual(
        (await readdir(SLOTS)).filter((n) => /^[0-9]+$/.test(n)),
        [],
        'its slot is free',
      );
    });
    it('files that are no entry are ignored', async () => {
      await writeFile(`${POOL}/notes.txt`, 'x');
      await writeFile(`${POOL}/${poolTag(SUBNET, KEY)}.zz.ready`, '{}');
      assert.equal(await claimPooledNet(STATE, SUBNET, KEY, 'exec-stale'), null);
      assert.equal((await readdir(POOL)).length, 2);
      await rm(POOL, { recursive: true });
    });
  });

  it('a pooled network cannot be told from one built at start, and nothing of an earlier run carries over', async () => {
    const fresh = await startSandboxNetwork({
      network: networkPolicy(['example.test']),
      executionId: 'exec-fresh',
      audit: new MemorySink(),
      config,
    });
    let first: SandboxNetwork | null = null;
    let next: SandboxNetwork | null = null;
    try {
      await refillNetPool(STATE, SUBNET, KEY, 1);
      const [entry] = await ready();
      const pooledConfig = { ...config, netnsPool: 1 };
      first = await startSandboxNetwork({
        network: networkPolicy(['example.test']),
        executionId: 'exec-1',
        audit: new MemorySink(),
        config: pooledConfig,
      });
      assert.ok(entry!.includes(first.plan.id), 'the network came from the pool');
      assert.deepEqual(await snapshot(first), await snapshot(fresh));
      // The run leaves state behind in its namespace: conntrack entries, neighbours, blocked destinations.
      const r = await inNetns(first.netnsName, [
        'python3',
        '-c',
        `import socket
for host, port in (("${first.gatewayAddress}", 3128), ("198.51.100.66", 25)):
    try: socket.create_connection((host, port), timeout=1).close()
    except OSError: pass
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("${first.gatewayAddress}", 53))`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.notEqual(await conntrack(first.netnsName), '', 'the run left conntrack entries');
      const used = await snapshot(first);
      assert.notDeepEqual((used as { neigh: unknown[] }).neigh, [], 'and a neighbour entry');
      await first.close(); // the pool was refilled meanwhile
      next = await startSandboxNetwork({
        network: networkPolicy(['example.test']),
        executionId: 'exec-2',
        audit: new MemorySink(),
        config: pooledConfig,
      });
      assert.notEqual(next.plan.id, first.plan.id, 'a used network is never handed out again');
      assert.equal(existsSync(first.plan.netnsPath), false);
      assert.equal(await conntrack(next.netnsName), '', 'no conntrack entry');
      const t = await inNetns(next.netnsName, ['nft', '-j', 'list', 'table', 'inet', 'aegis']);
      const reading = parseBlockedTable(t.stdout, 'aegis');
      assert.deepEqual([...reading.destinations], [], 'no blocked destination');
      assert.ok(
        Object.values(reading.counts).every((c) => c.packets === 0),
        'no counted drop',
      );
      assert.deepEqual(await snapshot(next), await snapshot(fresh), 'same links, addresses, routes, neighbours (none), ruleset, sysctls');
    } finally {
      await next?.close();
      await first?.close();
      await fresh.close();
    }
  });

  it('a network of another state dir sharing the subnet (a pooled one, say) keeps its slot: a start here skips it', async () => {
    // Regression: a pool entry in another state dir held slot 1's addresses and the next sandbox
    // here got the same ones (its DNS went to the other veth and never answered).
    const other = `${STATE}-other`;
    const plan = await prepareNet(other, SUBNET, KEY);
    let n: SandboxNetwork | null = null;
    try {
      const slots = await readdir(SLOTS).catch(() => [] as string[]);
      assert.equal(slots.includes(String(plan.slot)), false, 'this state dir does not know that slot');
      n = await startSandboxNetwork({
        network: networkPolicy(['example.test']),
        executionId: 'exec-shared',
        audit: new MemorySink(),
        config,
      });
      assert.notEqual(n.plan.slot, plan.slot);
      assert.notEqual(n.gatewayAddress, plan.hostAddress);
    } finally {
      await n?.close();
      await drainNetPool(other, SUBNET);
      await rm(other, { recursive: true, force: true });
    }
  });

  it('teardown in the background: close() reads the last drops, returns, the teardown owns the slot until done, and leaves nothing', async () => {
    const audit = new MemorySink();
    const n = await startSandboxNetwork({
      network: networkPolicy(['example.test']),
      executionId: 'exec-bg',
      audit,
      config,
      teardown: 'background',
      blockedPollMs: 3_600_000, // only the final reading counts
    });
    const r = await inNetns(n.netnsName, [
      'python3',
      '-c',
      'import socket\ntry: socket.create_connection(("198.51.100.66", 25), timeout=1)\nexcept OSError: pass',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(audit.find('net.blocked', 'deny'), [], 'not read yet');
    await n.close();
    const blocked = audit.find('net.blocked', 'deny', { protocol: 'tcp' });
    assert.ok(blocked.length >= 1, 'the final reading, made by the teardown script, became an event');
    assert.ok(
      blocked.some((e) =>
        (e.payload.destinations as Array<{ address: string; port: number | null }>).some(
          (d) => d.address === '198.51.100.66' && d.port === 25,
        ),
      ),
      'naming the destination',
    );
    const lock = await lockOf(n.plan.slot);
    if (lock !== null) assert.notEqual(lock.pid, process.pid, 'the slot lock names the teardown process, not this one');
    assert.deepEqual(await sweepStaleSandboxNets(STATE, SUBNET), [], 'the sweep leaves a running teardown alone');
    assert.ok(
      await waitFor(
        async () => !existsSync(n.plan.netnsPath) && !(await hostTableExists(n.plan)) && !existsSync(`${SLOTS}/${n.plan.slot}`),
      ),
      'namespace, host table and slot lock gone',
    );
    assert.equal(existsSync(`/etc/netns/${n.netnsName}`), false);
    assert.equal(existsSync(`${STATE}/net/${n.plan.id}`), false);
  });
});

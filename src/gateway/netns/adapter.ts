/**
 * Executes a SandboxNetPlan with `ip` and `nft` (root), and tears it down. Every step of the
 * teardown tolerates "already gone", so `destroy` is safe after a partial `create`.
 *
 * Slots (the /30 each sandbox gets) are claimed with an exclusive lock file per slot under
 * `slotDir` (a pid-file lock, src/host/pid-lock.ts, with the sandbox id); a slot whose owner
 * is dead is reclaimed.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { describeFailure, findExecutable, runCommand } from '../../host/exec.js';
import { lockIsStale, ownerAlive, parseLockOwner, processStartTime, tryCreateLock } from '../../host/pid-lock.js';
import { GatewayError } from '../errors.js';
import { parseBlockedTable, type BlockedTableReading } from './blocked.js';
import {
  hostLinkBatch,
  hostRuleset,
  namespaceSetupScript,
  parseSubnet,
  planSandboxNet,
  sandboxRuleset,
  slotsInUse,
  subnetConflicts,
  teardownBatch,
  teardownScript,
  type HostRoute,
  type ListenerPorts,
  type SandboxNetPlan,
} from './plan.js';

async function run(cmd: string, args: readonly string[], input?: string): Promise<string> {
  const argv = [findExecutable(cmd) ?? cmd, ...args];
  const r = await runCommand(argv, { timeoutMs: 15_000, ...(input !== undefined ? { input } : {}) }).catch((err: unknown) => {
    throw new GatewayError('gateway.netns_failed', `${cmd} ${args.join(' ')}: ${(err as Error).message}`, { cause: err });
  });
  if (r.code !== 0) throw new GatewayError('gateway.netns_failed', describeFailure([cmd, ...args], r));
  return r.stdout;
}

/** Run, ignoring failure (teardown of things that may not exist). */
async function attempt(cmd: string, args: readonly string[], input?: string): Promise<void> {
  await run(cmd, args, input).catch(() => undefined);
}

/** What a slot lock file holds besides its owner (src/host/pid-lock.ts). */
export interface SlotLock {
  readonly id: string;
  /** The execution the network serves (absent in locks of older AEGIS versions). */
  readonly execution?: string;
  /**
   * A network prepared ahead for the pool (pool.ts): it outlives its preparer, so a dead owner
   * does not make it stale while its pool entry is there.
   */
  readonly pooled?: boolean;
}

/**
 * Refuse a sandbox subnet that overlaps anything the host routes (any table) other than the
 * gateway's own veths: `gateway.subnet_conflict`. Run before every sandbox network is built, since
 * the host's routes change (docker networks, VPNs, a test network). Resolves with the slots
 * already routed on the gateway's own veths (`slotsInUse`), for `claimSlot` to skip.
 */
export async function checkSubnetFree(subnet: string): Promise<Set<number>> {
  let routes: HostRoute[];
  try {
    routes = JSON.parse(await run('ip', ['-j', '-4', 'route', 'show', 'table', 'all'])) as HostRoute[];
  } catch (err) {
    throw new GatewayError('gateway.netns_failed', `reading the host's routes: ${String(err)}`, { cause: err });
  }
  const clash = subnetConflicts(subnet, routes);
  if (clash.length > 0) {
    const what = clash.map((r) => `${r.dst}${r.dev ? ` dev ${r.dev}` : ''}${r.table ? ` table ${r.table}` : ''}`).join(', ');
    throw new GatewayError(
      'gateway.subnet_conflict',
      `sandbox subnet ${subnet} overlaps host routes (${what}); set AEGIS_SANDBOX_SUBNET to an unused range`,
    );
  }
  return slotsInUse(subnet, routes);
}

/** Claim a free /30 slot in `subnet` for sandbox `id` (serving `execution`); returns the slot number. */
export async function claimSlot(
  slotDir: string,
  subnet: string,
  id: string,
  execution?: string,
  pooled = false,
  skip: ReadonlySet<number> = new Set(),
): Promise<number> {
  const { slots } = parseSubnet(subnet);
  await mkdir(slotDir, { recursive: true, mode: 0o700 });
  for (let slot = 0; slot < slots; slot++) {
    if (skip.has(slot)) continue; // routed on a veth this state dir does not know (checkSubnetFree)
    const path = `${slotDir}/${slot}`;
    let created: boolean;
    try {
      created = await tryCreateLock(path, {
        id,
        ...(execution !== undefined ? { execution } : {}),
        ...(pooled ? { pooled: true } : {}),
      } satisfies SlotLock);
    } catch (err) {
      throw new GatewayError('gateway.netns_failed', `slot lock ${path}: ${String(err)}`, { cause: err });
    }
    if (created) return slot;
    // taken (a stale one is freed by sweepStaleSandboxNets, which startSandboxNetwork runs first)
  }
  throw new GatewayError('gateway.netns_exhausted', `all ${slots} sandbox network slots in ${subnet} are in use`);
}

/** What the sweep removed of one dead gateway's sandbox network. */
export interface SweptNet {
  /** The network's id (plan id). */
  readonly id: string;
  /** The execution it served, when its slot lock says so. */
  readonly execution: string | null;
  readonly ownerPid: number;
  readonly netns: string;
  readonly hostInterface: string;
  readonly hostTable: string;
}

/**
 * Remove the networks of sandboxes whose gateway process is dead (crashed or killed): their
 * namespace, veth, host table and files, then the slot lock. Returns what was removed.
 * Until swept, such a sandbox has no network at all (its host table drops everything).
 */
export async function sweepStaleSandboxNets(stateDir: string, subnet: string): Promise<SweptNet[]> {
  const slotDir = `${stateDir}/net-slots`;
  let names: string[];
  try {
    names = await readdir(slotDir);
  } catch {
    return [];
  }
  const swept: SweptNet[] = [];
  for (const name of names) {
    const path = `${slotDir}/${name}`;
    if (!/^[0-9]+$/.test(name)) {
      // A lock being rewritten by a pool claim (`.<slot>.<pid>`) whose writer died.
      if (name.startsWith('.') && (await lockIsStale(path, 60_000))) await unlink(path).catch(() => undefined);
      continue;
    }
    const text = await readFile(path, 'utf8').catch(() => null);
    if (text === null) continue; // removed meanwhile
    const owner = parseLockOwner<SlotLock>(text);
    if (owner && ownerAlive(owner)) continue;
    // An unreadable lock may be one being written right now: leave it unless it is old.
    if (!owner && !(await lockIsStale(path, 60_000))) continue;
    if (owner?.pooled === true && typeof owner.id === 'string' && (await pooledNetHeld(stateDir, owner.id, path, text))) continue;
    if (owner && typeof owner.id === 'string') {
      try {
        const plan = planSandboxNet(owner.id, Number(name), subnet);
        await destroySandboxNet(plan, `${stateDir}/net/${plan.id}`);
        await removePoolFiles(stateDir, plan.id);
        // A network prepared for the pool served no run: not reported as lost.
        if (owner.pooled === true) {
          await unlink(path).catch(() => undefined);
          continue;
        }
        swept.push({
          id: owner.id,
          execution: owner.execution ?? null,
          ownerPid: owner.pid,
          netns: plan.netnsName,
          hostInterface: plan.hostIf,
          hostTable: plan.hostTable,
        });
      } catch {
        // a lock from another subnet or an unreadable id: only the lock is removed
      }
    }
    await unlink(path).catch(() => undefined);
  }
  return swept;
}

/** The pool's directory under the gateway's state dir (pool.ts; here for the sweep). */
export function poolDir(stateDir: string): string {
  return `${stateDir}/net-pool`;
}

/** Pool entry files of network `id` (`<tag>.<id>.ready` or `.claimed`). */
async function poolFilesOf(stateDir: string, id: string): Promise<string[]> {
  const names = await readdir(poolDir(stateDir)).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith(`.${id}.ready`) || n.endsWith(`.${id}.claimed`));
}

async function removePoolFiles(stateDir: string, id: string): Promise<void> {
  for (const n of await poolFilesOf(stateDir, id)) await unlink(`${poolDir(stateDir)}/${n}`).catch(() => undefined);
}

/**
 * Whether the network of a pooled slot lock whose preparer is dead must be kept: it is ready in
 * the pool, or a claimer is between taking its entry and rewriting the lock (its `.claimed`
 * entry was renamed less than a minute ago), or the lock changed since it was read (claimed meanwhile:
 * the next sweep judges the new owner). Checked in this order, each claim step happens before
 * the check that would miss it, so a network being claimed is never swept.
 */
async function pooledNetHeld(stateDir: string, id: string, lockPath: string, lockText: string): Promise<boolean> {
  const files = await poolFilesOf(stateDir, id);
  if (files.some((n) => n.endsWith('.ready'))) return true;
  for (const n of files.filter((f) => f.endsWith('.claimed'))) {
    const st = await stat(`${poolDir(stateDir)}/${n}`).catch(() => undefined);
    if (st && Date.now() - st.ctimeMs < 60_000) return true; // ctime: set by the rename that claimed it
  }
  const now = await readFile(lockPath, 'utf8').catch(() => null);
  return now !== null && now !== lockText;
}

export async function releaseSlot(slotDir: string, slot: number): Promise<void> {
  await unlink(`${slotDir}/${slot}`).catch(() => undefined);
}

/** Absolute path of a tool for `ip netns exec` (which would otherwise search $PATH inside the namespace). */
function tool(name: string): string {
  const path = findExecutable(name);
  if (path === null) throw new GatewayError('gateway.netns_failed', `${name} not found in the system directories`);
  return path;
}

/**
 * Create the namespace, the veth pair, addresses, routes and the in-namespace ruleset.
 *
 * Two processes, one after another (issue 18: one process per step cost ~90 ms):
 * 1. host `ip -batch -` (`hostLinkBatch`): the namespace, the veth pair, the host end up;
 * 2. `ip netns exec <ns> sh -c <script>` (`namespaceSetupScript`, generated from the plan alone,
 *    every word checked): the IPv6 sysctls as shell built-ins, `nft -f -` with the sandbox's
 *    ruleset on stdin, then `ip -batch -` for the rename to eth0, addresses, links up, routes.
 * SECURITY: the sandbox's ruleset is loaded before any link in the namespace is up: no packet
 * leaves unfiltered. `set -e`: the first failed step fails the script and so the whole creation
 * (`ip -batch` stops at its first failed line); the caller then runs `destroySandboxNet`.
 */
export async function createSandboxNet(p: SandboxNetPlan, tcpPorts: readonly number[] = [], anyTcpPort = false): Promise<void> {
  await createSandboxLink(p);
  await configureSandboxNamespace(p, tcpPorts, anyTcpPort);
}

/**
 * Step 1 of `createSandboxNet`: the namespace and the veth pair, the host end addressed and up
 * (the sandbox end stays down, with no address, until step 2). After it, the gateway can bind
 * its listeners to the host address while step 2 runs.
 */
export async function createSandboxLink(p: SandboxNetPlan): Promise<void> {
  await run('ip', ['-batch', '-'], hostLinkBatch(p));
}

/** Step 2 of `createSandboxNet`: everything inside the namespace (after `createSandboxLink`). */
export async function configureSandboxNamespace(
  p: SandboxNetPlan,
  tcpPorts: readonly number[] = [],
  anyTcpPort = false,
  tools = false,
): Promise<void> {
  const script = namespaceSetupScript(p, { nft: tool('nft'), ip: tool('ip') });
  await run('ip', ['netns', 'exec', p.netnsName, tool('sh'), '-c', script], sandboxRuleset(p, tcpPorts, anyTcpPort, tools));
}

/**
 * Read the `blocked_*` counters and destination sets of both tables (keys `sandbox` and `host`). The in-namespace
 * table drops (and counts) first for crun/runc; what passes it and is dropped on the host is
 * counted there, so the two never count the same packet. A table that cannot be read (deleted
 * from inside the sandbox, or already torn down) is left out and reported once on stderr.
 */
export function blockedCounterReader(p: SandboxNetPlan): () => Promise<Map<string, BlockedTableReading>> {
  const reported = new Set<string>();
  const sources: Array<[string, string, readonly string[]]> = [
    ['sandbox', 'aegis', ['ip', 'netns', 'exec', p.netnsName, tool('nft'), '-j', 'list', 'table', 'inet', 'aegis']],
    ['host', p.hostTable, ['nft', '-j', 'list', 'table', 'inet', p.hostTable]],
  ];
  return async () => {
    const out = new Map<string, BlockedTableReading>();
    await Promise.all(
      sources.map(async ([name, table, [cmd, ...args]]) => {
        try {
          out.set(name, parseBlockedTable(await run(cmd!, args), table));
        } catch (err) {
          if (!reported.has(name))
            process.stderr.write(`aegis gateway: ${p.netnsName}: ${name} drop counters unreadable: ${String(err)}\n`);
          reported.add(name);
        }
      }),
    );
    return out;
  };
}

/** Load the host-side table (after the listeners are up, since it names their ports). */
export async function applyHostRules(p: SandboxNetPlan, ports: ListenerPorts): Promise<void> {
  await run('nft', ['-f', '-'], hostRuleset(p, ports));
}

/** Write resolv.conf for the sandbox (bind-mount target) and for `ip netns exec`. */
export async function writeResolvConf(p: SandboxNetPlan, runDir: string, text: string): Promise<string> {
  // 0711: the runtime bind-mounts the file from inside the sandbox's user namespace, and the
  // agent reads it (0644, it names only the gateway's address); nobody else lists the dir.
  await mkdir(runDir, { recursive: true, mode: 0o711 });
  const path = `${runDir}/resolv.conf`;
  await writeFile(path, text, { mode: 0o644 });
  await mkdir(`/etc/netns/${p.netnsName}`, { recursive: true });
  await writeFile(`/etc/netns/${p.netnsName}/resolv.conf`, text, { mode: 0o644 });
  return path;
}

/** Remove everything `createSandboxNet`/`applyHostRules`/`writeResolvConf` made. */
export async function destroySandboxNet(p: SandboxNetPlan, runDir: string): Promise<void> {
  // Two processes at once (the table and the links are independent); `-force` goes on after a
  // line that fails (a veth or namespace already gone).
  // The veth is not deleted here: `ip link del` waits for the kernel's RCU grace periods
  // (15-25 ms measured, more than everything else of the teardown). Its host end is taken down
  // and stripped of its address instead (cheap), so from now on it neither receives nor routes
  // anything, and unmounting the namespace lets the kernel delete the pair itself (within tens
  // of ms, off this path) once no process holds the namespace.
  // LIMITATION: should a process still hold the namespace, the pair stays (host end down, no
  // address, a name no later sandbox reuses) until that process exits.
  await Promise.all([
    attempt('nft', ['delete', 'table', 'inet', p.hostTable]),
    attempt('ip', ['-force', '-batch', '-'], teardownBatch(p)),
    rm(`/etc/netns/${p.netnsName}`, { recursive: true, force: true }),
    rm(runDir, { recursive: true, force: true }),
  ]);
}

/** A teardown started in the background (`startBackgroundTeardown`), waiting until released. */
export interface BackgroundTeardown {
  /** Make the script the slot lock's owner and let it tear down; this process may exit at once. */
  release(): Promise<void>;
}

/**
 * `destroySandboxNet` off the critical path: one detached `sh` (under `timeout`, killed after
 * 30 s) runs `teardownScript`, which waits until `release()` and then tears down, after this
 * process has exited if need be. Started while the caller makes the final drop-counter reading,
 * so that its start costs no time after it. `release()` makes it the owner of the slot lock (pid
 * and start time), which it removes at the end; should it die first, the lock's owner is dead
 * and the next sweep tears the network down. Only for a network nothing runs in any more (the
 * sandbox is gone): until the script runs, the namespace keeps its rules and the gateway's
 * listeners are closed, so nothing can leave it. Rejects when the script cannot be started.
 */
export async function startBackgroundTeardown(
  p: SandboxNetPlan,
  runDir: string,
  slotDir: string,
  execution?: string,
): Promise<BackgroundTeardown> {
  const slotLock = `${slotDir}/${p.slot}`;
  const script = teardownScript(p, { ip: tool('ip'), nft: tool('nft'), rm: tool('rm'), grep: tool('grep') }, { runDir, slotLock });
  const child = spawn(tool('timeout'), ['-s', 'KILL', '30', tool('sh'), '-c', script], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('error', (err) => reject(new GatewayError('gateway.netns_failed', `background teardown: ${err.message}`, { cause: err })));
    child.once('spawn', () => resolve(child.pid!));
  });
  const letGo = (): void => {
    // Closing our end (not `end()`, whose pipe stays referenced until the child is gone) lets
    // the script go on, and this process exit without waiting for it.
    child.stdin?.destroy();
    child.unref();
  };
  return {
    release: async () => {
      try {
        const start = processStartTime(pid);
        if (start !== null) {
          // The lock names the script (`timeout`, which outlives its sh) as owner: written aside, renamed over.
          const tmp = `${slotDir}/.${p.slot}.${process.pid}`;
          await writeFile(tmp, JSON.stringify({ id: p.id, ...(execution !== undefined ? { execution } : {}), pid, start }), {
            mode: 0o600,
          });
          await rename(tmp, slotLock);
        }
      } catch {
        // The lock stays this process's: the script still removes it when done, or a sweep after this process is gone.
      } finally {
        letGo();
      }
    },
  };
}

/** Whether the host-side table of `p` is still loaded (tests check teardown with it). */
export async function hostTableExists(p: SandboxNetPlan): Promise<boolean> {
  return run('nft', ['list', 'table', 'inet', p.hostTable]).then(
    () => true,
    () => false,
  );
}

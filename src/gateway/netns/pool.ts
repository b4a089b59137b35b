/**
 * A pool of sandbox networks prepared ahead (issue 18): the namespace, the veth pair, the IPv6
 * sysctls, the in-namespace ruleset, addresses, links and routes do not depend on the run, only
 * on the few policy facts the in-namespace ruleset names (the captured TCP ports, whether every
 * TCP port is captured, whether a tools broker is reached). A run claims a prepared network whose
 * tag says it was built for exactly those facts, by the current code, in the configured subnet;
 * only the host table (its listener ports) and the files are made at claim time.
 *
 * Layout under the gateway's state dir: the slot lock (`net-slots/<slot>`, written by the
 * preparer with `pooled: true`) and one entry `net-pool/<tag>.<id>.ready` (JSON: id, slot,
 * subnet, tag) written once the network is complete. A claim renames the entry to
 * `<tag>.<id>.claimed` (atomic: of two claimers, one gets ENOENT and tries the next entry),
 * checks it, rewrites the slot lock with its own pid and execution (aside, then renamed over),
 * and removes the entry. From then on the network is the claimer's like a fresh one, and torn
 * down with the run.
 *
 * ARCHITECTURE NOTE: a pooled network is used by one run only, then destroyed; it is never
 * returned to the pool. Nothing ran in it before the claim (no agent process, no traffic from
 * one: no conntrack entry, no element in the `blocked_*` sets, no neighbour entry, no route or
 * address besides the plan's), so a run cannot tell it from one built at its start, nor see
 * anything of another run. Any doubt about an entry (unreadable, another subnet or tag, its slot
 * lock not naming it, its namespace or host interface gone) discards it: it is torn down and the
 * run takes the next one or builds its own (fail secure: never a weaker network).
 *
 * Sweep: a pooled slot lock outlives its preparer; sweepStaleSandboxNets keeps it while its
 * entry is ready or being claimed, and tears down one whose preparer died before the entry was
 * written (adapter.ts, `pooledNetHeld`). `drainNetPool` tears down every ready entry.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { parseLockOwner, selfOwner } from '../../host/pid-lock.js';
import { GatewayError } from '../errors.js';
import {
  checkSubnetFree,
  claimSlot,
  configureSandboxNamespace,
  createSandboxLink,
  destroySandboxNet,
  poolDir,
  releaseSlot,
  type SlotLock,
} from './adapter.js';
import { POOL_MAX_ENTRIES } from './pool-limits.js';
import { hostLinkBatch, namespaceSetupScript, planSandboxNet, sandboxRuleset, type SandboxNetPlan } from './plan.js';

/** What makes two prepared networks interchangeable: the inputs of the in-namespace ruleset. */
export interface PoolKey {
  readonly tcpPorts: readonly number[];
  readonly anyTcpPort: boolean;
  readonly tools: boolean;
}

export { POOL_MAX_ENTRIES } from './pool-limits.js';

/**
 * The tag of a key (16 hex digits): a digest of what the preparation generates for a reference
 * plan in `subnet` with that key. A change of the key, the subnet or the generated commands (a
 * new AEGIS version) changes the tag, so an entry prepared otherwise is never claimed.
 */
export function poolTag(subnet: string, key: PoolKey): string {
  const ref = planSandboxNet('00000000', 0, subnet);
  const h = createHash('sha256');
  h.update(`aegis-net-pool-1\0${subnet}\0${JSON.stringify(key)}\0`);
  h.update(`${hostLinkBatch(ref)}\0${namespaceSetupScript(ref, { nft: 'nft', ip: 'ip' })}\0`);
  h.update(sandboxRuleset(ref, key.tcpPorts, key.anyTcpPort, key.tools));
  return h.digest('hex').slice(0, 16);
}

interface PoolEntry {
  readonly id: string;
  readonly slot: number;
  readonly subnet: string;
  readonly tag: string;
}

const ENTRY = /^([0-9a-f]{16})\.([0-9a-f]{8})\.(ready|claimed)$/;

/** Parses an entry file (untrusted: whoever could write the state dir wrote it); null when malformed. */
function parseEntry(text: string): PoolEntry | null {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    if (typeof o !== 'object' || o === null) return null;
    const { id, slot, subnet, tag } = o;
    if (typeof id !== 'string' || typeof subnet !== 'string' || typeof tag !== 'string' || !Number.isSafeInteger(slot)) return null;
    return { id, slot: slot as number, subnet, tag };
  } catch {
    return null;
  }
}

/**
 * Prepare one network for the pool: a slot, the namespace with its links, sysctls and ruleset,
 * then the ready entry. On any failure what was built is torn down and the error thrown.
 */
export async function prepareNet(stateDir: string, subnet: string, key: PoolKey): Promise<SandboxNetPlan> {
  const slotDir = `${stateDir}/net-slots`;
  const busy = await checkSubnetFree(subnet);
  const id = randomBytes(4).toString('hex');
  const slot = await claimSlot(slotDir, subnet, id, undefined, true, busy);
  const plan = planSandboxNet(id, slot, subnet);
  try {
    await createSandboxLink(plan);
    await configureSandboxNamespace(plan, key.tcpPorts, key.anyTcpPort, key.tools);
    const dir = poolDir(stateDir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tag = poolTag(subnet, key);
    const tmp = `${dir}/.${id}.tmp`;
    await writeFile(tmp, JSON.stringify({ id, slot, subnet, tag } satisfies PoolEntry), { mode: 0o600 });
    await rename(tmp, `${dir}/${tag}.${id}.ready`);
    return plan;
  } catch (err) {
    await destroySandboxNet(plan, `${stateDir}/net/${id}`);
    await releaseSlot(slotDir, slot);
    throw err;
  }
}

/** Whether `path` exists (any type). */
async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Tear down a network whose entry this process holds (renamed to `.claimed`) and remove the
 * entry; its slot lock only when the lock still names it.
 */
async function discard(stateDir: string, entryPath: string, id: string, slot: number | null, subnet: string): Promise<void> {
  const slotDir = `${stateDir}/net-slots`;
  if (slot !== null) {
    try {
      await destroySandboxNet(planSandboxNet(id, slot, subnet), `${stateDir}/net/${id}`);
    } catch {
      // a slot outside this subnet: nothing of it can be named here
    }
    const lock = parseLockOwner<SlotLock>(await readFile(`${slotDir}/${slot}`, 'utf8').catch(() => ''));
    if (lock?.id === id) await releaseSlot(slotDir, slot);
  }
  await unlink(entryPath).catch(() => undefined);
}

/**
 * Take a ready network for `key` from the pool, for `execution`, or null when there is none.
 * Entries that fail a check are torn down on the way (see the note at the top).
 */
export async function claimPooledNet(stateDir: string, subnet: string, key: PoolKey, execution: string): Promise<SandboxNetPlan | null> {
  const dir = poolDir(stateDir);
  const slotDir = `${stateDir}/net-slots`;
  const tag = poolTag(subnet, key);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const m = ENTRY.exec(name);
    if (!m || m[1] !== tag || m[3] !== 'ready') continue;
    const id = m[2]!;
    const held = `${dir}/${tag}.${id}.claimed`;
    try {
      await rename(`${dir}/${name}`, held);
    } catch {
      continue; // another claimer took it
    }
    const entry = parseEntry(await readFile(held, 'utf8').catch(() => ''));
    const slot = entry !== null && entry.id === id ? entry.slot : null;
    let plan: SandboxNetPlan | null = null;
    try {
      if (entry !== null && entry.id === id && entry.subnet === subnet && entry.tag === tag) plan = planSandboxNet(id, entry.slot, subnet);
    } catch {
      plan = null;
    }
    const lockPath = plan ? `${slotDir}/${plan.slot}` : null;
    const lock = lockPath ? parseLockOwner<SlotLock>(await readFile(lockPath, 'utf8').catch(() => '')) : null;
    const intact =
      plan !== null &&
      lock?.id === id &&
      lock.pooled === true &&
      (await exists(plan.netnsPath)) &&
      (await exists(`/sys/class/net/${plan.hostIf}`));
    if (!intact || plan === null || lockPath === null) {
      await discard(stateDir, held, id, slot, subnet);
      continue;
    }
    try {
      const tmp = `${slotDir}/.${plan.slot}.${process.pid}`;
      await writeFile(tmp, JSON.stringify({ id, execution, ...selfOwner() }), { mode: 0o600 });
      await rename(tmp, lockPath);
    } catch (err) {
      await discard(stateDir, held, id, plan.slot, subnet);
      throw new GatewayError('gateway.netns_failed', `claiming pooled network ${id}: ${String(err)}`, { cause: err });
    }
    await unlink(held).catch(() => undefined);
    return plan;
  }
  return null;
}

/** Ready entries of `tag` and of all tags under `stateDir`. */
async function countReady(stateDir: string, tag: string): Promise<{ mine: number; all: number }> {
  const names = await readdir(poolDir(stateDir)).catch(() => [] as string[]);
  let mine = 0;
  let all = 0;
  for (const n of names) {
    const m = ENTRY.exec(n);
    if (!m) continue;
    all++;
    if (m[1] === tag && m[3] === 'ready') mine++;
  }
  return { mine, all };
}

/** A ready entry older than this (any tag) is torn down by the next refill: no tag, key or version lingers. */
export const POOL_ENTRY_MAX_AGE_MS = 60 * 60_000;

/** Tear down ready entries prepared more than POOL_ENTRY_MAX_AGE_MS ago (`now` in ms since the epoch); returns how many. */
export async function discardOldEntries(stateDir: string, now: number): Promise<number> {
  const dir = poolDir(stateDir);
  let n = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const m = ENTRY.exec(name);
    if (!m || m[3] !== 'ready') continue;
    const st = await stat(`${dir}/${name}`).catch(() => undefined);
    if (!st || now - st.mtimeMs <= POOL_ENTRY_MAX_AGE_MS) continue;
    const held = `${dir}/${m[1]}.${m[2]}.claimed`;
    try {
      await rename(`${dir}/${name}`, held);
    } catch {
      continue; // claimed meanwhile
    }
    const entry = parseEntry(await readFile(held, 'utf8').catch(() => ''));
    await discard(stateDir, held, m[2]!, entry !== null && entry.id === m[2] ? entry.slot : null, entry?.subnet ?? '');
    n++;
  }
  return n;
}

/**
 * Prepare networks for `key` until `target` are ready (never more than POOL_MAX_ENTRIES in all),
 * after tearing down entries older than POOL_ENTRY_MAX_AGE_MS. Returns how many were prepared.
 * Two processes refilling at once may prepare a few too many.
 */
export async function refillNetPool(stateDir: string, subnet: string, key: PoolKey, target: number): Promise<number> {
  const tag = poolTag(subnet, key);
  await discardOldEntries(stateDir, Date.now());
  let made = 0;
  for (;;) {
    const { mine, all } = await countReady(stateDir, tag);
    if (mine >= target || all >= POOL_MAX_ENTRIES) return made;
    await prepareNet(stateDir, subnet, key);
    made++;
  }
}

/** Tear down every ready network of the pool (any tag); returns how many. */
export async function drainNetPool(stateDir: string, subnet: string): Promise<number> {
  const dir = poolDir(stateDir);
  let n = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const m = ENTRY.exec(name);
    if (!m || m[3] !== 'ready') continue;
    const held = `${dir}/${m[1]}.${m[2]}.claimed`;
    try {
      await rename(`${dir}/${name}`, held);
    } catch {
      continue;
    }
    const entry = parseEntry(await readFile(held, 'utf8').catch(() => ''));
    await discard(stateDir, held, m[2]!, entry !== null && entry.id === m[2] ? entry.slot : null, entry?.subnet ?? subnet);
    n++;
  }
  return n;
}

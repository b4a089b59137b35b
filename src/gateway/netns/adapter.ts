/**
 * Executes a SandboxNetPlan with `ip` and `nft` (root), and tears it down. Every step of the
 * teardown tolerates "already gone", so `destroy` is safe after a partial `create`.
 *
 * Slots (the /30 each sandbox gets) are claimed with an exclusive lock file per slot under
 * `slotDir`, holding the owner's pid; a slot whose owner is dead is reclaimed.
 */
import { execFile } from 'node:child_process';
import { mkdir, open, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { GatewayError } from '../errors.js';
import { hostRuleset, parseSubnet, sandboxRuleset, type ListenerPorts, type SandboxNetPlan } from './plan.js';

function run(cmd: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) reject(new GatewayError('netns_failed', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Run, ignoring failure (teardown of things that may not exist). */
async function attempt(cmd: string, args: readonly string[]): Promise<void> {
  await run(cmd, args).catch(() => undefined);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Claim a free /30 slot in `subnet`; returns the slot number. */
export async function claimSlot(slotDir: string, subnet: string): Promise<number> {
  const { slots } = parseSubnet(subnet);
  await mkdir(slotDir, { recursive: true, mode: 0o700 });
  for (let slot = 0; slot < slots; slot++) {
    const path = `${slotDir}/${slot}`;
    for (let tries = 0; tries < 2; tries++) {
      try {
        const fh = await open(path, 'wx', 0o600);
        await fh.writeFile(String(process.pid));
        await fh.close();
        return slot;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new GatewayError('netns_failed', `slot lock ${path}: ${String(err)}`, { cause: err });
        const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim());
        if (Number.isInteger(owner) && owner > 0 && alive(owner)) break; // taken
        await unlink(path).catch(() => undefined); // stale: reclaim and retry once
      }
    }
  }
  throw new GatewayError('netns_exhausted', `all ${slots} sandbox network slots in ${subnet} are in use`);
}

export async function releaseSlot(slotDir: string, slot: number): Promise<void> {
  await unlink(`${slotDir}/${slot}`).catch(() => undefined);
}

/** Create the namespace, the veth pair, addresses, routes and the in-namespace ruleset. */
export async function createSandboxNet(p: SandboxNetPlan): Promise<void> {
  const inNs = (args: readonly string[]): Promise<string> => run('ip', ['netns', 'exec', p.netnsName, ...args]);
  await run('ip', ['netns', 'add', p.netnsName]);
  // No IPv6 at all in the sandbox (belt and braces with the nft rules).
  await inNs(['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  await run('ip', ['link', 'add', p.hostIf, 'type', 'veth', 'peer', 'name', p.sandboxIfTemp, 'netns', p.netnsName]);
  await run('ip', ['addr', 'add', `${p.hostAddress}/${p.prefix}`, 'dev', p.hostIf]);
  await run('ip', ['link', 'set', p.hostIf, 'up']);
  await inNs(['ip', 'link', 'set', p.sandboxIfTemp, 'name', p.sandboxIf]);
  await inNs(['sysctl', '-qw', `net.ipv6.conf.${p.sandboxIf}.disable_ipv6=1`]);
  await inNs(['ip', 'addr', 'add', `${p.sandboxAddress}/${p.prefix}`, 'dev', p.sandboxIf]);
  await inNs(['ip', 'link', 'set', 'lo', 'up']);
  await inNs(['ip', 'link', 'set', p.sandboxIf, 'up']);
  await inNs(['ip', 'route', 'add', 'default', 'via', p.hostAddress, 'dev', p.sandboxIf]);
  await run('ip', ['netns', 'exec', p.netnsName, 'nft', '-f', '-'], sandboxRuleset(p));
}

/** Load the host-side table (after the listeners are up, since it names their ports). */
export async function applyHostRules(p: SandboxNetPlan, ports: ListenerPorts): Promise<void> {
  await run('nft', ['-f', '-'], hostRuleset(p, ports));
}

/** Write resolv.conf for the sandbox (bind-mount target) and for `ip netns exec`. */
export async function writeResolvConf(p: SandboxNetPlan, runDir: string, text: string): Promise<string> {
  await mkdir(runDir, { recursive: true, mode: 0o755 });
  const path = `${runDir}/resolv.conf`;
  await writeFile(path, text, { mode: 0o644 });
  await mkdir(`/etc/netns/${p.netnsName}`, { recursive: true });
  await writeFile(`/etc/netns/${p.netnsName}/resolv.conf`, text, { mode: 0o644 });
  return path;
}

/** Remove everything `createSandboxNet`/`applyHostRules`/`writeResolvConf` made. */
export async function destroySandboxNet(p: SandboxNetPlan, runDir: string): Promise<void> {
  await attempt('nft', ['delete', 'table', 'inet', p.hostTable]);
  await attempt('ip', ['link', 'del', p.hostIf]);
  await attempt('ip', ['netns', 'del', p.netnsName]);
  await rm(`/etc/netns/${p.netnsName}`, { recursive: true, force: true });
  await rm(runDir, { recursive: true, force: true });
}

/** Whether the host-side table of `p` is still loaded (tests check teardown with it). */
export async function hostTableExists(p: SandboxNetPlan): Promise<boolean> {
  return run('nft', ['list', 'table', 'inet', p.hostTable]).then(
    () => true,
    () => false,
  );
}

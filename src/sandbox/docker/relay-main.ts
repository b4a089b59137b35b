/**
 * Entry point of the gateway relay (relay.ts): `relay-main.js relay <uid> <address/len> <gateway> <base64 of the
 * sandbox namespace's nft table> [<ipv6 address/len>]`
 * as the gateway container's init, `relay-main.js dial <uid> <gid>` on the host inside the sandbox
 * network namespace (started as root by nsenter: it drops to the agent's ids before it reads a
 * frame). Frames on stdin/stdout; diagnostics on stderr.
 */
import { runCommand } from '../../host/exec.js';
import { runDialer, runRelay } from './relay.js';

const [mode, ...args] = process.argv.slice(2);
const fail = (msg: string): never => {
  process.stderr.write(`aegis relay: ${msg}\n`);
  process.exit(2);
};
const id = (v: string | undefined): number => (v !== undefined && /^[1-9][0-9]{0,9}$/.test(v) ? Number(v) : fail(`bad id ${v}`));

if (mode === 'relay') {
  const [uid, address, gateway, inner, address6] = args;
  await runRelay({
    agentUid: id(uid),
    address: address ?? fail('no address'),
    gateway: gateway ?? fail('no gateway'),
    inner: Buffer.from(inner ?? fail('no table'), 'base64').toString('utf8'),
    ...(address6 !== undefined && address6 !== '' ? { address6 } : {}),
    read: async (argv) => (await runCommand(argv, { timeoutMs: 10_000 })).stdout,
    input: process.stdin,
    output: process.stdout,
    run: async (argv, input) => {
      const r = await runCommand(argv, { timeoutMs: 10_000, ...(input !== undefined ? { input } : {}) });
      if (r.code !== 0) process.stderr.write(`aegis relay: ${argv.join(' ')}: ${r.stderr}`);
      return r.code;
    },
  }).catch((err: unknown) => fail((err as Error).message));
  process.exit(0);
} else if (mode === 'dial') {
  const [uid, gid] = args;
  // The agent's ids: no capability is left once the uid is not 0. Verified (fail secure: a
  // dialer that still runs as root, or without these calls, exits before it reads a frame).
  const [u, g] = [id(uid), id(gid)];
  if (process.setgroups === undefined || process.setgid === undefined || process.setuid === undefined) fail('cannot change ids here');
  process.setgroups!([]);
  process.setgid!(g);
  process.setuid!(u);
  if (process.getuid?.() !== u || process.geteuid?.() !== u || process.getgid?.() !== g || process.getegid?.() !== g)
    fail(`could not drop to ${u}:${g}`);
  const stats = await runDialer({ input: process.stdin, output: process.stdout });
  if (stats.replaysDropped > 0)
    process.stderr.write(`aegis relay: ${stats.replaysDropped} replayed attempts dropped (too many in flight)\n`);
  process.exit(0);
} else fail(`unknown mode ${mode}`);

/**
 * Helper program for the network pool test: another AEGIS process. `prepare <stateDir> <subnet>`
 * prepares one pooled network and exits (its preparer is then dead, as after `aegis run`);
 * `claim <stateDir> <subnet> <execution>` waits for a line on stdin (so that several claimers
 * start together), claims one and prints its id or `none`, then exits without tearing it down.
 * Runs only with GATEWAY_POOL_MAIN=1.
 */
import { claimPooledNet, prepareNet, type PoolKey } from '../../src/gateway/netns/pool.js';

const KEY: PoolKey = { tcpPorts: [], anyTcpPort: false, tools: false };

async function main(): Promise<void> {
  const [op, stateDir, subnet, execution] = process.argv.slice(2);
  if (stateDir === undefined || subnet === undefined) throw new Error('usage: prepare|claim <stateDir> <subnet> [execution]');
  if (op === 'prepare') {
    const plan = await prepareNet(stateDir, subnet, KEY);
    process.stdout.write(`${plan.id}\n`);
    return;
  }
  if (op === 'claim') {
    process.stdout.write('ready\n');
    await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
    process.stdin.pause();
    const plan = await claimPooledNet(stateDir, subnet, KEY, execution ?? 'exec-claim');
    process.stdout.write(`${plan?.id ?? 'none'}\n`);
    return;
  }
  throw new Error(`unknown operation ${op}`);
}

if (process.env.GATEWAY_POOL_MAIN === '1') {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/**
 * Helper program for the fail-secure test: starts a sandbox network, prints its plan as JSON
 * and waits to be killed (SIGKILL, as a crash would). Runs only with GATEWAY_FAILSECURE_MAIN=1.
 */
import { startSandboxNetwork } from '../../src/gateway/index.js';
import { UPSTREAM_DNS } from './gateway-fake-internet.js';
import { MemorySink, networkPolicy } from './gateway-support.js';

async function main(): Promise<void> {
  const net = await startSandboxNetwork({
    network: networkPolicy(['api.openai.com']),
    executionId: 'exec-crash',
    audit: new MemorySink(),
    config: { upstreamDns: { host: UPSTREAM_DNS, port: 53 }, sandboxSubnet: '10.201.0.0/16', stateDir: '/run/aegis-test' },
  });
  process.stdout.write(`${JSON.stringify({ plan: net.plan, env: net.env })}\n`);
  setInterval(() => undefined, 60_000);
}

if (process.env.GATEWAY_FAILSECURE_MAIN === '1') {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}

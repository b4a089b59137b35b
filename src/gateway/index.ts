/**
 * The egress gateway's entry point for the sandbox runner.
 *
 *   const net = await startSandboxNetwork({ network: policy.network, executionId, audit, config });
 *   // run the sandbox in net.netnsPath, with net.env added to its environment and
 *   // net.resolvConfPath bind-mounted read-only at /etc/resolv.conf
 *   await net.close();
 *
 * FAIL SECURE: the promise resolves only once the namespace, every listener and the host-side
 * rules are in place; any failure tears down what was built and rejects, so the sandbox must
 * not start. If the gateway later dies, its listeners vanish but the rules stay: the sandbox
 * has no route anywhere else.
 *
 * What nftables drops is counted and becomes `net.blocked` audit events (BlockedMonitor), read
 * every `blockedPollMs` and once more in `close()`, before the tables are removed.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import type { InjectableSecret } from '../secrets/inject.js';
import type { ExecutionCa } from './intercept/ca.js';
import { Interceptor } from './intercept/terminate.js';
import type { Server } from 'node:net';
import type { AuditActor, AuditSink } from '../audit/event.js';
import type { EgressMatcher, NetworkPolicy } from '../policy/types.js';
import { compileEgress } from '../policy/net.js';
import type { GatewayConfig } from './config.js';
import { startDnsServer, type DnsServers } from './dns/server.js';
import { UpstreamResolver, type Resolver } from './dns/upstream.js';
import {
  applyHostRules,
  checkSubnetFree,
  claimSlot,
  configureSandboxNamespace,
  createSandboxLink,
  destroySandboxNet,
  blockedCounterReader,
  releaseSlot,
  sweepStaleSandboxNets,
  startBackgroundTeardown,
  writeResolvConf,
} from './netns/adapter.js';
import { claimPooledNet, refillNetPool, type PoolKey } from './netns/pool.js';
import { BlockedMonitor } from './blocked-monitor.js';
import { planSandboxNet, proxyEnv, RESERVED_CAPTURE_PORTS, resolvConf, socksUrl, toolsUrl, type SandboxNetPlan } from './netns/plan.js';
import { startHttpListener } from './proxy/http.js';
import { startSocksListener } from './proxy/socks.js';
import { startTransparentTlsListener } from './proxy/transparent-tls.js';
import { startTransparentTcpListener } from './proxy/transparent-tcp.js';
import { Session } from './session.js';

import { GatewayError } from './errors.js';
export { GatewayError, type GatewayErrorCode } from './errors.js';
export { loadGatewayConfig, type GatewayConfig } from './config.js';
export { JsonlFileSink } from './audit/jsonl-sink.js';
export { sweepStaleSandboxNets, type SweptNet } from './netns/adapter.js';
export { drainNetPool } from './netns/pool.js';

export interface StartSandboxNetworkOptions {
  /** The sandbox's network policy (Policy.network). */
  readonly network: NetworkPolicy;
  readonly executionId: string;
  /** Agent name, for audit events. */
  readonly agent?: string;
  readonly audit: AuditSink;
  readonly config: GatewayConfig;
  /** Injected for tests; default: compileEgress(network). */
  readonly matcher?: EgressMatcher;
  /** Injected for tests; default: the configured upstream resolver. */
  readonly resolver?: Resolver;
  /** How often the nftables drop counters become `net.blocked` events (ms); default 1000. */
  readonly blockedPollMs?: number;
  /**
   * Starts the MCP tools broker (src/tools) listening on the gateway's address, when the policy
   * declares tool servers: the sandbox then reaches it at `AEGIS_TOOLS_URL` (gateway:3129) and
   * the gateway closes it with the rest. Absent: no broker, port 3129 is refused like any other.
   */
  readonly tools?: (gatewayAddress: string) => Promise<{ readonly port: number; close(): Promise<void> }>;
  /**
   * This execution's secrets with their values (issue 12): the gateway terminates TLS for
   * their hosts and swaps the placeholders. Kept in the gateway's memory only.
   */
  readonly secrets?: readonly InjectableSecret[];
  /** The image's own CA bundle (PEM text), put before the execution's CA in the sandbox's bundle. */
  readonly imageCaBundle?: string;
  /** Whether the run may still use a secret's version (rotation overlap, expiry); see InterceptorOptions. */
  readonly secretStillValid?: (secret: string, version: number) => Promise<boolean>;
  /**
   * How `close()` removes the network. 'wait' (default): it resolves once the namespace, the
   * veth's address and the host table are gone. 'background': once the final drop counters are
   * read and the listeners closed, a detached process (started meanwhile) does the rest and
   * `close()` resolves at once (adapter.ts, `startBackgroundTeardown`; the sweep finishes it should that process die).
   * Only when nothing runs in the namespace any more: the caller's sandbox is gone.
   */
  readonly teardown?: 'wait' | 'background';
}

/** Where the sandbox finds the CA bundle (bind-mounted read-only over the image's Debian bundle). */
export const SANDBOX_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** The variables that make common clients trust the bundle (OpenSSL, Python requests/httpx, curl, Node, git). */
export function caBundleEnv(path = SANDBOX_CA_BUNDLE): Record<string, string> {
  return { SSL_CERT_FILE: path, REQUESTS_CA_BUNDLE: path, CURL_CA_BUNDLE: path, NODE_EXTRA_CA_CERTS: path, GIT_SSL_CAINFO: path };
}

/** The host's trust store for upstream verification: Debian's bundle, else Node's built-in roots. */
async function systemCas(): Promise<string[]> {
  try {
    const text = await readFile('/etc/ssl/certs/ca-certificates.crt', 'utf8');
    const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
    if (certs && certs.length > 0) return certs;
  } catch {
    /* no Debian bundle: Node's own */
  }
  return [...rootCertificates];
}

export interface SandboxNetwork {
  /** Network namespace for the OCI spec (`linux.namespaces: [{type: "network", path}]`). */
  readonly netnsPath: string;
  readonly netnsName: string;
  /** Proxy variables to add to the sandbox's environment (HTTP_PROXY/HTTPS_PROXY/NO_PROXY, both spellings). */
  readonly env: Readonly<Record<string, string>>;
  /** `socks5h://<gateway>:1080`, for clients configured for SOCKS5 explicitly (not in `env`). */
  readonly socksUrl: string;
  /** Destination ports captured by the generic TCP path (besides 53, 80 and 443), ascending. */
  readonly tcpPorts: readonly number[];
  /** Every other TCP port is captured too (a rule allows any port). */
  readonly anyTcpPort: boolean;
  /** File to bind-mount read-only at /etc/resolv.conf inside the sandbox. */
  readonly resolvConfPath: string;
  /** `http://<gateway>:3129` when a tools broker was started (also `env.AEGIS_TOOLS_URL`), else null. */
  readonly toolsUrl: string | null;
  readonly gatewayAddress: string;
  readonly sandboxAddress: string;
  readonly plan: SandboxNetPlan;
  /**
   * When TLS is terminated for this execution: the CA bundle file (image bundle + the
   * execution's CA) to bind-mount read-only at SANDBOX_CA_BUNDLE, and its variables (added to `env`).
   */
  readonly caBundlePath: string | null;
  /** Stop the listeners and remove the namespace, nft tables and files; the veth is taken down and the kernel deletes it with the namespace. Idempotent. */
  close(): Promise<void>;
}

/**
 * Ports that get a generic TCP listener of their own: every port a rule names (`host:5432`),
 * except those with listeners of their own (53, 80, 443). When a rule allows any port
 * (`host:*`, see `capturesAnyTcpPort`), one more listener takes every other TCP port.
 */
export function capturedTcpPorts(network: NetworkPolicy): number[] {
  const ports = new Set<number>();
  for (const r of network.rules) if (r.ports.kind === 'one' && !RESERVED_CAPTURE_PORTS.has(r.ports.port)) ports.add(r.ports.port);
  return [...ports].sort((a, b) => a - b);
}

/** Whether a rule allows any port (`host:*`, `cidr:*`): then every TCP port is captured. */
export function capturesAnyTcpPort(network: NetworkPolicy): boolean {
  return network.rules.some((r) => r.ports.kind === 'any');
}

function closeServer(s: Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

export async function startSandboxNetwork(o: StartSandboxNetworkOptions): Promise<SandboxNetwork> {
  const actor: AuditActor = o.agent ? { agent: o.agent, execution: o.executionId } : { execution: o.executionId };
  const session = new Session({
    matcher: o.matcher ?? compileEgress(o.network),
    audit: o.audit,
    actor,
    resolver: o.resolver ?? new UpstreamResolver(o.config.upstreamDns),
    rateLimit: o.network.rateLimit,
    byteQuota: o.network.byteQuota,
  });
  // TLS termination: only when the execution holds secrets or has HTTP rules (else: tunnels only).
  const intercepting = (o.secrets?.length ?? 0) > 0 || o.network.rules.some((r) => r.kind !== 'cidr' && r.http !== undefined);
  let ca: ExecutionCa | null = null;
  if (intercepting) {
    let extra: string[] = [];
    if (o.config.upstreamCaFile !== undefined) {
      try {
        extra = [await readFile(o.config.upstreamCaFile, 'utf8')];
      } catch (err) {
        throw new GatewayError('gateway.config_invalid', `upstreamCaFile ${o.config.upstreamCaFile}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    // Loaded only here (issue 18): @peculiar/x509 and its dependencies take ~100 ms to load, and
    // an execution without secrets or HTTP rules never terminates TLS.
    const { ExecutionCa } = await import('./intercept/ca.js');
    ca = await ExecutionCa.create(o.executionId, Date.now());
    session.secrets = o.secrets ?? [];
    session.interceptor = new Interceptor(session, {
      ca,
      secrets: session.secrets,
      trustedCas: [...(await systemCas()), ...extra],
      ...(o.secretStillValid !== undefined ? { stillValid: o.secretStillValid } : {}),
    });
  }
  const slotDir = `${o.config.stateDir}/net-slots`;
  const tcpPorts = capturedTcpPorts(o.network);
  const anyTcp = capturesAnyTcpPort(o.network);
  const poolKey: PoolKey = { tcpPorts, anyTcpPort: anyTcp, tools: o.tools !== undefined };
  const poolSize = o.config.netnsPool ?? 0;
  await sweepStaleSandboxNets(o.config.stateDir, o.config.sandboxSubnet);
  // A network prepared ahead for this key (pool.ts), else one built now.
  const pooled = poolSize > 0 ? await claimPooledNet(o.config.stateDir, o.config.sandboxSubnet, poolKey, o.executionId) : null;
  let plan: SandboxNetPlan;
  if (pooled !== null) {
    plan = pooled;
  } else {
    const busy = await checkSubnetFree(o.config.sandboxSubnet);
    const id = randomBytes(4).toString('hex');
    const slot = await claimSlot(slotDir, o.config.sandboxSubnet, id, o.executionId, false, busy);
    plan = planSandboxNet(id, slot, o.config.sandboxSubnet);
  }
  const runDir = `${o.config.stateDir}/net/${plan.id}`;
  const servers: Server[] = [];
  let dns: DnsServers | null = null;
  let blocked: BlockedMonitor | null = null;
  let tools: { readonly port: number; close(): Promise<void> } | null = null;
  let refill: Promise<void> | null = null;
  let closed = false;
  let started = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    // In the background: the script starts while the last drops are read, and tears down after.
    const background =
      started && o.teardown === 'background'
        ? startBackgroundTeardown(plan, runDir, slotDir, o.executionId).catch(() => null) // not started: torn down here
        : Promise.resolve(null);
    await blocked?.stop(); // the last drops, read before the tables go
    for (const s of session.sockets) s.destroy();
    session.interceptor?.close();
    await Promise.all([...servers.map(closeServer), dns?.close(), tools?.close()]);
    const bg = await background;
    if (bg !== null) {
      await bg.release();
    } else {
      await destroySandboxNet(plan, runDir);
      await releaseSlot(slotDir, plan.slot);
    }
    await refill;
  };
  try {
    if (pooled === null) await createSandboxLink(plan);
    // The namespace's inside (sysctls, its ruleset, links up) is configured while the listeners
    // start and the host table is loaded: the two are independent, and the sandbox starts only
    // once both are done. Both are awaited whatever happens, so a failure of one never tears
    // down under the other still running. A pooled network's inside is ready; the host's routes
    // are checked for it now, in parallel (the host may have changed since it was prepared).
    const hostSide = async (): Promise<void> => {
      dns = await startDnsServer(session, plan.hostAddress);
      const httpProxy = await startHttpListener(session, 'explicit', plan.hostAddress);
      servers.push(httpProxy);
      const socks = await startSocksListener(session, plan.hostAddress);
      servers.push(socks);
      const tHttp = await startHttpListener(session, 'transparent', plan.hostAddress);
      servers.push(tHttp);
      const tTls = await startTransparentTlsListener(session, plan.hostAddress);
      servers.push(tTls);
      const port = (s: Server): number => (s.address() as { port: number }).port;
      const tcp = new Map<number, number>();
      for (const p of tcpPorts) {
        const l = await startTransparentTcpListener(session, plan.hostAddress, p);
        servers.push(l);
        tcp.set(p, port(l));
      }
      if (o.tools) tools = await o.tools(plan.hostAddress);
      let tcpAny: number | undefined;
      if (anyTcp) {
        const l = await startTransparentTcpListener(session, plan.hostAddress, 'any', plan.sandboxAddress);
        servers.push(l);
        tcpAny = port(l);
      }
      await applyHostRules(plan, {
        dns: dns.port,
        httpProxy: port(httpProxy),
        socks: port(socks),
        transparentHttp: port(tHttp),
        transparentTls: port(tTls),
        tcp,
        tcpAny,
        ...(tools ? { tools: tools.port } : {}),
      });
    };
    const inside =
      pooled === null ? configureSandboxNamespace(plan, tcpPorts, anyTcp, o.tools !== undefined) : checkSubnetFree(o.config.sandboxSubnet);
    const [insideDone, host, files] = await Promise.allSettled([inside, hostSide(), writeResolvConf(plan, runDir, resolvConf(plan))]);
    if (insideDone.status === 'rejected') throw insideDone.reason;
    if (host.status === 'rejected') throw host.reason;
    if (files.status === 'rejected') throw files.reason;
    const resolvConfPath = files.value;
    blocked = new BlockedMonitor({ actor, read: blockedCounterReader(plan), emit: (e) => session.emit(e), intervalMs: o.blockedPollMs });
    blocked.start();
    let caBundlePath: string | null = null;
    if (ca !== null) {
      // Public material only (the key never leaves memory); readable by the agent, like resolv.conf.
      caBundlePath = `${runDir}/ca-bundle.pem`;
      const image = o.imageCaBundle ?? '';
      await writeFile(caBundlePath, `${image}${image === '' || image.endsWith('\n') ? '' : '\n'}${ca.certPem}\n`, { mode: 0o644 });
    }
    started = true;
    if (poolSize > 0) {
      // Refilled while the sandbox runs; close() waits for it (a failure only costs the next start its speed).
      refill = refillNetPool(o.config.stateDir, o.config.sandboxSubnet, poolKey, poolSize).then(
        () => undefined,
        (err: unknown) => void process.stderr.write(`aegis gateway: refilling the network pool: ${String(err)}\n`),
      );
    }
    return {
      netnsPath: plan.netnsPath,
      netnsName: plan.netnsName,
      env: { ...proxyEnv(plan, tools !== null), ...(caBundlePath !== null ? caBundleEnv() : {}) },
      caBundlePath,
      socksUrl: socksUrl(plan),
      tcpPorts,
      anyTcpPort: anyTcp,
      resolvConfPath,
      toolsUrl: tools !== null ? toolsUrl(plan) : null,
      gatewayAddress: plan.hostAddress,
      sandboxAddress: plan.sandboxAddress,
      plan,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

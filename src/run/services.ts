/**
 * The services a run needs around its sandbox, wired together for `aegis run` and the
 * orchestrator's engine (src/run/execute.ts is the one execution path both call): the tamper-evident audit log every event goes to, and the egress gateway that is
 * the sandbox's only way out.
 *
 * Fail secure: when the audit log cannot be opened or the gateway cannot be started, the agent
 * does not start (the caller reports exit 125).
 *
 * ARCHITECTURE NOTE: a policy with no `permissions.network.allow` entries gets no gateway and no
 * interface at all: a fresh network namespace with loopback only, so nothing can leave (and
 * nothing is there to audit beyond the run's lifecycle). A policy with entries gets its own
 * namespace, veth and nftables tables from the gateway, and the gateway's proxy variables.
 *
 * ARCHITECTURE NOTE: a policy that declares MCP tool servers (`tools:`) always gets the gateway's
 * namespace, even with no network entries (then DNS and every connection are refused as usual),
 * because the tools broker is reached through it: the broker listens on the gateway's address,
 * the host table admits the sandbox to `gateway:3129` and to nothing it does not already allow,
 * and the agent gets `AEGIS_TOOLS_URL` (docs/tools.md).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BudgetedSink, DEFAULT_AUDIT_BUDGET, type AuditBudgetLimits } from '../audit/budget.js';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { AuditLog } from '../audit/log.js';
import type { SweptNet } from '../gateway/netns/adapter.js';
import type { Policy } from '../policy/types.js';
import type { SweptRun } from '../sandbox/state.js';
import type { NetworkOption } from '../sandbox/spec/compile.js';
import type { AegisConfig } from '../config/index.js';
import { ownerAlive, readLockOwner } from '../host/pid-lock.js';
import type { ToolCredential } from '../tools/upstream.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { SandboxedToolServer, ToolSandboxSpec } from '../tools/sandboxed-server.js';
import type { Isolation } from '../policy/types.js';
import type { MicrovmSettings } from '../sandbox/drivers/index.js';
import type { InjectableSecret } from '../secrets/inject.js';

export interface RunServices {
  /** Where the sandbox and the gateway send their events. */
  readonly audit: AuditSink;
  readonly network: NetworkOption;
  /** Added to the agent's environment (proxy variables). */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Stops the gateway, writes the counts of events past the audit budget, then flushes and
   * closes the audit log (a final checkpoint is signed).
   */
  close(): Promise<void>;
}

/**
 * The run's audit sink: events appended while the log is open, with one failure remembered, so
 * a run whose events could not be logged is reported as such when the log is closed.
 */
export class RunAudit implements AuditSink {
  private failure: Error | null = null;
  /** Called once, at the first event that could not be logged (`aegis run` stops the agent). */
  onFailure: (err: Error) => void = () => undefined;
  /**
   * `owned`: `close` closes the log (`aegis run` opens one log per run). The server keeps one
   * long-lived log for every execution and passes `owned = false`: `close` only reports.
   */
  constructor(
    private readonly log: Pick<AuditLog, 'append' | 'close'> | { append(e: AuditEventInput): void | Promise<unknown> },
    private readonly owned = true,
  ) {}
  append(event: AuditEventInput): Promise<void> {
    return Promise.resolve()
      .then(() => this.log.append(event))
      .then(
        () => undefined,
        (err: unknown) => {
          if (this.failure !== null) return;
          this.failure = err instanceof Error ? err : new Error(String(err));
          this.onFailure(this.failure);
        },
      );
  }
  /** Flushes, signs a final checkpoint, closes; throws when any event could not be logged. */
  async close(): Promise<void> {
    if (this.owned && 'close' in this.log) await this.log.close();
    if (this.failure) throw this.failure;
  }
}

/**
 * Opens the audit log under $AEGIS_HOME. Started early by `aegis run`, in parallel with loading
 * the policy and resolving the image. Encoding stays on the calling thread: a run appends a
 * handful of events, and a worker thread would cost more to start than it saves.
 */
export async function openRunAudit(config: Pick<AegisConfig, 'home' | 'auditEnv'>): Promise<RunAudit> {
  const { openAuditLog } = await import('../audit/index.js');
  return new RunAudit(await openAuditLog({ home: config.home, env: config.auditEnv, inlineEncoding: true }));
}

export interface RunServicesOptions {
  readonly policy: Policy;
  readonly executionId: string;
  readonly audit: RunAudit;
  /** The host's audit budget for this execution (parseAuditBudget); default DEFAULT_AUDIT_BUDGET. */
  readonly budget?: AuditBudgetLimits;
  /** Called once when the budget runs out under `onExhausted: 'stop'`: stop the agent. */
  readonly onBudgetExhausted?: (event: AuditEventInput) => void;
  /** The gateway's settings from the environment (AegisConfig.gatewayEnv). */
  readonly gatewayEnv: AegisConfig['gatewayEnv'];
  /** Wraps the log before the budget (the alerting sink: it sees what is logged). */
  readonly wrapLog?: (log: AuditSink) => AuditSink;
  /** Credentials of remote tool servers, by server name (resolveToolCredentials). */
  readonly toolCredentials?: ReadonlyMap<string, ToolCredential>;
  /** The sandboxes of local tool servers (LoadedRun.toolSandboxes), started before the gateway and stopped after it. */
  readonly toolSandboxes?: readonly ToolSandboxSpec[];
  /** Where and on what the local tool servers' sandboxes run: the run's state dir and isolation. */
  readonly toolSandboxStateDir?: string;
  readonly toolIsolation?: Isolation;
  readonly microvm?: MicrovmSettings;
  /** This execution's secrets with their values, for the gateway's swap (issue 12; memory only). */
  readonly secrets?: readonly InjectableSecret[];
  /** The image's root: its CA bundle goes into the sandbox's bundle before the execution's CA. */
  readonly imageRootfs?: string;
  /** Whether the run may still use a secret's version (rotation overlap, expiry); asked by the gateway. */
  readonly secretStillValid?: (secret: string, version: number) => Promise<boolean>;
}

/**
 * Starts the egress gateway when the policy allows any network (see the note at the top). The
 * sandbox and the gateway write through the execution's audit budget (src/audit/budget.ts).
 */
export async function startRunServices(o: RunServicesOptions): Promise<RunServices> {
  const { audit } = o;
  const sink = new BudgetedSink(
    o.wrapLog ? o.wrapLog(audit) : audit,
    { agent: o.policy.agent.name, execution: o.executionId },
    o.budget ?? DEFAULT_AUDIT_BUDGET,
    () => performance.now(),
    o.onBudgetExhausted,
  );
  const closeAudit = async (): Promise<void> => {
    try {
      await sink.finish();
    } finally {
      await audit.close();
    }
  };
  const toolServers = o.policy.tools?.servers ?? [];
  if (o.policy.network.rules.length === 0 && toolServers.length === 0) {
    return { audit: sink, network: { kind: 'none' }, env: {}, close: closeAudit };
  }
  // Local tool servers, each in a sandbox of its own (src/tools/sandboxed-server.ts), started
  // before the agent and stopped after the gateway (so their last events reach the log).
  const local: SandboxedToolServer[] = [];
  const stopLocal = async (): Promise<void> => {
    await Promise.all(local.splice(0).map((l) => l.close().catch(() => undefined)));
  };
  try {
    const { startSandboxNetwork, loadGatewayConfig } = await import('../gateway/index.js');
    const actor = { agent: o.policy.agent.name, execution: o.executionId };
    const localClients = new Map<string, Client>();
    if ((o.toolSandboxes ?? []).length > 0) {
      const { startToolSandbox } = await import('../tools/sandboxed-server.js');
      const { DEFAULT_MAX_MESSAGE_BYTES } = await import('../tools/broker.js');
      const started = await Promise.allSettled(
        o.toolSandboxes!.map((spec) =>
          startToolSandbox({
            spec,
            server: toolServers.find((t) => t.name === spec.name)!,
            executionId: o.executionId,
            agent: o.policy.agent.name,
            audit: sink,
            maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
            ...(o.toolSandboxStateDir !== undefined ? { stateDir: o.toolSandboxStateDir } : {}),
            ...(o.toolIsolation !== undefined ? { isolation: o.toolIsolation } : {}),
            ...(o.microvm !== undefined ? { microvm: o.microvm } : {}),
          }),
        ),
      );
      for (const r of started) if (r.status === 'fulfilled') local.push(r.value);
      const failed = started.find((r) => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      for (const [i, l] of local.entries()) localClients.set(o.toolSandboxes![i]!.name, l.client);
    }
    const gatewayConfig = loadGatewayConfig(o.gatewayEnv);
    const tools =
      toolServers.length === 0
        ? undefined
        : async (gatewayAddress: string) => {
            const { startToolsBroker } = await import('../tools/broker.js');
            return startToolsBroker({
              tools: { servers: toolServers },
              network: o.policy.network,
              audit: sink,
              actor,
              host: gatewayAddress,
              ...(o.toolCredentials ? { credentials: o.toolCredentials } : {}),
              localServers: localClients,
              // Remote servers' names resolve as the agent's allowed names do: with the gateway's upstream.
              resolver: gatewayConfig.upstreamDns,
            });
          };
    let imageCaBundle: string | undefined;
    if (o.imageRootfs !== undefined) {
      try {
        imageCaBundle = readFileSync(join(o.imageRootfs, 'etc/ssl/certs/ca-certificates.crt'), 'utf8');
      } catch {
        imageCaBundle = undefined; // no bundle in the image: the execution's CA alone
      }
    }
    const net = await startSandboxNetwork({
      network: o.policy.network,
      executionId: o.executionId,
      agent: o.policy.agent.name,
      audit: sink,
      config: gatewayConfig,
      ...(tools ? { tools } : {}),
      ...(o.secrets !== undefined ? { secrets: o.secrets } : {}),
      ...(imageCaBundle !== undefined ? { imageCaBundle } : {}),
      ...(o.secretStillValid !== undefined ? { secretStillValid: o.secretStillValid } : {}),
      // close() runs after the sandbox is gone (execute.ts): the rest of the teardown need not be waited for.
      teardown: 'background',
    });
    return {
      audit: sink,
      network: {
        kind: 'netns',
        path: net.netnsPath,
        resolvConf: net.resolvConfPath,
        ...(net.caBundlePath !== null ? { caBundle: net.caBundlePath } : {}),
      },
      env: net.env,
      close: async () => {
        try {
          await net.close();
        } finally {
          await stopLocal();
          await closeAudit();
        }
      },
    };
  } catch (err) {
    await stopLocal();
    await audit.close().catch(() => undefined);
    throw err;
  }
}

/**
 * One `run.lost` event per execution that a dead AEGIS process left behind, saying what the
 * sweep removed: the sandbox's remains (`runs`) and the gateway's network (`nets`), joined by
 * execution id. Pure. Actor: the lost run's agent and execution; `sweptBy` is this process.
 */
export function lostRunEvents(runs: readonly SweptRun[], nets: readonly SweptNet[], sweptBy: number): AuditEventInput[] {
  const network = (n: SweptNet): Record<string, unknown> => ({
    netns: n.netns,
    hostInterface: n.hostInterface,
    hostTable: n.hostTable,
    ownerPid: n.ownerPid,
  });
  const events: AuditEventInput[] = runs.map((r) => {
    const net = nets.find((n) => n.execution === r.id);
    return {
      actor: r.agent !== null ? { agent: r.agent, execution: r.id } : { execution: r.id },
      action: 'run.lost',
      decision: 'deny',
      reason: 'run.lost',
      payload: {
        isolation: r.isolation,
        ownerPid: r.ownerPid,
        createdAt: r.createdAt,
        sweptBy,
        removed: { ...r.removed, network: net !== undefined ? network(net) : null },
      },
    };
  });
  // A network whose run left no run directory (AEGIS died between the two): reported alone.
  for (const n of nets) {
    if (runs.some((r) => r.id === n.execution)) continue;
    events.push({
      actor: { execution: n.execution ?? `network:${n.id}` },
      action: 'run.lost',
      decision: 'deny',
      reason: 'run.lost',
      payload: { isolation: null, ownerPid: n.ownerPid, createdAt: null, sweptBy, removed: { network: network(n) } },
    });
  }
  return events;
}

/**
 * Sweeps what dead AEGIS processes left behind (sandboxes under `stateDir`, gateway networks
 * under the gateway's state dir) and returns the `run.lost` events to log. The gateway's config
 * (and its schema library) is loaded only when its slot directory holds any lock.
 */
export async function sweepLostRuns(stateDir: string, env: AegisConfig['gatewayEnv']): Promise<AuditEventInput[]> {
  const { sweepOnce } = await import('../sandbox/run.js');
  const runs = await sweepOnce(stateDir);
  let nets: SweptNet[] = [];
  const quickDir = env.AEGIS_GATEWAY_CONFIG ? null : (env.AEGIS_STATE_DIR ?? '/run/aegis');
  // Only a slot lock that may be stale is worth loading the gateway's configuration for (about
  // 10 ms of module loading, issue 18): sweepStaleSandboxNets leaves a slot whose owner still
  // runs (another AEGIS's gateway) alone anyway, and decides about every other one itself.
  let mayBeStale = true;
  if (quickDir !== null) {
    let names: string[];
    try {
      names = readdirSync(`${quickDir}/net-slots`);
    } catch {
      names = [];
    }
    mayBeStale = false;
    for (const name of names) {
      if (!/^[0-9]+$/.test(name)) continue; // not a slot: the sweep skips it too
      const owner = await readLockOwner(`${quickDir}/net-slots/${name}`);
      if (owner === null || !ownerAlive(owner)) {
        mayBeStale = true;
        break;
      }
    }
  }
  if (mayBeStale) {
    const [{ loadGatewayConfig }, { sweepStaleSandboxNets }] = await Promise.all([
      import('../gateway/config.js'),
      import('../gateway/netns/adapter.js'),
    ]);
    try {
      const config = loadGatewayConfig(env);
      nets = await sweepStaleSandboxNets(config.stateDir, config.sandboxSubnet);
    } catch {
      // No usable gateway config: no network can have been made with it either; the gateway
      // sweeps again before it starts one.
      nets = [];
    }
  }
  return lostRunEvents(runs, nets, process.pid);
}

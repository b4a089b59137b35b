/**
 * The services a run needs around its sandbox, wired together for `aegis run` (and, later, the
 * server): the tamper-evident audit log every event goes to, and the egress gateway that is
 * the sandbox's only way out.
 *
 * Fail secure: when the audit log cannot be opened or the gateway cannot be started, the agent
 * does not start (the caller reports exit 125).
 *
 * ARCHITECTURE NOTE: a policy with no `permissions.network.allow` entries gets no gateway and no
 * interface at all: a fresh network namespace with loopback only, so nothing can leave (and
 * nothing is there to audit beyond the run's lifecycle). A policy with entries gets its own
 * namespace, veth and nftables tables from the gateway, and the gateway's proxy variables.
 */
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { AuditLog } from '../audit/log.js';
import type { Policy } from '../policy/types.js';
import type { NetworkOption } from '../sandbox/spec/compile.js';
import type { AegisConfig } from '../config/index.js';

export interface RunServices {
  /** Where the sandbox and the gateway send their events. */
  readonly audit: AuditSink;
  readonly network: NetworkOption;
  /** Added to the agent's environment (proxy variables). */
  readonly env: Readonly<Record<string, string>>;
  /** Stops the gateway, then flushes and closes the audit log (a final checkpoint is signed). */
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
  constructor(private readonly log: AuditLog) {}
  append(event: AuditEventInput): Promise<void> {
    return this.log.append(event).then(
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
    await this.log.close();
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

/** Starts the egress gateway when the policy allows any network; see the note at the top. */
export async function startRunServices(o: { policy: Policy; executionId: string; audit: RunAudit; gatewayEnv: AegisConfig['gatewayEnv'] }): Promise<RunServices> {
  const { audit } = o;
  if (o.policy.network.rules.length === 0) {
    return { audit, network: { kind: 'none' }, env: {}, close: () => audit.close() };
  }
  try {
    const { startSandboxNetwork, loadGatewayConfig } = await import('../gateway/index.js');
    const net = await startSandboxNetwork({
      network: o.policy.network,
      executionId: o.executionId,
      agent: o.policy.agent.name,
      audit,
      config: loadGatewayConfig(o.gatewayEnv),
    });
    return {
      audit,
      network: { kind: 'netns', path: net.netnsPath, resolvConf: net.resolvConfPath },
      env: net.env,
      close: async () => {
        try {
          await net.close();
        } finally {
          await audit.close();
        }
      },
    };
  } catch (err) {
    await audit.close().catch(() => undefined);
    throw err;
  }
}

/**
 * The one execution path from a manifest to a finished run, shared by `aegis run`
 * (src/cli/run-action.ts) and the orchestrator's engine (src/orchestrator/engine.ts):
 *
 *  1. `loadRun`: the host's audit budget, the manifest (through the policy cache), the image,
 *     the seccomp profile: what can be known before the execution's input;
 *  2. `bindInput`: the operator's environment additions (applyOperatorEnv), the secret
 *     placeholders, volumes and arguments: the RunSandboxOptions of one execution;
 *  3. `startServices`: alerting around the log, the audit budget, and the egress gateway (its
 *     network namespace, listeners and host rules); a warm sandbox is one whose services are
 *     started before its input is known;
 *  4. `runWithServices`: the `run.env` and secret events, runSandbox, the services' close.
 *
 * ARCHITECTURE NOTE: there is no second sandbox path. The engine and the CLI differ only in
 * where the audit log comes from (the CLI opens one per run, the server keeps one open), where
 * stdio goes, and how the run is stopped (signals, cancel, the engine's own timeout).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseAuditBudget, type AuditBudgetLimits } from '../audit/budget.js';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { AegisConfig } from '../config/index.js';
import { isAegisError } from '../errors.js';
import { resolveImage } from '../images/index.js';
import { loadManifest, type LoadedPolicy } from '../loader/manifest-loader.js';
import { applyOperatorEnv } from '../policy/env.js';
import { normalizeSandboxPath } from '../policy/paths.js';
import { localServerProblems } from '../policy/tools.js';
import type { Isolation, Policy } from '../policy/types.js';
import { SandboxError } from '../sandbox/errors.js';
import { ToolsError } from '../tools/errors.js';
import { unbackedWritePaths, unbackedWriteWarning } from '../sandbox/host-paths.js';
import {
  launchPrepared,
  parseVolumeFlag,
  runSandbox,
  type PreparedSandbox,
  type InputSource,
  type OutputTarget,
  type RunResult,
  type RunSandboxOptions,
  type VolumeRequest,
} from '../sandbox/run.js';
import {
  prepareRunSecrets,
  revealRunSecrets,
  secretBindEvents,
  secretValidity,
  withPlaceholders,
  type RunSecrets,
} from '../secrets/run.js';
import type { Monitor } from '../monitor/index.js';
import type { ToolCredentials } from '../tools/credentials.js';
import type { ToolSandboxSpec } from '../tools/sandboxed-server.js';
import { startRunServices, type RunAudit, type RunServices } from './services.js';
import type { PhaseMark } from './timings.js';

/** What `loadRun` found: everything that does not depend on the execution's input. */
export interface LoadedRun {
  readonly file: string;
  readonly loaded: LoadedPolicy;
  /** `signedBy`: the key id of the trusted signature, when the host requires signed images. */
  readonly image: { readonly ref: string; readonly digest: string; readonly rootfs: string; readonly signedBy?: string };
  /** Credentials of remote tool servers (in memory only; held by the tools broker; docs/tools.md). */
  readonly toolCredentials?: ToolCredentials;
  /** The sandboxes of local tool servers (`tools[].mcp.manifest`): their manifests and images, loaded and checked. */
  readonly toolSandboxes?: readonly ToolSandboxSpec[];
  readonly budget: AuditBudgetLimits;
  readonly seccompProfile?: unknown;
}

export interface LoadRunOptions {
  readonly config: AegisConfig;
  readonly file: string;
  readonly stateDir: string;
  readonly seccompProfileFile?: string;
  /** Each manifest warning, formatted (`file:line:col: warning: ...`). */
  readonly warn?: (line: string) => void;
  /** Read the secrets bound to tool servers (default true; `aegis run --dry-run` does not). */
  readonly toolSecrets?: boolean;
}

/** Step 1. Throws an AegisError when the run cannot start (the caller reports and audits it). */
export async function loadRun(o: LoadRunOptions): Promise<LoadedRun> {
  // The host operator's audit budget per execution (AEGIS_AUDIT_BUDGET_*; docs/audit.md).
  const budget = parseAuditBudget(o.config.auditEnv);
  try {
    mkdirSync(o.stateDir, { recursive: true, mode: 0o711 });
  } catch {
    /* the cache is then unusable, which only costs time; the sandbox reports a bad state dir */
  }
  // Compiled policies are cached per user under the state dir (see the loader's ARCHITECTURE NOTE).
  const loaded = await loadManifest(o.file, { cacheDir: join(o.stateDir, 'policy-cache') });
  for (const w of loaded.warnings) o.warn?.(w);
  const resolved = await resolveImage(loaded.policy.agent.runtime, { imagesDir: o.config.imagesDir });
  // Host policy: only images signed by a trusted key run (AEGIS_IMAGE_TRUSTED_KEYS; docs/images.md):
  // image.signature_missing / image.signature_invalid refuse the run.
  const signedBy =
    o.config.imageTrustedKeys === undefined
      ? undefined
      : (await (await import('../images/signing.js')).requireSignedImage(o.config.imagesDir, resolved, o.config.imageTrustedKeys)).keyId;
  const image = signedBy !== undefined ? { ...resolved, signedBy } : resolved;
  // Secrets bound to tool servers are read now, for the broker: missing, expired or unbound
  // refuses the run (tools.secret_unavailable; docs/tools.md).
  let toolCredentials: ToolCredentials | undefined;
  if (o.toolSecrets !== false && (loaded.policy.tools?.servers.length ?? 0) > 0) {
    const { resolveToolCredentials } = await import('../tools/credentials.js');
    toolCredentials = await resolveToolCredentials(loaded.policy.tools, o.config.secretsDir, Date.now());
  }
  const toolSandboxes = await loadToolSandboxes(o, loaded.policy);
  let seccompProfile: unknown;
  if (o.seccompProfileFile !== undefined) {
    try {
      seccompProfile = JSON.parse(readFileSync(o.seccompProfileFile, 'utf8'));
    } catch (err) {
      throw new SandboxError('sandbox.seccomp_profile_invalid', `--seccomp-profile ${o.seccompProfileFile}: ${(err as Error).message}`);
    }
  }
  return {
    file: o.file,
    loaded,
    image,
    budget,
    ...(seccompProfile !== undefined ? { seccompProfile } : {}),
    ...(toolCredentials !== undefined ? { toolCredentials } : {}),
    ...(toolSandboxes.length > 0 ? { toolSandboxes } : {}),
  };
}

/**
 * The manifests of the agent's local tool servers (`tools[].mcp.manifest`, relative to the
 * agent's manifest folder), loaded like the agent's (same loader, same cache, same image
 * resolution and signature policy) and checked for what a tool server may not have
 * (`tools.server_manifest_invalid`): network access, secrets, tool servers of its own.
 * Fail secure: any of them unusable means the run does not start.
 */
async function loadToolSandboxes(o: LoadRunOptions, policy: Policy): Promise<ToolSandboxSpec[]> {
  const specs: ToolSandboxSpec[] = [];
  for (const server of policy.tools?.servers ?? []) {
    const t = server.transport;
    if (t.kind !== 'sandbox') continue;
    const file = resolve(dirname(o.file), t.manifest);
    const refuse = (why: string): never => {
      throw new ToolsError('tools.server_manifest_invalid', `tool server ${server.name} (${file}): ${why}`);
    };
    let loaded: LoadedPolicy;
    try {
      loaded = await loadManifest(file, { cacheDir: join(o.stateDir, 'policy-cache') });
    } catch (err) {
      return refuse((err as Error).message);
    }
    for (const w of loaded.warnings) o.warn?.(w);
    const p = loaded.policy;
    const problems = localServerProblems(p);
    if (problems.length > 0) refuse(problems.join('; '));
    if (p.limits.timeoutMs < policy.limits.timeoutMs)
      o.warn?.(
        `${file}: warning: tool server ${server.name} is stopped at its own execution_time (${p.limits.timeoutMs / 1000}s), before the agent's (${policy.limits.timeoutMs / 1000}s): its later calls fail`,
      );
    const resolved = await resolveImage(p.agent.runtime, { imagesDir: o.config.imagesDir });
    const signedBy =
      o.config.imageTrustedKeys === undefined
        ? undefined
        : (await (await import('../images/signing.js')).requireSignedImage(o.config.imagesDir, resolved, o.config.imageTrustedKeys)).keyId;
    const volumes = t.volumes.map((flag) => {
      const v = parseVolumeFlag(flag);
      return { ...v, host: resolve(dirname(o.file), v.host) };
    });
    specs.push({
      name: server.name,
      file,
      policy: p,
      imageRootfs: resolved.rootfs,
      volumes,
      provenance: {
        manifest: { path: file, sha256: loaded.manifestSha256 },
        image: { ref: resolved.ref, digest: resolved.digest, ...(signedBy !== undefined ? { signedBy } : {}) },
      },
    });
  }
  return specs;
}

/** One execution's input, checked by `bindInput`. */
export interface RunInput {
  readonly executionId: string;
  /** `NAME=VALUE` strings (untrusted): applyOperatorEnv refuses what the manifest does not allow. */
  readonly env: readonly string[];
  readonly args: readonly string[];
  readonly volumes: readonly VolumeRequest[];
  readonly isolation?: Isolation;
  readonly stateDir?: string;
  /** Who asked; default: the local user running this process. */
  readonly principal?: Readonly<Record<string, unknown>>;
  /** Added to the provenance of run.spawn (the server: agent version and digests). */
  readonly extraProvenance?: Readonly<Record<string, unknown>>;
}

/** What `bindInput` returns: the sandbox options of one execution and what to log about them. */
export interface BoundRun {
  readonly opts: RunSandboxOptions;
  /** The names the operator set (never the values), for `run.env`. */
  readonly operatorEnv: readonly string[];
  /** Which secret and version each placeholder stands for (in memory only). */
  readonly runSecrets: RunSecrets;
  /** fs.write paths without a volume: said before the run and kept in the summary. */
  readonly warnings: readonly string[];
  /** The host's audit budget per execution (from LoadedRun). */
  readonly budget: AuditBudgetLimits;
  /** When the secret versions were taken (a rotation after it leaves them usable for the overlap). */
  readonly secretsAt: number;
  /** Which secret each tool server's credential is (never the value), logged before the agent starts. */
  readonly toolCredentialEvents: readonly Omit<AuditEventInput, 'actor'>[];
}

/**
 * Step 2. Throws an AegisError (`sandbox.env_refused`, `secrets.*`, ...) when the input is
 * refused. `now`: the clock for secret expiry, from the caller.
 */
export async function bindInput(config: AegisConfig, l: LoadedRun, input: RunInput, now: number): Promise<BoundRun> {
  const withEnv = applyOperatorEnv(l.loaded.policy, input.env);
  if (!withEnv.ok) throw new SandboxError('sandbox.env_refused', withEnv.message);
  // Secret references become per-execution placeholders; a missing, expired or unbound secret
  // refuses the run (secrets.missing / secrets.expired / secrets.unbound; docs/secrets.md).
  const runSecrets = await prepareRunSecrets({ dir: config.secretsDir, policy: withEnv.policy, now });
  const opts: RunSandboxOptions = {
    provenance: { ...(await runProvenance(l, input.principal)), ...input.extraProvenance },
    policy: withPlaceholders(withEnv.policy, runSecrets),
    manifestDir: dirname(l.file),
    imageRootfs: l.image.rootfs,
    executionId: input.executionId,
    volumes: input.volumes,
    extraArgs: input.args,
    ...(input.isolation !== undefined ? { isolation: input.isolation } : {}),
    ...(l.seccompProfile !== undefined ? { seccompProfile: l.seccompProfile } : {}),
    ...(input.stateDir !== undefined ? { stateDir: input.stateDir } : {}),
    // isolation microvm: the guest and whether software emulation is allowed (AEGIS_MICROVM_*).
    microvm: config.microvm,
  };
  const warnings = unbackedWritePaths(
    opts.policy,
    (opts.volumes ?? []).map((v) => normalizeSandboxPath(v.sandbox) ?? v.sandbox),
  ).map(unbackedWriteWarning);
  return {
    opts,
    operatorEnv: withEnv.names,
    runSecrets,
    warnings,
    budget: l.budget,
    secretsAt: now,
    toolCredentialEvents: l.toolCredentials?.events ?? [],
  };
}

/**
 * Who started the run and under which rules, for the `run.spawn` event: the principal (uid,
 * gid, user name from the passwd database; or the server's principal), the manifest's path and
 * SHA-256, the SHA-256 of the compiled policy's canonical JSON, and the image's ref and digest.
 */
async function runProvenance(l: LoadedRun, principal: Readonly<Record<string, unknown>> | undefined): Promise<Record<string, unknown>> {
  const { canonicalJson } = await import('../audit/canonical-json.js');
  let who: Readonly<Record<string, unknown>> | undefined = principal;
  if (who === undefined) {
    let user: string | null = null;
    try {
      user = userInfo().username;
    } catch {
      user = null; // a uid without a passwd entry
    }
    who = { kind: 'local', uid: process.getuid?.() ?? null, gid: process.getgid?.() ?? null, user };
  }
  return {
    principal: who,
    manifest: { path: resolve(l.file), sha256: l.loaded.manifestSha256 },
    policy: {
      sha256: createHash('sha256')
        .update(canonicalJson(JSON.parse(JSON.stringify(l.loaded.policy))))
        .digest('hex'),
    },
    image: { ref: l.image.ref, digest: l.image.digest, ...(l.image.signedBy !== undefined ? { signedBy: l.image.signedBy } : {}) },
  };
}

/** What alerting did in a run, for the summary's `alerts` object (deliveries summed over the sinks). */
export interface AlertCounts {
  readonly raised: number;
  readonly delivered: number;
  readonly failed: number;
  readonly dropped: number;
}

interface AlertingRun {
  readonly wrap: (log: AuditSink) => AuditSink;
  /** An event that cannot be logged (the log failed): its alerts go to `say` and the sinks only. */
  outsideLog(e: AuditEventInput): void;
  /** Waits (bounded) for the sinks to deliver what is queued, closes them, reports what is left; returns the counters. */
  finish(): Promise<AlertCounts>;
}

/** How long the end of a run waits for alerts still queued for delivery. */
const ALERT_FLUSH_MS = 2000;

/**
 * The alerting wrapper for this run's log (rules from AEGIS_ALERT_RULES or the default pack,
 * compiled through the private cache under the state dir), or null when alerting is off. Each
 * alert is also printed, one line, through `say`, and queued for every configured sink
 * (AEGIS_ALERT_WEBHOOK, AEGIS_ALERT_SYSLOG), which never blocks the append path.
 */
async function alertingFor(config: AegisConfig, stateDir: string, say: (line: string) => void): Promise<AlertingRun | null> {
  if (config.alertRules !== undefined && config.alertRules.length === 0) return null;
  const { AlertEngine, AlertingSink, DEFAULT_PACK, loadRules, alertRecord } = await import('../alerts/index.js');
  const rules = await loadRules(config.alertRules ?? [DEFAULT_PACK], { cacheDir: join(stateDir, 'alert-cache') });
  const engine = new AlertEngine(rules);
  // The sinks' modules (http, tls, dgram) are loaded only when a sink is configured.
  const delivery =
    config.alertWebhook !== undefined || config.alertSyslog !== undefined
      ? (await import('../alerts/sinks.js')).openDelivery({
          webhook: config.alertWebhook,
          syslog: config.alertSyslog,
          hostname: hostname(),
        })
      : null;
  let sink: InstanceType<typeof AlertingSink> | null = null;
  return {
    wrap: (log) => {
      sink = new AlertingSink(log, engine, (a, id) => {
        say(`ALERT ${a.rule.level} ${a.rule.id}: ${a.summary}${a.suppressed ? ` (+${a.suppressed} folded)` : ''}`);
        delivery?.send(alertRecord(a, id));
      });
      return sink;
    },
    outsideLog: (e) => void sink?.raiseOutsideLog(e),
    finish: async () => {
      const raised = sink?.raised ?? 0;
      if (delivery === null) return { raised, delivered: 0, failed: 0, dropped: 0 };
      for (const left of await delivery.finish(ALERT_FLUSH_MS))
        if (left.undelivered > 0)
          say(`alerts: ${left.undelivered} not delivered to ${left.name} within ${ALERT_FLUSH_MS} ms (they are in the audit log)`);
      const { delivered, failed, dropped, retried } = delivery.stats;
      if (failed > 0 || dropped > 0)
        say(
          `alerts: delivery: ${delivered} delivered, ${failed} failed, ${dropped} dropped, ${retried} retried (every alert is in the audit log)`,
        );
      return { raised, delivered, failed, dropped };
    },
  };
}

/** A run's services, started (step 3): what a warm sandbox holds while it waits for work. */
export interface StartedServices {
  readonly services: RunServices;
  /** Aborted by an audit log failure or an exhausted budget (and linked to the caller's signal at run time). */
  readonly abort: AbortController;
  /** True once the audit budget stopped the agent. */
  budgetStopped(): boolean;
  /** Stops the gateway, closes alerting (and the log when the RunAudit owns it); never throws. */
  discard(): Promise<void>;
  /** Internal to runWithServices. */
  readonly alerting: AlertingRun | null;
}

export interface StartServicesOptions {
  readonly config: AegisConfig;
  readonly policy: Policy;
  /** The id the gateway names its network and events with (a warm sandbox's own id until claimed). */
  readonly executionId: string;
  readonly audit: RunAudit;
  readonly budget: AuditBudgetLimits;
  readonly stateDir: string;
  /** Messages for the operator, without a prefix (the CLI prints `aegis run: ` before each). */
  readonly say: (line: string) => void;
  /**
   * This execution's secret bindings (BoundRun), for the gateway's TLS termination and swap
   * (issue 12). Absent for a warm sandbox prepared before its input is known: an execution whose
   * policy references secrets is never given one (src/orchestrator/engine.ts).
   */
  readonly secrets?: Pick<BoundRun, 'runSecrets' | 'secretsAt'>;
  /** The image's root: its CA bundle goes first in the sandbox's bundle, before the execution's CA. */
  readonly imageRootfs?: string;
  /** The tools broker's credentials (LoadedRun.toolCredentials). */
  readonly toolCredentials?: ToolCredentials;
  /** The local tool servers' sandboxes (LoadedRun.toolSandboxes), started before the agent, on `isolation`. */
  readonly toolSandboxes?: readonly ToolSandboxSpec[];
  /** The run's isolation (RunInput.isolation), for the local tool servers; default: each server manifest's, else crun. */
  readonly isolation?: Isolation;
}

/**
 * Step 3. The audit log failing or the budget running out aborts `abort` (fail secure: the agent
 * is stopped). Throws when alerting or the gateway cannot start (the agent must not start).
 */
export async function startServices(o: StartServicesOptions): Promise<StartedServices> {
  const abort = new AbortController();
  let budgetStop = false;
  let alerting: AlertingRun | null = null;
  const { audit, budget } = o;
  // Fail secure: an agent whose actions can no longer be logged is stopped.
  audit.onFailure = (err) => {
    o.say(`the audit log failed (${err.message}): stopping the agent`);
    abort.abort();
    // The alert about it cannot be in the log that failed: `say` and the sinks only.
    alerting?.outsideLog({
      actor: { agent: o.policy.agent.name, execution: o.executionId },
      action: 'audit.write_failed',
      decision: 'deny',
      reason: isAegisError(err) ? err.code : 'audit.store_io',
      payload: { message: err.message },
    });
  };
  // Fail secure (host policy `stop`, the default): an agent whose events are no longer
  // written one by one is stopped; the summary says why (`stopReason`).
  const onBudgetExhausted = (): void => {
    budgetStop = true;
    o.say(`the audit budget of this run (${budget.maxEvents} events, ${budget.maxBytes} bytes) is used up: stopping the agent`);
    abort.abort();
  };
  let services: RunServices;
  try {
    // Alerts are raised as the events are appended, into the same log (fail secure: rules that
    // cannot be loaded mean no start). AEGIS_ALERT_RULES=none turns them off.
    alerting = await alertingFor(o.config, o.stateDir, o.say);
    const bindings = o.secrets?.runSecrets;
    services = await startRunServices({
      ...(bindings !== undefined && bindings.bindings.length > 0
        ? {
            secrets: await revealRunSecrets(o.config.secretsDir, bindings),
            secretStillValid: secretValidity(o.config.secretsDir, o.secrets!.secretsAt, o.config.secretsRotationOverlapMs),
          }
        : {}),
      ...(o.imageRootfs !== undefined ? { imageRootfs: o.imageRootfs } : {}),
      policy: o.policy,
      executionId: o.executionId,
      audit,
      budget,
      onBudgetExhausted,
      gatewayEnv: o.config.gatewayEnv,
      ...(alerting ? { wrapLog: alerting.wrap } : {}),
      ...(o.toolCredentials ? { toolCredentials: o.toolCredentials.byServer } : {}),
      ...(o.toolSandboxes !== undefined && o.toolSandboxes.length > 0
        ? {
            toolSandboxes: o.toolSandboxes,
            toolSandboxStateDir: o.stateDir,
            microvm: o.config.microvm,
            ...(o.isolation !== undefined ? { toolIsolation: o.isolation } : {}),
          }
        : {}),
    });
  } catch (err) {
    if (alerting) await alerting.finish().catch(() => undefined);
    throw err;
  }
  const a = alerting;
  return {
    services,
    abort,
    alerting: a,
    budgetStopped: () => budgetStop,
    discard: async () => {
      await services.close().catch(() => undefined);
      if (a) await a.finish().catch(() => undefined);
    },
  };
}

export interface RunIO {
  readonly stdin: InputSource;
  readonly stdout: OutputTarget;
  readonly stderr: OutputTarget;
  /** Stops the agent (TERM, grace, KILL; status `killed`). */
  readonly signal?: AbortSignal;
  /** Time between TERM and KILL (default: runSandbox's). */
  readonly graceMs?: number;
  /**
   * The runtime monitor (src/monitor, AEGIS_MONITOR): attached before the agent's first
   * instruction (a prepared sandbox: before its shim gets the execution's line); one that cannot
   * attach means the agent does not start.
   */
  readonly monitor?: Monitor;
  readonly say: (line: string) => void;
  /** Marks the end of each phase (`aegis run --timings`, timings.ts); passed to runSandbox. */
  readonly phase?: PhaseMark;
}

export type RunOutcome =
  | { readonly kind: 'cannot_start'; readonly message: string }
  | {
      readonly kind: 'ran';
      readonly result: RunResult;
      readonly budgetStop: boolean;
      readonly alertCounts: AlertCounts | undefined;
    };

/**
 * Step 4. Logs the operator's env names and the secret bindings, runs the sandbox with the
 * started services (in `prepared`, a sandbox created ahead, when given: its volumes are copied
 * back to `bound`'s rw volume folders), then closes them (gateway, budget counts, log when
 * owned) and alerting.
 */
export async function runWithServices(
  bound: BoundRun,
  started: StartedServices,
  io: RunIO,
  prepared?: PreparedSandbox,
): Promise<RunOutcome> {
  const { services, abort, alerting } = started;
  const { opts, operatorEnv, runSecrets } = bound;
  const executionId = opts.executionId!;
  const onOuter = (): void => abort.abort();
  io.signal?.addEventListener('abort', onOuter, { once: true });
  if (io.signal?.aborted) abort.abort();
  try {
    // Which secret each tool server's credential is, the names (never the values) of the
    // operator's env, and which secret version each reference stands for (never the
    // placeholder), before the agent starts.
    for (const ev of bound.toolCredentialEvents)
      await services.audit.append({ ...ev, actor: { agent: opts.policy.agent.name, execution: executionId } });
    if (operatorEnv.length > 0 || runSecrets.bindings.length > 0) {
      if (operatorEnv.length > 0)
        await services.audit.append({
          actor: { agent: opts.policy.agent.name, execution: executionId },
          action: 'run.env',
          decision: 'info',
          payload: { operatorEnv },
        });
      for (const ev of secretBindEvents(runSecrets, executionId, opts.policy.agent.name)) await services.audit.append(ev);
      if (abort.signal.aborted) {
        await started.discard();
        return { kind: 'cannot_start', message: 'the audit log failed: the agent was not started' };
      }
    }
    let result: RunResult;
    let alertCounts: AlertCounts | undefined;
    try {
      result = prepared
        ? await launchPrepared(prepared, {
            argv: [...opts.policy.agent.entrypoint, ...(opts.extraArgs ?? [])],
            env: opts.policy.agent.env,
            volumeHosts: (opts.volumes ?? []).filter((v) => v.mode === 'rw').map((v) => v.host),
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            signal: abort.signal,
            ...(io.graceMs !== undefined ? { graceMs: io.graceMs } : {}),
            ...(opts.provenance !== undefined ? { provenance: opts.provenance } : {}),
            ...(io.monitor !== undefined ? { monitor: io.monitor } : {}),
          })
        : await runSandbox({
            ...opts,
            audit: services.audit,
            network: services.network,
            extraEnv: services.env,
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            signal: abort.signal,
            ...(io.graceMs !== undefined ? { graceMs: io.graceMs } : {}),
            ...(io.monitor !== undefined ? { monitor: io.monitor } : {}),
            ...(io.phase !== undefined ? { phase: io.phase } : {}),
          });
    } finally {
      try {
        await services.close();
      } catch (err) {
        io.say(`audit/gateway shutdown failed: ${(err as Error).message}`);
      }
      io.phase?.('services.close');
      // Every alert of the run is raised by now (the log is closed); delivery gets a bounded wait.
      if (alerting) alertCounts = await alerting.finish();
      io.phase?.('alerts.finish');
    }
    return { kind: 'ran', result, budgetStop: started.budgetStopped(), alertCounts };
  } finally {
    io.signal?.removeEventListener('abort', onOuter);
  }
}

/** The host's shared runtime monitor (the daemon's client), as runMonitor returns it. */
export type RunMonitor = Monitor & { hold(): Promise<() => void> };

/**
 * The runtime monitor a run gets (AEGIS_MONITOR, docs/monitoring.md): `auto` monitors when the
 * host supports it, and then a monitor that cannot attach refuses the run like `on` does; `note`
 * says why a run under `auto` is not monitored. The monitor is the host's shared one: the daemon
 * of `<stateDir>/monitor`, started by the first run that finds none and kept
 * `config.monitorIdleMs` after its last run (src/monitor/client.ts).
 */
export async function runMonitor(
  config: Pick<AegisConfig, 'monitor' | 'monitorIdleMs'>,
  stateDir: string,
): Promise<{ monitor: RunMonitor | undefined; note: string | null }> {
  if (config.monitor === 'off') return { monitor: undefined, note: null };
  const { monitorSupport } = await import('../monitor/index.js');
  const support = monitorSupport();
  if (config.monitor === 'auto' && support.missing.length > 0)
    return { monitor: undefined, note: `not monitored (AEGIS_MONITOR=auto): ${support.missing.join('; ')}` };
  const { hostMonitor } = await import('../monitor/client.js');
  return { monitor: hostMonitor({ dir: join(stateDir, 'monitor'), idleMs: config.monitorIdleMs }), note: null };
}

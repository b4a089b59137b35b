/**
 * The body of `aegis run` (imported lazily by run-commands.ts): load the manifest, resolve the
 * image, then dry-run or run through the sandbox library, and map the result to an exit code.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseAuditBudget, type AuditBudgetLimits } from '../audit/budget.js';
import { isAegisError } from '../errors.js';
import { resolveImage } from '../images/index.js';
import { loadManifest, type LoadedPolicy } from '../loader/manifest-loader.js';
import { applyOperatorEnv } from '../policy/env.js';
import { unbackedWritePaths, unbackedWriteWarning } from '../sandbox/host-paths.js';
import { normalizeSandboxPath } from '../policy/paths.js';
import {
  dryRun,
  EXIT_CANNOT_START,
  newExecutionId,
  parseVolumeFlag,
  runSandbox,
  type RunResult,
  type RunSandboxOptions,
} from '../sandbox/run.js';
import { SandboxError } from '../sandbox/errors.js';
import { DEFAULT_STATE_DIR } from '../sandbox/state.js';
import { prepareRunSecrets, secretBindEvents, secretDeniedEvent, withPlaceholders, type RunSecrets } from '../secrets/run.js';
import type { AuditEventInput, AuditSink } from '../audit/event.js';
import type { AegisConfig } from '../config/index.js';
import type { CliContext } from './context.js';
import { openRunAudit, startRunServices, sweepLostRuns, type RunAudit, type RunServices } from './run-services.js';
import type { RunFlags } from './run-commands.js';

/**
 * Who started the run and under which rules, for the `run.spawn` event: the principal (uid,
 * gid, user name from the passwd database; a server principal later), the manifest's path and
 * SHA-256, the SHA-256 of the compiled policy's canonical JSON, and the image's ref and digest.
 */
async function runProvenance(
  file: string,
  loaded: LoadedPolicy,
  image: { ref: string; digest: string; signedBy?: string },
): Promise<Record<string, unknown>> {
  const { canonicalJson } = await import('../audit/canonical-json.js');
  let user: string | null = null;
  try {
    user = userInfo().username;
  } catch {
    user = null; // a uid without a passwd entry
  }
  return {
    principal: { kind: 'local', uid: process.getuid?.() ?? null, gid: process.getgid?.() ?? null, user },
    manifest: { path: resolve(file), sha256: loaded.manifestSha256 },
    policy: {
      sha256: createHash('sha256')
        .update(canonicalJson(JSON.parse(JSON.stringify(loaded.policy))))
        .digest('hex'),
    },
    image: { ref: image.ref, digest: image.digest, ...(image.signedBy !== undefined ? { signedBy: image.signedBy } : {}) },
  };
}

/**
 * `stopReason` is present only when AEGIS stopped the agent for a reason of its own; `warnings`
 * only when there are any; `alerts` only when alerting ran ({raised, delivered, failed, dropped}).
 */
function summaryOf(
  r: Pick<RunResult, 'executionId' | 'status' | 'exitCode' | 'durationMs' | 'cpuMs' | 'maxMemoryBytes'>,
  stopReason?: 'audit.budget_exhausted',
  warnings: readonly string[] = [],
  alerts?: { raised: number; delivered: number; failed: number; dropped: number },
): string {
  return (
    JSON.stringify({
      executionId: r.executionId,
      status: r.status,
      exitCode: r.exitCode,
      durationMs: Math.round(r.durationMs),
      cpuMs: Math.round(r.cpuMs),
      maxMemoryBytes: r.maxMemoryBytes,
      ...(stopReason !== undefined ? { stopReason } : {}),
      ...(warnings.length > 0 ? { warnings } : {}),
      ...(alerts !== undefined ? { alerts } : {}),
    }) + '\n'
  );
}

/** What alerting did in a run, for the summary's `alerts` object (deliveries summed over the sinks). */
interface AlertingRun {
  readonly wrap: (log: AuditSink) => AuditSink;
  /** An event that cannot be logged (the log failed): its alerts go to stderr and the sinks only. */
  outsideLog(e: AuditEventInput): void;
  /** Waits (bounded) for the sinks to deliver what is queued, closes them, reports what is left on stderr; returns the summary's counters. */
  finish(): Promise<{ raised: number; delivered: number; failed: number; dropped: number }>;
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

export async function runCommand(ctx: CliContext, file: string, args: string[], flags: RunFlags): Promise<number> {
  const started = performance.now();
  const executionId = newExecutionId();
  const cannotStart = (message: string): number => {
    ctx.err(`aegis run: ${message}\n`);
    if (flags.summary !== undefined) {
      try {
        writeFileSync(
          flags.summary,
          summaryOf({
            executionId,
            status: 'failed_to_start',
            exitCode: EXIT_CANNOT_START,
            durationMs: performance.now() - started,
            cpuMs: 0,
            maxMemoryBytes: 0,
          }),
        );
      } catch (err) {
        ctx.err(`aegis run: cannot write the summary: ${(err as Error).message}\n`);
      }
    }
    return EXIT_CANNOT_START;
  };

  let config: AegisConfig;
  try {
    config = ctx.config();
  } catch (err) {
    if (isAegisError(err)) return cannotStart(err.message);
    throw err;
  }
  // Sandboxes need root (namespaces, cgroups, nftables, the run state): say so before anything
  // else fails on a permission. `--dry-run` only compiles and prints, and works for anyone.
  if (!flags.dryRun && config.operator.uid !== 0) {
    return cannotStart(
      `running an agent needs root (it creates namespaces, cgroups and firewall rules); run it with sudo. As uid ${config.operator.uid} you can validate, test policies and --dry-run (see aegis doctor)`,
    );
  }
  // Opening the audit log (keys, store) overlaps loading the policy and resolving the image.
  let auditOpening: Promise<RunAudit> | null = null;
  if (!flags.dryRun) {
    auditOpening = openRunAudit(config);
    auditOpening.catch(() => undefined); // awaited below; never an unhandled rejection
  }
  /** A run that fails before its sandbox exists is still an audited event. */
  const auditFailedStart = async (err: { code: string; message: string }): Promise<void> => {
    const a = await auditOpening?.catch(() => null);
    if (!a) return;
    await a.append({
      actor: { execution: executionId },
      action: 'run.failed_to_start',
      decision: 'deny',
      reason: err.code,
      payload: { manifest: file, message: err.message },
    });
    const denied = secretDeniedEvent(err, executionId, undefined);
    if (denied !== undefined) await a.append(denied);
    await a.close().catch((e: unknown) => ctx.err(`aegis run: audit log: ${(e as Error).message}\n`));
  };

  let opts: RunSandboxOptions;
  let operatorEnv: readonly string[] = [];
  /** Which secret and version each placeholder stands for (in memory only; for the gateway's swap). */
  let runSecrets: RunSecrets = { env: {}, bindings: [] };
  let budget: AuditBudgetLimits;
  /** Said on stderr before the run and kept in the summary. */
  let warnings: string[] = [];
  try {
    // The host operator's audit budget per execution (AEGIS_AUDIT_BUDGET_*; docs/audit.md).
    budget = parseAuditBudget(config.auditEnv);
    const stateDir = flags.stateDir ?? DEFAULT_STATE_DIR;
    try {
      mkdirSync(stateDir, { recursive: true, mode: 0o711 });
    } catch {
      /* the cache is then unusable, which only costs time; the sandbox reports a bad state dir */
    }
    // Compiled policies are cached per user under the state dir (see the loader's ARCHITECTURE NOTE).
    const loaded = await loadManifest(file, { cacheDir: join(stateDir, 'policy-cache') });
    for (const w of loaded.warnings) ctx.err(w + '\n');
    const withEnv = applyOperatorEnv(loaded.policy, flags.env);
    if (!withEnv.ok) throw new SandboxError('sandbox.env_refused', withEnv.message);
    operatorEnv = withEnv.names;
    // Secret references become per-execution placeholders; a missing, expired or unbound secret
    // refuses the run (secrets.missing / secrets.expired / secrets.unbound; docs/secrets.md).
    runSecrets = await prepareRunSecrets({ dir: config.secretsDir, policy: withEnv.policy, now: Date.now() });
    const image = await resolveImage(loaded.policy.agent.runtime, { imagesDir: config.imagesDir });
    // Host policy: only images signed by a trusted key run (AEGIS_IMAGE_TRUSTED_KEYS; docs/images.md).
    const signedBy =
      config.imageTrustedKeys === undefined
        ? undefined
        : (await (await import('../images/signing.js')).requireSignedImage(config.imagesDir, image, config.imageTrustedKeys)).keyId;
    let seccompProfile: unknown;
    if (flags.seccompProfile !== undefined) {
      try {
        seccompProfile = JSON.parse(readFileSync(flags.seccompProfile, 'utf8'));
      } catch (err) {
        throw new SandboxError('sandbox.seccomp_profile_invalid', `--seccomp-profile ${flags.seccompProfile}: ${(err as Error).message}`);
      }
    }
    opts = {
      provenance: await runProvenance(file, loaded, { ...image, ...(signedBy !== undefined ? { signedBy } : {}) }),
      policy: withPlaceholders(withEnv.policy, runSecrets),
      manifestDir: dirname(file),
      imageRootfs: image.rootfs,
      executionId,
      volumes: flags.volume.map(parseVolumeFlag),
      extraArgs: args,
      ...(flags.isolation !== undefined ? { isolation: flags.isolation } : {}),
      ...(seccompProfile !== undefined ? { seccompProfile } : {}),
      ...(flags.stateDir !== undefined ? { stateDir: flags.stateDir } : {}),
      microvm: config.microvm,
    };
    if ((flags.isolation ?? loaded.policy.agent.isolation) === 'microvm' && config.microvm.allowEmulation && !flags.dryRun)
      ctx.err('aegis run: warning: isolation microvm under software emulation (AEGIS_MICROVM_ALLOW_EMULATION=1): slow, for testing only\n');
    warnings = unbackedWritePaths(
      opts.policy,
      (opts.volumes ?? []).map((v) => normalizeSandboxPath(v.sandbox) ?? v.sandbox),
    ).map(unbackedWriteWarning);
    for (const w of warnings) ctx.err(`aegis run: warning: ${w}\n`);
    if (flags.dryRun) {
      ctx.out(JSON.stringify(dryRun(opts), null, 2) + '\n');
      return 0;
    }
  } catch (err) {
    if (isAegisError(err)) {
      await auditFailedStart(err);
      return cannotStart(err.message);
    }
    await auditFailedStart({ code: 'internal', message: String(err) });
    throw err;
  }

  // A signal to AEGIS (SIGINT, SIGTERM, SIGHUP when the terminal goes, SIGQUIT) stops the agent
  // (TERM, grace, KILL), cleans up, and exits 137. Registered before anything is started, so a
  // signal during the gateway's start-up also ends in a clean teardown.
  // LIMITATION: SIGKILL of AEGIS leaves the agent running until the next AEGIS start sweeps it
  // (the timeout is enforced by this process); see docs/sandbox.md.
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;
  for (const sig of signals) process.on(sig, onSignal);
  let result: RunResult;
  let budgetStop = false;
  let alerting: AlertingRun | null = null;
  let alertCounts: Awaited<ReturnType<AlertingRun['finish']>> | undefined;
  try {
    // The audit log and, when the policy allows any network, the egress gateway. Either failing
    // means the agent does not start (fail secure).
    let services: RunServices;
    try {
      const audit = await auditOpening!;
      // Fail secure: an agent whose actions can no longer be logged is stopped.
      audit.onFailure = (err) => {
        ctx.err(`aegis run: the audit log failed (${err.message}): stopping the agent\n`);
        abort.abort();
        // The alert about it cannot be in the log that failed: stderr and the sinks only.
        alerting?.outsideLog({
          actor: { agent: opts.policy.agent.name, execution: executionId },
          action: 'audit.write_failed',
          decision: 'deny',
          reason: isAegisError(err) ? err.code : 'audit.store_io',
          payload: { message: err.message },
        });
      };
      // Runs a killed AEGIS left behind are swept now, and what was removed is logged.
      for (const ev of await sweepLostRuns(flags.stateDir ?? DEFAULT_STATE_DIR, config.gatewayEnv)) await audit.append(ev);
      // Fail secure (host policy `stop`, the default): an agent whose events are no longer
      // written one by one is stopped; the summary says why (`stopReason`).
      const onBudgetExhausted = (): void => {
        budgetStop = true;
        ctx.err(
          `aegis run: the audit budget of this run (${budget.maxEvents} events, ${budget.maxBytes} bytes) is used up: stopping the agent\n`,
        );
        abort.abort();
      };
      // Alerts are raised as the events are appended, into the same log (fail secure: rules that
      // cannot be loaded mean no start). AEGIS_ALERT_RULES=none turns them off.
      alerting = await alertingFor(config, flags.stateDir ?? DEFAULT_STATE_DIR, (line) => ctx.err(`aegis run: ${line}\n`));
      services = await startRunServices({
        policy: opts.policy,
        executionId,
        audit,
        budget,
        onBudgetExhausted,
        gatewayEnv: config.gatewayEnv,
        ...(alerting ? { wrapLog: alerting.wrap } : {}),
      });
    } catch (err) {
      if (alerting) await alerting.finish().catch(() => undefined);
      return cannotStart(`cannot start the run's services: ${(err as Error).message}`);
    }
    // The names (never the values) of the operator's --env, and which secret version each
    // reference stands for (never the placeholder), before the agent starts.
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
        await services.close().catch(() => undefined);
        if (alerting) await alerting.finish().catch(() => undefined);
        return cannotStart('the audit log failed: the agent was not started');
      }
    }
    try {
      const withServices: RunSandboxOptions = { ...opts, audit: services.audit, network: services.network, extraEnv: services.env };
      result = await runSandbox({ ...withServices, stdin: 'inherit', stdout: 'inherit', stderr: 'inherit', signal: abort.signal });
    } finally {
      try {
        await services.close();
      } catch (err) {
        ctx.err(`aegis run: audit/gateway shutdown failed: ${(err as Error).message}\n`);
      }
      // Every alert of the run is raised by now (the log is closed); delivery gets a bounded wait.
      if (alerting) alertCounts = await alerting.finish();
    }
  } finally {
    for (const sig of signals) process.off(sig, onSignal);
  }
  if (result.outputError !== undefined)
    ctx.err(
      `aegis run: writing the agent's ${result.outputError.stream} failed (${result.outputError.code}); the rest of it was discarded\n`,
    );
  if (result.error !== undefined) ctx.err(`aegis run: ${result.error.message}\n`);
  else if (budgetStop && result.status === 'killed') ctx.err(`aegis run: agent stopped: audit budget exhausted (${result.executionId})\n`);
  else if (result.status !== 'exited')
    ctx.err(`aegis run: agent ${result.status === 'killed' ? 'killed' : `stopped: ${result.status}`} (${result.executionId})\n`);
  for (const w of result.warnings ?? []) ctx.err(`aegis run: warning: ${w}\n`);
  // The per-agent anomaly baseline: after the agent exited and the log was closed (docs/alerts.md).
  if (result.status !== 'failed_to_start') {
    const { scoreFinishedRun } = await import('./run-baseline.js');
    await scoreFinishedRun(config, { agent: opts.policy.agent.name, execution: result.executionId }, (line) =>
      ctx.err(`aegis run: ${line}\n`),
    );
  }
  if (flags.summary !== undefined) {
    try {
      writeFileSync(
        flags.summary,
        summaryOf(
          result,
          budgetStop && result.status === 'killed' ? 'audit.budget_exhausted' : undefined,
          [...warnings, ...(result.warnings ?? [])],
          alertCounts,
        ),
      );
    } catch (err) {
      ctx.err(`aegis run: cannot write the summary: ${(err as Error).message}\n`);
    }
  }
  return result.exitCode;
}

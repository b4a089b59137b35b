/**
 * The body of `aegis run` (imported lazily by run-commands.ts): load the manifest, resolve the
 * image, then dry-run or run through the one execution path (src/run/execute.ts, shared with
 * the orchestrator's engine), and map the result to an exit code.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isAegisError } from '../errors.js';
import { dryRun, EXIT_CANNOT_START, newExecutionId, parseVolumeFlag, type RunResult } from '../sandbox/run.js';
import { useDockerEngine, useDockerHost, useDockerNetwork, useDockerOwnerHostFile } from '../sandbox/docker/host.js';
import { DEFAULT_STATE_DIR } from '../sandbox/state.js';
import { secretDeniedEvent } from '../secrets/run.js';
import type { AegisConfig } from '../config/index.js';
import {
  bindInput,
  loadRun,
  runMonitor,
  runWithServices,
  startServices,
  type AlertCounts,
  type BoundRun,
  type LoadedRun,
  type RunOutcome,
  type StartedServices,
} from '../run/execute.js';
import { openRunAudit, sweepLostRuns, type RunAudit } from '../run/services.js';
import { PhaseTimings } from '../run/timings.js';
import type { CliContext } from './context.js';
import type { RunFlags } from './run-commands.js';

/**
 * `stopReason` is present only when AEGIS stopped the agent for a reason of its own; `warnings`
 * only when there are any; `alerts` only when alerting ran ({raised, delivered, failed, dropped}).
 */
function summaryOf(
  r: Pick<RunResult, 'executionId' | 'status' | 'exitCode' | 'durationMs' | 'cpuMs' | 'maxMemoryBytes'>,
  stopReason?: 'audit.budget_exhausted',
  warnings: readonly string[] = [],
  alerts?: AlertCounts,
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

export async function runCommand(ctx: CliContext, file: string, args: string[], flags: RunFlags): Promise<number> {
  const started = performance.now();
  // --timings: phase durations on stderr; the first phase runs from the process's start.
  const timings = flags.timings === true ? new PhaseTimings(() => performance.now(), 0) : null;
  const phase = (name: string): void => timings?.mark(name);
  phase('node_and_cli_start');
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
  // The Docker engine of `isolation: docker` (DOCKER_HOST, read by src/config only).
  useDockerHost(config.dockerHost, config.dockerTls, config.dockerRefused);
  useDockerNetwork(config.dockerNetwork);
  useDockerEngine(config.dockerEngine);
  useDockerOwnerHostFile(join(config.home, 'docker-owner-host'));
  // Sandboxes need root (namespaces, cgroups, nftables, the run state): say so before anything
  // else fails on a permission. `--dry-run` only compiles and prints, and works for anyone.
  if (!flags.dryRun && config.operator.uid !== 0) {
    // A running server (AEGIS_SERVER, or its socket at the default path) runs it instead.
    const client = await import('./client-commands.js');
    if (await client.serverAvailable(ctx)) return client.runThroughServer(ctx, file, args, flags);
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

  const stateDir = flags.stateDir ?? DEFAULT_STATE_DIR;
  let bound: BoundRun;
  let l: LoadedRun;
  try {
    l = await loadRun({
      config,
      file,
      stateDir,
      ...(flags.seccompProfile !== undefined ? { seccompProfileFile: flags.seccompProfile } : {}),
      warn: (w) => ctx.err(w + '\n'),
      toolSecrets: !flags.dryRun,
    });
    phase('load_manifest_and_image');
    bound = await bindInput(
      config,
      l,
      {
        executionId,
        env: flags.env,
        args,
        volumes: flags.volume.map(parseVolumeFlag),
        ...(flags.isolation !== undefined ? { isolation: flags.isolation } : {}),
        ...(flags.stateDir !== undefined ? { stateDir: flags.stateDir } : {}),
      },
      Date.now(),
    );
    phase('bind_input');
    for (const w of bound.warnings) ctx.err(`aegis run: warning: ${w}\n`);
    if ((bound.opts.isolation ?? bound.opts.policy.agent.isolation) === 'microvm' && config.microvm.allowEmulation && !flags.dryRun)
      ctx.err('aegis run: warning: isolation microvm under software emulation (AEGIS_MICROVM_ALLOW_EMULATION=1): slow, for testing only\n');
    if (flags.dryRun) {
      ctx.out(JSON.stringify(dryRun(bound.opts), null, 2) + '\n');
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
  const { opts, warnings } = bound;
  const say = (line: string): void => ctx.err(`aegis run: ${line}\n`);

  // A signal to AEGIS (SIGINT, SIGTERM, SIGHUP when the terminal goes, SIGQUIT) stops the agent
  // (TERM, grace, KILL), cleans up, and exits 137. Registered before anything is started, so a
  // signal during the gateway's start-up also ends in a clean teardown.
  // LIMITATION: SIGKILL of AEGIS leaves the agent running until the next AEGIS start sweeps it
  // (the timeout is enforced by this process); see docs/sandbox.md.
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;
  for (const sig of signals) process.on(sig, onSignal);
  let outcome: RunOutcome;
  try {
    // The audit log and, when the policy allows any network, the egress gateway. Either failing
    // means the agent does not start (fail secure).
    let started: StartedServices;
    try {
      const audit = await auditOpening!;
      phase('audit.open_wait');
      audit.onFailure = (err) => {
        say(`the audit log failed (${err.message}): stopping the agent`);
        abort.abort();
      };
      // Runs a killed AEGIS left behind are swept now, and what was removed is logged.
      for (const ev of await sweepLostRuns(stateDir, config.gatewayEnv)) await audit.append(ev);
      phase('sweep_lost_runs');
      started = await startServices({
        config,
        policy: opts.policy,
        executionId,
        audit,
        budget: bound.budget,
        stateDir,
        say,
        ...(l.toolCredentials !== undefined ? { toolCredentials: l.toolCredentials } : {}),
        ...(l.toolSandboxes !== undefined ? { toolSandboxes: l.toolSandboxes } : {}),
        ...(flags.isolation !== undefined ? { isolation: flags.isolation } : {}),
        secrets: bound,
        imageRootfs: l.image.rootfs,
      });
    } catch (err) {
      return cannotStart(`cannot start the run's services: ${(err as Error).message}`);
    }
    phase('services.start');
    const monitor = await runMonitor(config, stateDir);
    if (monitor.note !== null) say(monitor.note);
    phase('monitor.create');
    outcome = await runWithServices(bound, started, {
      stdin: 'inherit',
      stdout: 'inherit',
      stderr: 'inherit',
      signal: abort.signal,
      say,
      ...(monitor.monitor !== undefined ? { monitor: monitor.monitor } : {}),
      ...(timings !== null ? { phase } : {}),
    });
  } finally {
    for (const sig of signals) process.off(sig, onSignal);
  }
  if (outcome.kind === 'cannot_start') return cannotStart(outcome.message);
  const { result, budgetStop, alertCounts } = outcome;
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
    phase('baseline');
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
  if (timings !== null) ctx.err(timings.format('aegis run: timing: '));
  return result.exitCode;
}

/**
 * The body of `aegis run` (imported lazily by run-commands.ts): load the manifest, resolve the
 * image, then dry-run or run through the sandbox library, and map the result to an exit code.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { isAegisError } from '../errors.js';
import { resolveImage } from '../images/index.js';
import { dryRun, EXIT_CANNOT_START, parseVolumeFlag, runSandbox, type RunResult, type RunSandboxOptions } from '../sandbox/run.js';
import { SandboxError } from '../sandbox/errors.js';
import type { CliContext } from './context.js';
import { loadManifestFile } from './load-manifest.js';
import type { RunFlags } from './run-commands.js';

function summaryOf(r: Pick<RunResult, 'executionId' | 'status' | 'exitCode' | 'durationMs' | 'cpuMs' | 'maxMemoryBytes'>): string {
  return (
    JSON.stringify({
      executionId: r.executionId,
      status: r.status,
      exitCode: r.exitCode,
      durationMs: Math.round(r.durationMs),
      cpuMs: Math.round(r.cpuMs),
      maxMemoryBytes: r.maxMemoryBytes,
    }) + '\n'
  );
}

export async function runCommand(ctx: CliContext, file: string, args: string[], flags: RunFlags): Promise<number> {
  const started = performance.now();
  const cannotStart = (message: string): number => {
    ctx.err(`aegis run: ${message}\n`);
    if (flags.summary !== undefined) {
      try {
        writeFileSync(flags.summary, summaryOf({ executionId: '', status: 'failed_to_start', exitCode: EXIT_CANNOT_START, durationMs: performance.now() - started, cpuMs: 0, maxMemoryBytes: 0 }));
      } catch (err) {
        ctx.err(`aegis run: cannot write the summary: ${(err as Error).message}\n`);
      }
    }
    return EXIT_CANNOT_START;
  };

  let opts: RunSandboxOptions;
  try {
    const loaded = await loadManifestFile(file);
    for (const w of loaded.warnings) ctx.err(w + '\n');
    const image = await resolveImage(loaded.policy.agent.runtime);
    let seccompProfile: unknown;
    if (flags.seccompProfile !== undefined) {
      try {
        seccompProfile = JSON.parse(readFileSync(flags.seccompProfile, 'utf8'));
      } catch (err) {
        throw new SandboxError('sandbox.seccomp_profile_invalid', `--seccomp-profile ${flags.seccompProfile}: ${(err as Error).message}`);
      }
    }
    opts = {
      policy: loaded.policy,
      manifestDir: dirname(file),
      imageRootfs: image.rootfs,
      volumes: flags.volume.map(parseVolumeFlag),
      extraArgs: args,
      ...(flags.isolation !== undefined ? { isolation: flags.isolation } : {}),
      ...(seccompProfile !== undefined ? { seccompProfile } : {}),
      ...(flags.stateDir !== undefined ? { stateDir: flags.stateDir } : {}),
    };
    if (flags.dryRun) {
      ctx.out(JSON.stringify(dryRun(opts), null, 2) + '\n');
      return 0;
    }
  } catch (err) {
    if (isAegisError(err)) return cannotStart(err.message);
    throw err;
  }

  // SIGINT/SIGTERM to AEGIS: stop the agent (TERM, grace, KILL), clean up, exit 137.
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let result: RunResult;
  try {
    result = await runSandbox({ ...opts, stdin: 'inherit', stdout: 'inherit', stderr: 'inherit', signal: abort.signal });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (result.error !== undefined) ctx.err(`aegis run: ${result.error.message}\n`);
  else if (result.status !== 'exited') ctx.err(`aegis run: agent ${result.status === 'killed' ? 'killed' : `stopped: ${result.status}`} (${result.executionId})\n`);
  if (flags.summary !== undefined) {
    try {
      writeFileSync(flags.summary, summaryOf(result));
    } catch (err) {
      ctx.err(`aegis run: cannot write the summary: ${(err as Error).message}\n`);
    }
  }
  return result.exitCode;
}

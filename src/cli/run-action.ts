/**
 * The body of `aegis run` (imported lazily by run-commands.ts): load the manifest, resolve the
 * image, then dry-run or run through the sandbox library, and map the result to an exit code.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAegisError } from '../errors.js';
import { resolveImage } from '../images/index.js';
import type { Policy } from '../policy/types.js';
import { dryRun, EXIT_CANNOT_START, newExecutionId, parseVolumeFlag, runSandbox, type RunResult, type RunSandboxOptions } from '../sandbox/run.js';
import { SandboxError } from '../sandbox/errors.js';
import { DEFAULT_STATE_DIR } from '../sandbox/state.js';
import type { CliContext } from './context.js';
import { openRunAudit, startRunServices, type RunAudit, type RunServices } from './run-services.js';
import type { RunFlags } from './run-commands.js';

/** Bump when the cache entry format changes. */
const POLICY_CACHE_VERSION = '1';

/**
 * Identity of the manifest parser and policy compiler this AEGIS runs: name, size and mtime of
 * their compiled modules. Any rebuild that changes them changes every cache key, so a fixed
 * rule never meets a policy compiled by the old one.
 */
function compilerStamp(): string {
  const parts: string[] = [];
  for (const area of ['manifest', 'policy']) {
    const dir = fileURLToPath(new URL(`../${area}/`, import.meta.url));
    for (const f of readdirSync(dir).sort()) {
      if (!f.endsWith('.js')) continue;
      const st = statSync(join(dir, f));
      parts.push(`${area}/${f}:${st.size}:${st.mtimeMs}`);
    }
  }
  return parts.join('\n');
}
const MAX_MANIFEST_READ = 1024 * 1024;

interface CachedPolicy {
  policy: Policy;
  warnings: string[];
}

/**
 * The manifest's compiled Policy. Compiled policies are cached under the state dir by the
 * SHA-256 of the exact manifest bytes, so a repeated `aegis run` of an unchanged manifest does
 * not load the manifest parser (zod, yaml, tldts: most of the CLI's start-up time). The bytes
 * hashed are the bytes parsed. ARCHITECTURE NOTE: the cache lives in the root-only state dir
 * (0700); whoever can write there can already replace AEGIS's runtime state.
 */
async function loadPolicy(file: string, stateDir: string): Promise<CachedPolicy> {
  const { ManifestError } = await import('../manifest/errors.js');
  let bytes: Buffer;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_MANIFEST_READ) throw new Error('file too large');
    bytes = readFileSync(file);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ManifestError('manifest.unreadable', `${file}: cannot read the manifest (${why})`);
  }
  const key = createHash('sha256').update(POLICY_CACHE_VERSION).update('\0').update(compilerStamp()).update('\0').update(bytes).digest('hex');
  const cacheDir = join(stateDir, 'policy-cache');
  const cached = join(cacheDir, `${key}.json`);
  try {
    return JSON.parse(readFileSync(cached, 'utf8')) as CachedPolicy;
  } catch {
    /* miss: compile below */
  }
  const [{ parseManifest, formatIssue }, { compilePolicy }, { formatWarning }] = await Promise.all([
    import('../manifest/index.js'),
    import('../policy/compile.js'),
    import('./load-manifest.js'),
  ]);
  const r = parseManifest(bytes.toString('utf8'));
  if (!r.ok) throw new ManifestError('manifest.invalid', r.issues.map((i) => formatIssue(file, i)).join('\n'), r.issues);
  const entry: CachedPolicy = { policy: compilePolicy(r.manifest), warnings: r.warnings.map((w) => formatWarning(file, w)) };
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o711 });
    mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    const tmp = `${cached}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(entry), { mode: 0o600 });
    renameSync(tmp, cached);
  } catch {
    /* a cache that cannot be written only costs time */
  }
  return entry;
}

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
  const executionId = newExecutionId();
  const cannotStart = (message: string): number => {
    ctx.err(`aegis run: ${message}\n`);
    if (flags.summary !== undefined) {
      try {
        writeFileSync(flags.summary, summaryOf({ executionId, status: 'failed_to_start', exitCode: EXIT_CANNOT_START, durationMs: performance.now() - started, cpuMs: 0, maxMemoryBytes: 0 }));
      } catch (err) {
        ctx.err(`aegis run: cannot write the summary: ${(err as Error).message}\n`);
      }
    }
    return EXIT_CANNOT_START;
  };

  // Opening the audit log (keys, store) overlaps loading the policy and resolving the image.
  let auditOpening: Promise<RunAudit> | null = null;
  if (!flags.dryRun) {
    auditOpening = openRunAudit();
    auditOpening.catch(() => undefined); // awaited below; never an unhandled rejection
  }
  /** A run that fails before its sandbox exists is still an audited event. */
  const auditFailedStart = async (err: { code: string; message: string }): Promise<void> => {
    const a = await auditOpening?.catch(() => null);
    if (!a) return;
    await a.append({ actor: { execution: executionId }, action: 'run.failed_to_start', decision: 'deny', reason: err.code, payload: { manifest: file, message: err.message } });
    await a.close().catch((e: unknown) => ctx.err(`aegis run: audit log: ${(e as Error).message}\n`));
  };

  let opts: RunSandboxOptions;
  try {
    const loaded = await loadPolicy(file, flags.stateDir ?? DEFAULT_STATE_DIR);
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
      executionId,
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
    if (isAegisError(err)) {
      await auditFailedStart(err);
      return cannotStart(err.message);
    }
    await auditFailedStart({ code: 'internal', message: String(err) });
    throw err;
  }

  // The audit log and, when the policy allows any network, the egress gateway. Either failing
  // means the agent does not start (fail secure).
  let services: RunServices;
  try {
    services = await startRunServices({ policy: opts.policy, executionId, audit: await auditOpening! });
  } catch (err) {
    return cannotStart(`cannot start the run's services: ${(err as Error).message}`);
  }
  opts = { ...opts, audit: services.audit, network: services.network, extraEnv: services.env };

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
    try {
      await services.close();
    } catch (err) {
      ctx.err(`aegis run: audit/gateway shutdown failed: ${(err as Error).message}\n`);
    }
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

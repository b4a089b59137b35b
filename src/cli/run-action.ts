/**
 * The body of `aegis run` (imported lazily by run-commands.ts): load the manifest, resolve the
 * image, then dry-run or run through the sandbox library, and map the result to an exit code.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAegisError } from '../errors.js';
import { resolveImage } from '../images/index.js';
import type { Policy } from '../policy/types.js';
import { unbackedWritePaths, unbackedWriteWarning } from '../sandbox/host-paths.js';
import { normalizeSandboxPath } from '../policy/paths.js';
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
  // The Node version (IDNA mapping) and the exact dependency set (zod, yaml, tldts, ipaddr.js)
  // decide policies as much as our own modules do.
  const parts: string[] = [process.version];
  try {
    parts.push(createHash('sha256').update(readFileSync(fileURLToPath(new URL('../../../package-lock.json', import.meta.url)))).digest('hex'));
  } catch {
    parts.push('no-lockfile');
  }
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
 * hashed are the bytes parsed. ARCHITECTURE NOTE: entries are read only from a cache dir and
 * file owned by this user and writable by nobody else (0700 / no group or other write), so only
 * this user could have written them; the key covers the compiler's modules, the Node version
 * and the dependency lockfile.
 */
export async function loadPolicy(file: string, stateDir: string): Promise<CachedPolicy> {
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
  // A cache entry is trusted only in a directory that nobody but this user could have written
  // (owned by us, mode 0700, not a symlink) and only from a file with the same property.
  const trusted = (path: string, dir: boolean): boolean => {
    try {
      const st = lstatSync(path);
      const owner = st.uid === process.geteuid?.();
      return owner && (dir ? st.isDirectory() && (st.mode & 0o077) === 0 : st.isFile() && (st.mode & 0o022) === 0);
    } catch {
      return false;
    }
  };
  let cacheUsable = existsSync(cacheDir) ? trusted(cacheDir, true) : true;
  if (cacheUsable && trusted(cached, false)) {
    try {
      const entry = JSON.parse(readFileSync(cached, 'utf8')) as CachedPolicy;
      if (entry?.policy?.version === '1.0' && Array.isArray(entry.warnings)) return entry;
    } catch {
      /* unreadable: compile below */
    }
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
    cacheUsable &&= trusted(cacheDir, true);
    if (!cacheUsable) return entry; // someone else's directory: never write policies there
    const tmp = `${cached}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(entry), { mode: 0o600 });
    renameSync(tmp, cached);
  } catch {
    /* a cache that cannot be written only costs time */
  }
  return entry;
}

function summaryOf(r: Pick<RunResult, 'executionId' | 'status' | 'exitCode' | 'durationMs' | 'cpuMs' | 'maxMemoryBytes'>, warnings: readonly string[] = []): string {
  return (
    JSON.stringify({
      executionId: r.executionId,
      status: r.status,
      exitCode: r.exitCode,
      durationMs: Math.round(r.durationMs),
      cpuMs: Math.round(r.cpuMs),
      maxMemoryBytes: r.maxMemoryBytes,
      ...(warnings.length > 0 ? { warnings } : {}),
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
  /** Said on stderr before the run and kept in the summary. */
  let warnings: string[] = [];
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
    warnings = unbackedWritePaths(opts.policy, (opts.volumes ?? []).map((v) => normalizeSandboxPath(v.sandbox) ?? v.sandbox)).map(unbackedWriteWarning);
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
      };
      services = await startRunServices({ policy: opts.policy, executionId, audit });
    } catch (err) {
      return cannotStart(`cannot start the run's services: ${(err as Error).message}`);
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
    }
  } finally {
    for (const sig of signals) process.off(sig, onSignal);
  }
  if (result.error !== undefined) ctx.err(`aegis run: ${result.error.message}\n`);
  else if (result.status !== 'exited') ctx.err(`aegis run: agent ${result.status === 'killed' ? 'killed' : `stopped: ${result.status}`} (${result.executionId})\n`);
  for (const w of result.warnings ?? []) ctx.err(`aegis run: warning: ${w}\n`);
  if (flags.summary !== undefined) {
    try {
      writeFileSync(flags.summary, summaryOf(result, [...warnings, ...(result.warnings ?? [])]));
    } catch (err) {
      ctx.err(`aegis run: cannot write the summary: ${(err as Error).message}\n`);
    }
  }
  return result.exitCode;
}

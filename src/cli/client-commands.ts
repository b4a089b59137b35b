/**
 * The client commands: the CLI against a running `aegis serve`, through the SDK (sdk/), over TCP
 * or the server's unix socket. They need no root: the server runs the sandboxes.
 *
 * Contract (other tools call these exactly):
 *   deploy <agent.yaml> [--json]      sends the manifest and a .tar.gz of its folder; prints
 *                                     "deployed <name> version <n> (manifest <digest>, code <digest>)";
 *                                     a bad manifest: "file:line:col: path: message" lines on stderr, exit 1
 *   exec <agent> [--stdin] [--env NAME=VALUE]... [--detach] [-- args]
 *                                     streams the agent's stdout/stderr; exit code: the agent's; 137 when it was
 *                                     killed (oom, timeout, cancel); 125 when it could not start, was lost, or
 *                                     the server could not be used. --detach prints the execution id and returns
 *   ps [--json] [--agent A] [--status S]
 *                                     executions: ID AGENT STATUS EXIT DURATION CREATED
 *   logs [-f] <execution>             its output (stdout to stdout, stderr to stderr); -f follows it to the end
 *   kill <execution>                  asks the server to cancel it (TERM, grace, KILL: recorded `killed`)
 *   pool set <agent> <N>              keeps N warm sandboxes of the agent (0: none)
 *   keys ls [--json] | keys revoke <id> | keys create --role R [--expires 30d] --server URL
 *                                     keys through the API (admin); `keys create` without --server is the
 *                                     offline bootstrap against --data (src/cli/serve-commands.ts)
 *   Every command takes --server URL (http(s)://host:port or unix:/path; default AEGIS_SERVER, else
 *   unix:/run/aegis/aegis.sock); the key is AEGIS_API_KEY (never a flag: argv is visible to every user).
 * Exit codes (but exec): 0 done; 1 the server refused or failed (`aegis <cmd>: <code>: <message>`
 * on stderr, with the role needed for a 403); 2 usage; 3 the server cannot be reached.
 */
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import type { Aegis, ExecutionEvent, ExecutionInfo, ExecutionStatus, KeyInfo } from '../../sdk/src/index.js';
import { type CliContext, EXIT } from './context.js';

/** Exit code of a client command when the server cannot be reached. */
export const EXIT_UNREACHABLE = 3;
/** `exec`: the agent was killed (as `aegis run`). */
const EXIT_KILLED = 137;
/** `exec`: the agent could not be started, or the server could not be used (as `aegis run`). */
const EXIT_CANNOT_START = 125;

interface ServerOpts {
  server?: string;
}

/** The role each client command needs (the server's role matrix decides; this is for messages). */
const ROLE_NEEDED: Readonly<Record<string, string>> = {
  deploy: 'deployer',
  exec: 'operator',
  run: 'deployer and operator',
  ps: 'operator',
  logs: 'operator',
  kill: 'operator',
  pool: 'operator',
  keys: 'admin',
};

/** The SDK client for --server / AEGIS_SERVER / the default socket, with AEGIS_API_KEY. */
export async function openClient(ctx: CliContext, opts: ServerOpts): Promise<Aegis> {
  const { DEFAULT_SERVER_SOCKET, parseServerUrl } = await import('../config/index.js');
  const config = ctx.config();
  const url =
    opts.server !== undefined ? parseServerUrl(opts.server, '--server') : (config.client.server ?? `unix:${DEFAULT_SERVER_SOCKET}`);
  const { Aegis } = await import('../../sdk/src/index.js');
  return new Aegis({ url, ...(config.client.apiKey !== undefined ? { apiKey: config.client.apiKey } : {}) });
}

/** Prints an error of a client command and returns its exit code (rethrows what is not ours). */
export async function reportClientError(
  ctx: CliContext,
  cmd: string,
  err: unknown,
  codes: { failure: number; unreachable: number } = { failure: EXIT.failure, unreachable: EXIT_UNREACHABLE },
): Promise<number> {
  const { AegisApiError, AegisClientError } = await import('../../sdk/src/index.js');
  const { isAegisError } = await import('../errors.js');
  const say = (s: string): void => ctx.err(`aegis ${cmd}: ${s}\n`);
  if (err instanceof AegisApiError) {
    if (err.code === 'unauthorized') say(`unauthorized: ${err.message} (set AEGIS_API_KEY to a valid, unexpired key)`);
    else if (err.code === 'forbidden') say(`forbidden: ${err.message} (this needs the ${ROLE_NEEDED[cmd] ?? 'admin'} role, or admin)`);
    else say(`${err.code}: ${err.message}`);
    return codes.failure;
  }
  if (err instanceof AegisClientError) {
    if (err.code === 'unreachable') {
      say(`${err.message}: is \`aegis serve\` running? (choose the server with --server or AEGIS_SERVER)`);
      return codes.unreachable;
    }
    say(`${err.code}: ${err.message}`);
    return codes.failure;
  }
  if (isAegisError(err)) {
    say(`${err.code}: ${err.message}`);
    return EXIT.usage;
  }
  throw err;
}

/** Runs a client command's body, turning its errors into messages and exit codes. */
function action<A extends unknown[]>(
  ctx: CliContext,
  cmd: string,
  body: (...args: A) => Promise<number | void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      const code = await body(...args);
      if (typeof code === 'number') ctx.exitCode = code;
    } catch (err) {
      ctx.exitCode = await reportClientError(ctx, cmd, err);
    }
  };
}

const json = (ctx: CliContext, v: unknown): void => ctx.out(JSON.stringify(v, null, 2) + '\n');

/** The exit code `exec` (and `run` through a server) ends with for an execution's final state. */
export function exitCodeOf(status: ExecutionStatus, exitCode: number | null): number {
  switch (status) {
    case 'exited':
      return exitCode ?? EXIT_CANNOT_START;
    case 'oom':
    case 'timeout':
    case 'killed':
      return EXIT_KILLED;
    case 'failed_to_start':
    case 'lost':
    case 'queued':
    case 'running':
      return EXIT_CANNOT_START;
  }
}

/** `NAME=VALUE` flags into an object (a usage error otherwise). */
export function parseEnvFlags(flags: readonly string[]): Record<string, string> | string {
  const env: Record<string, string> = {};
  for (const f of flags) {
    const eq = f.indexOf('=');
    if (eq <= 0) return `--env ${f}: expected NAME=VALUE`;
    env[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return env;
}

async function readStdin(max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin) {
    n += (c as Buffer).length;
    if (n > max) throw new Error(`stdin is larger than ${max} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Largest stdin `exec --stdin` sends (the API takes it as one JSON string). */
const MAX_STDIN = 1024 * 1024;

/**
 * Follows an execution's event stream, writing its output; returns the final record. When the
 * stream ends without an `exit` event (a cut connection), the record is fetched until it ends.
 */
export async function follow(
  ctx: CliContext,
  aegis: Aegis,
  id: string,
  opts: { idleStopMs?: number; onEvent?: (ev: ExecutionEvent) => void } = {},
): Promise<ExecutionInfo | undefined> {
  const run = await aegis.executions.get(id);
  const stream = run.stream();
  let idle: NodeJS.Timeout | undefined;
  let stopped = false;
  const arm = (): void => {
    if (opts.idleStopMs === undefined) return;
    clearTimeout(idle);
    idle = setTimeout(() => {
      stopped = true;
      void stream.return(undefined);
    }, opts.idleStopMs);
  };
  arm();
  try {
    for await (const ev of stream) {
      arm();
      opts.onEvent?.(ev);
      if (ev.type === 'stdout') ctx.out(ev.data);
      else if (ev.type === 'stderr') ctx.err(ev.data);
    }
  } finally {
    clearTimeout(idle);
  }
  if (stopped) return undefined;
  return run.wait();
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

function when(v: unknown): string {
  if (typeof v === 'number') return new Date(v).toISOString();
  return typeof v === 'string' ? v : '-';
}

export function registerClientCommands(program: Command, ctx: CliContext): void {
  const withServer = (c: Command): Command =>
    c.option(
      '--server <url>',
      'the AEGIS server: http(s)://host:port or unix:/path (default AEGIS_SERVER, else unix:/run/aegis/aegis.sock)',
    );

  withServer(program.command('deploy'))
    .description(
      'deploy an agent to an AEGIS server: its agent.yaml and a .tar.gz of the folder holding it (a new version when the name exists)',
    )
    .argument('<agent.yaml>', 'the agent manifest; its folder is the agent code')
    .option('--json', 'print {"name","version","manifestDigest","codeDigest"}')
    .action(
      action(ctx, 'deploy', async (file: string, opts: ServerOpts & { json?: boolean }) => {
        const { readManifestBytes } = await import('../loader/manifest-loader.js');
        const text = readManifestBytes(file).toString('utf8');
        const aegis = await openClient(ctx, opts);
        const { AegisApiError } = await import('../../sdk/src/index.js');
        try {
          const agent = await aegis.agents.deploy({ manifest: text, codeDir: dirname(resolve(file)) });
          if (opts.json) json(ctx, agent.info);
          else
            ctx.out(
              `deployed ${agent.name} version ${agent.version} (manifest ${agent.info.manifestDigest}, code ${agent.info.codeDigest})\n`,
            );
          return EXIT.ok;
        } catch (err) {
          if (!(err instanceof AegisApiError) || err.code !== 'manifest_invalid' || err.issues.length === 0) throw err;
          const { formatIssue } = await import('../manifest/parse.js');
          for (const i of err.issues) ctx.err(formatIssue(file, i) + '\n');
          return EXIT.failure;
        }
      }),
    );

  withServer(program.command('exec'))
    .description(
      "execute a deployed agent on the server, streaming its output; exit code is the agent's (137: killed, 125: could not start)",
    )
    .argument('<agent>', 'the agent name')
    .argument('[args...]', 'arguments appended to the entrypoint (after --)')
    .option('--stdin', "send this process's stdin (read to its end) as the agent's stdin")
    .option(
      '--env <NAME=VALUE>',
      'an environment addition the manifest allows (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--detach', 'print the execution id and return at once')
    .action(async (name: string, args: string[], opts: ServerOpts & { stdin?: boolean; env: string[]; detach?: boolean }) => {
      try {
        const env = parseEnvFlags(opts.env);
        if (typeof env === 'string') {
          ctx.err(`aegis exec: ${env}\n`);
          ctx.exitCode = EXIT.usage;
          return;
        }
        const stdin = opts.stdin ? await readStdin(MAX_STDIN) : undefined;
        const aegis = await openClient(ctx, opts);
        const agent = await aegis.agents.get(name);
        const run = await agent.execute({ args, ...(stdin !== undefined ? { stdin } : {}), ...(Object.keys(env).length ? { env } : {}) });
        if (opts.detach) {
          ctx.out(`${run.id}\n`);
          return;
        }
        ctx.exitCode = await execAndFollow(ctx, aegis, run.id);
      } catch (err) {
        ctx.exitCode = await reportClientError(ctx, 'exec', err, { failure: EXIT_CANNOT_START, unreachable: EXIT_CANNOT_START });
      }
    });

  withServer(program.command('ps'))
    .description("list the server's executions")
    .option('--json', 'print the executions as a JSON array')
    .option('--agent <name>', 'only this agent')
    .option('--status <status>', 'only this status (queued, running, exited, oom, timeout, killed, failed_to_start, lost)')
    .action(
      action(ctx, 'ps', async (opts: ServerOpts & { json?: boolean; agent?: string; status?: ExecutionStatus }) => {
        const aegis = await openClient(ctx, opts);
        const list = await aegis.executions.list({
          ...(opts.agent ? { agent: opts.agent } : {}),
          ...(opts.status ? { status: opts.status } : {}),
        });
        if (opts.json) return json(ctx, list);
        const rows = [['ID', 'AGENT', 'STATUS', 'EXIT', 'DURATION', 'CREATED']];
        for (const e of list) {
          rows.push([
            e.id,
            e.agent,
            e.status,
            e.exitCode === null ? '-' : String(e.exitCode),
            e.durationMs === null ? '-' : `${Math.round(e.durationMs)}ms`,
            when(e.createdAt),
          ]);
        }
        ctx.out(table(rows));
      }),
    );

  withServer(program.command('logs'))
    .description("print an execution's output (stdout and stderr); -f follows it until it ends")
    .argument('<execution>', 'the execution id')
    .option('-f, --follow', 'keep printing until the execution ends')
    .action(
      action(ctx, 'logs', async (id: string, opts: ServerOpts & { follow?: boolean }) => {
        const aegis = await openClient(ctx, opts);
        const info = await aegis.executions.info(id);
        const { isFinalStatus } = await import('../../sdk/src/index.js');
        // Without -f, a running execution's output so far: the stream is left once it is quiet.
        await follow(ctx, aegis, id, opts.follow || isFinalStatus(info.status) ? {} : { idleStopMs: 300 });
      }),
    );

  withServer(program.command('kill'))
    .description('cancel an execution (TERM, grace, KILL; recorded as killed)')
    .argument('<execution>', 'the execution id')
    .action(
      action(ctx, 'kill', async (id: string, opts: ServerOpts) => {
        const aegis = await openClient(ctx, opts);
        await aegis.executions.cancel(id);
        ctx.out(`cancel requested: ${id}\n`);
      }),
    );

  const pool = program.command('pool').description("an agent's warm pool on the server");
  withServer(pool.command('set'))
    .description('keep N warm (prepared) sandboxes of an agent; 0 removes the pool')
    .argument('<agent>', 'the agent name')
    .argument('<N>', 'how many warm sandboxes')
    .action(
      action(ctx, 'pool', async (name: string, n: string, opts: ServerOpts) => {
        if (!/^\d{1,4}$/.test(n)) {
          ctx.err(`aegis pool set: ${n} is not a whole number of sandboxes\n`);
          return EXIT.usage;
        }
        const aegis = await openClient(ctx, opts);
        await aegis.agents.setPool(name, Number(n));
        ctx.out(`pool ${name}: ${Number(n)} warm\n`);
        return EXIT.ok;
      }),
    );
}

/** Follows an execution to its end and returns the exit code `exec` ends with. */
export async function execAndFollow(ctx: CliContext, aegis: Aegis, id: string): Promise<number> {
  // Ctrl-C (or a TERM to the CLI) cancels the execution; the stream then ends with its exit.
  let cancelling = false;
  const onSignal = (): void => {
    if (cancelling) return;
    cancelling = true;
    ctx.err(`aegis exec: cancelling ${id}\n`);
    aegis.executions.cancel(id).catch(() => undefined);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const info = await follow(ctx, aegis, id);
    if (info === undefined) return EXIT_CANNOT_START;
    const err = (info.summary as { error?: { code?: string; message?: string } } | null | undefined)?.error;
    if (info.status === 'failed_to_start') ctx.err(`aegis exec: ${id} could not start${err?.message ? `: ${err.message}` : ''}\n`);
    else if (info.status === 'lost') ctx.err(`aegis exec: ${id} was lost (its worker stopped)\n`);
    else if (info.status !== 'exited') ctx.err(`aegis exec: ${id} ended ${info.status}\n`);
    return exitCodeOf(info.status, info.exitCode);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * `keys ls`, `keys revoke`, and `keys create` through the API, added to the `keys` command that
 * `aegis serve`'s module declares (its `keys create` without --server is the offline bootstrap).
 */
export function registerClientKeyCommands(keys: Command, ctx: CliContext): void {
  keys
    .command('ls')
    .description("list the server's API keys (never the keys themselves)")
    .option('--json', 'print the keys as a JSON array')
    .option('--server <url>', 'the AEGIS server (default AEGIS_SERVER, else unix:/run/aegis/aegis.sock)')
    .action(
      action(ctx, 'keys', async (opts: ServerOpts & { json?: boolean }) => {
        const aegis = await openClient(ctx, opts);
        const list: KeyInfo[] = await aegis.keys.list();
        if (opts.json) return json(ctx, list);
        const rows = [['ID', 'ROLE', 'EXPIRES', 'STATE']];
        for (const k of list) rows.push([k.id, k.role, k.expires ?? 'never', k.revoked !== null ? `revoked ${k.revoked}` : 'active']);
        ctx.out(table(rows));
      }),
    );
  keys
    .command('revoke')
    .description('revoke an API key (at once, for every request that follows)')
    .argument('<id>', 'the key id')
    .option('--server <url>', 'the AEGIS server (default AEGIS_SERVER, else unix:/run/aegis/aegis.sock)')
    .action(
      action(ctx, 'keys', async (id: string, opts: ServerOpts) => {
        const aegis = await openClient(ctx, opts);
        await aegis.keys.revoke(id);
        ctx.out(`revoked ${id}\n`);
      }),
    );
}

/** `keys create --server URL`: through the API; prints the new key alone on stdout (shown once). */
export async function createKeyThroughServer(ctx: CliContext, opts: { server: string; role: string; expires?: string }): Promise<number> {
  try {
    const aegis = await openClient(ctx, opts);
    const created = await aegis.keys.create({
      role: opts.role as KeyInfo['role'],
      ...(opts.expires !== undefined ? { expires: opts.expires } : {}),
    });
    ctx.out(`${created.key}\n`);
    ctx.err(`key ${created.id} (${created.role}${created.expires ? `, expires ${created.expires}` : ''}): shown once, store it now\n`);
    return EXIT.ok;
  } catch (err) {
    return reportClientError(ctx, 'keys', err);
  }
}

/** What `aegis run` passes when it goes through a server (a subset of its flags works there). */
export interface RunThroughServerFlags {
  readonly volume: readonly string[];
  readonly env: readonly string[];
  readonly isolation?: string;
  readonly seccompProfile?: string;
  readonly summary?: string;
}

/**
 * True when `aegis run` by a non-root user should go through a server: AEGIS_SERVER is set, or
 * the default socket exists.
 */
export async function serverAvailable(ctx: CliContext): Promise<boolean> {
  const { DEFAULT_SERVER_SOCKET } = await import('../config/index.js');
  if (ctx.config().client.server !== undefined) return true;
  const { statSync } = await import('node:fs');
  try {
    return statSync(DEFAULT_SERVER_SOCKET).isSocket();
  } catch {
    return false;
  }
}

/**
 * `aegis run` for a user who is not root, through the server: the manifest and its folder are
 * deployed (a new version of the agent, as `aegis deploy` does), then executed and followed as
 * `aegis exec` does. Exit codes as `aegis run`'s.
 * LIMITATION: --volume, --isolation and --seccomp-profile are host-side choices the server does not
 * take from a client: refused (125). Stdin is not forwarded (`aegis exec --stdin` sends it).
 */
export async function runThroughServer(
  ctx: CliContext,
  file: string,
  args: readonly string[],
  flags: RunThroughServerFlags,
): Promise<number> {
  const refuse = (why: string): number => {
    ctx.err(`aegis run: ${why}\n`);
    return EXIT_CANNOT_START;
  };
  if (flags.volume.length > 0 || flags.isolation !== undefined || flags.seccompProfile !== undefined)
    return refuse(
      '--volume, --isolation and --seccomp-profile need root: through the server (as a user that is not root) they are not available',
    );
  const env = parseEnvFlags(flags.env);
  if (typeof env === 'string') return refuse(env);
  try {
    const { readManifestBytes } = await import('../loader/manifest-loader.js');
    const text = readManifestBytes(file).toString('utf8');
    const aegis = await openClient(ctx, {});
    const { AegisApiError } = await import('../../sdk/src/index.js');
    let agent;
    try {
      agent = await aegis.agents.deploy({ manifest: text, codeDir: dirname(resolve(file)) });
    } catch (err) {
      if (!(err instanceof AegisApiError) || err.code !== 'manifest_invalid' || err.issues.length === 0) throw err;
      const { formatIssue } = await import('../manifest/parse.js');
      for (const i of err.issues) ctx.err(formatIssue(file, i) + '\n');
      return EXIT_CANNOT_START;
    }
    ctx.err(`aegis run: through the server at ${aegis.where} (${agent.name} version ${agent.version})\n`);
    if (!process.stdin.isTTY && process.stdin.readable)
      ctx.err('aegis run: note: stdin is not forwarded through the server (aegis exec --stdin sends it)\n');
    const run = await agent.execute({ args, ...(Object.keys(env).length ? { env } : {}) });
    const code = await execAndFollow(ctx, aegis, run.id);
    if (flags.summary !== undefined) {
      const info = await aegis.executions.info(run.id);
      const { writeFileSync } = await import('node:fs');
      writeFileSync(
        flags.summary,
        JSON.stringify(
          info.summary ?? { executionId: info.id, status: info.status, exitCode: info.exitCode, durationMs: info.durationMs },
        ) + '\n',
      );
    }
    return code;
  } catch (err) {
    return reportClientError(ctx, 'run', err, { failure: EXIT_CANNOT_START, unreachable: EXIT_CANNOT_START });
  }
}

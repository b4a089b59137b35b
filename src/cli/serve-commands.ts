/**
 * `aegis serve` and `aegis keys create` (issue 11's contract):
 *
 *   serve [--listen HOST:PORT] [--socket PATH] [--data DIR] [--database URL] [--tls-cert F --tls-key F]
 *         [--insecure] [--worker ID] [--capacity N] [--state-dir DIR] [--output-retention 24h]
 *       Serves the API. Without --listen it serves only the unix socket (default
 *       /run/aegis/aegis.sock); with --listen it serves TCP, and the socket too when --socket is
 *       given. State: SQLite at <data>/state.db (default data /var/lib/aegis/server), or PostgreSQL
 *       with --database postgres://... (several workers share it). The audit log is $AEGIS_HOME's.
 *       Prints one JSON line {"url", "socket", "worker"} on stdout once it listens; diagnostics on
 *       stderr. SIGTERM/SIGINT: stops accepting, cancels what runs (recorded killed), closes the log.
 *       At start: sweeps what a killed server left (sandboxes, namespaces, cgroups) and records its
 *       running executions `lost`. Outputs folders are removed --output-retention (default 24h)
 *       after their execution ended. Exit codes: 0 after a signal, 1 when it cannot start.
 *   keys create --role admin|deployer|operator|auditor [--expires 30d] [--data DIR] [--database URL]
 *       Offline, against the server's state (the bootstrap of the first key): prints the key alone
 *       on stdout (shown once; only its scrypt hash is stored) and audits `key.create`.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Store } from '../server/store/types.js';
import { type CliContext, EXIT } from './context.js';

export const DEFAULT_DATA_DIR = '/var/lib/aegis/server';

interface ServeFlags {
  listen?: string;
  socket?: string;
  data: string;
  database?: string;
  tlsCert?: string;
  tlsKey?: string;
  insecure?: boolean;
  worker?: string;
  capacity: string;
  stateDir?: string;
  outputRetention: string;
}

function fail(ctx: CliContext, cmd: string, err: unknown): void {
  const code = (err as { code?: unknown }).code;
  ctx.err(`aegis ${cmd}: ${typeof code === 'string' ? `${code}: ` : ''}${err instanceof Error ? err.message : String(err)}\n`);
  ctx.exitCode = EXIT.failure;
}

async function openServerStore(data: string, database: string | undefined): Promise<Store> {
  const { mkdir } = await import('node:fs/promises');
  await mkdir(data, { recursive: true, mode: 0o700 });
  if (database !== undefined) {
    const { openPostgresStore } = await import('../server/store/postgres.js');
    return openPostgresStore(database);
  }
  const { openSqliteStore } = await import('../server/store/sqlite.js');
  const { join } = await import('node:path');
  return openSqliteStore(join(data, 'state.db'));
}

async function serve(ctx: CliContext, flags: ServeFlags): Promise<void> {
  const { join, resolve } = await import('node:path');
  const { readFile } = await import('node:fs/promises');
  const { hostname } = await import('node:os');
  const { ServerError } = await import('../server/errors.js');
  const capacity = Number(flags.capacity);
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 256)
    throw new ServerError('server.config_invalid', '--capacity must be 1..256');
  const { Lifetime } = await import('../server/schemas.js');
  if (!Lifetime.safeParse(flags.outputRetention).success)
    throw new ServerError('server.config_invalid', '--output-retention must be a duration such as 30d, 12h or 15m');
  const retentionMs = (await import('../server/keys.js')).lifetimeMs(flags.outputRetention);
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined))
    throw new ServerError('server.config_invalid', '--tls-cert and --tls-key go together');
  if (flags.tlsCert !== undefined && flags.listen === undefined)
    throw new ServerError('server.config_invalid', '--tls-cert needs --listen');
  const tls =
    flags.tlsCert !== undefined ? { cert: await readFile(flags.tlsCert, 'utf8'), key: await readFile(flags.tlsKey!, 'utf8') } : undefined;
  const { DEFAULT_SOCKET, listen, parseListen, isLoopback } = await import('../server/transport.js');
  // Checked before anything is opened: a refused address must not leave state behind.
  if (flags.listen !== undefined) {
    const { host } = parseListen(flags.listen);
    if (tls === undefined && !isLoopback(host) && flags.insecure !== true)
      throw new ServerError(
        'server.config_invalid',
        `--listen ${flags.listen}: plaintext on a non-loopback address needs --tls-cert/--tls-key (or --insecure)`,
      );
  }
  const socket = flags.socket ?? (flags.listen === undefined ? DEFAULT_SOCKET : undefined);
  const workerId =
    flags.worker ??
    hostname()
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .slice(0, 100);
  const config = ctx.config();
  // The Docker engine of `isolation: docker` (DOCKER_HOST, read by src/config only).
  const dockerHostModule = await import('../sandbox/docker/host.js');
  dockerHostModule.useDockerHost(config.dockerHost, config.dockerTls, config.dockerRefused);
  dockerHostModule.useDockerNetwork(config.dockerNetwork);
  dockerHostModule.useDockerEngine(config.dockerEngine);
  dockerHostModule.useDockerOwnerHostFile(join(config.home, 'docker-owner-host'));
  const data = resolve(flags.data);
  const log = (line: string): void => ctx.err(`aegis serve: ${line}\n`);

  const audit = await import('../audit/index.js');
  const auditLog = await audit.openAuditLog({ home: config.home, env: config.auditEnv });
  const store = await openServerStore(data, flags.database);
  const { Metrics } = await import('../server/metrics.js');
  const metrics = new Metrics();
  const sink = metrics.countingSink(auditLog);
  const { createEngine } = await import('../orchestrator/index.js');
  const engine = createEngine({ config, audit: sink, log, ...(flags.stateDir !== undefined ? { stateDir: resolve(flags.stateDir) } : {}) });
  const recovered = await engine.recover();
  // The host's shared runtime monitor starts with the server and stays while it runs
  // (docs/monitoring.md); if it cannot, each execution that needs it fails to start (fail secure).
  await engine.holdMonitor().catch((err: unknown) => log(`the runtime monitor did not start: ${(err as Error).message}`));
  if (recovered.length > 0) log(`swept ${recovered.length} run(s) a previous server left behind`);
  const { Dispatcher } = await import('../server/dispatcher.js');
  const dispatcher = new Dispatcher({
    store,
    engine,
    workerId,
    dataDir: data,
    capacity,
    audit: sink,
    retentionMs,
    onError: (err, what) => log(`${what}: ${err instanceof Error ? err.message : String(err)}`),
  });
  await dispatcher.start();
  const { buildServer } = await import('../server/app.js');
  const { uploadChecker } = await import('../server/deploy-check.js');
  const { peerCredentials } = await import('../server/peercred.js');
  const { groupGid, SOCKET_GROUP } = await import('../server/transport.js');
  const { createRequire } = await import('node:module');
  const pkg = createRequire(import.meta.url)('../../../package.json') as { version: string };
  const app = await buildServer({
    store,
    audit: sink,
    openAuditReader: () => audit.openAuditReader({ home: config.home, env: config.auditEnv }),
    checkUpload: uploadChecker(join(data, 'tmp')),
    outputsRoot: join(data, 'outputs'),
    secrets: { dir: config.secretsDir, rotationOverlapMs: config.secretsRotationOverlapMs },
    version: pkg.version,
    engine,
    kick: () => dispatcher.kick(),
    cancelLocal: (id) => dispatcher.cancel(id),
    follow: (id, after, signal) => dispatcher.follow(id, after, signal),
    onPoolChange: () => void dispatcher.syncPools().catch((err: unknown) => log(`pool sync: ${(err as Error).message}`)),
    socketGid: (await groupGid(SOCKET_GROUP)) ?? 0,
    peerOf: (s) => (s.remoteAddress === undefined ? peerCredentials(s) : Promise.resolve(undefined)),
    ready: async () => {
      await auditLog.flush();
    },
    metrics,
    log,
  });
  const listening = await listen(app, {
    ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
    ...(tls !== undefined ? { tls } : {}),
    ...(socket !== undefined ? { socket } : {}),
    insecure: flags.insecure === true,
  });
  ctx.out(`${JSON.stringify({ url: listening.url ?? null, socket: listening.socket ?? null, worker: workerId })}\n`);
  log(
    `listening${listening.url !== undefined ? ` on ${listening.url}` : ''}${listening.socket !== undefined ? ` on unix:${listening.socket}` : ''} (worker ${workerId}, data ${data})`,
  );

  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log(`${signal}: stopping (running executions are cancelled and recorded killed)`);
      void (async () => {
        try {
          // New connections are refused at once; open event streams get their executions' exit
          // (killed) before the connections are closed.
          listening.stopAccepting();
          await dispatcher.stop();
          await engine.shutdown();
          await listening.close();
          await app.close();
        } catch (err) {
          log(`stop: ${err instanceof Error ? err.message : String(err)}`);
        } finally {
          await auditLog.close().catch(() => undefined);
          await store.close().catch(() => undefined);
          resolveStop();
        }
      })();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

async function keysCreate(ctx: CliContext, flags: { role: string; expires?: string; data: string; database?: string }): Promise<void> {
  const { Lifetime, Role } = await import('../server/schemas.js');
  const { ServerError } = await import('../server/errors.js');
  const role = Role.safeParse(flags.role);
  if (!role.success) throw new ServerError('server.invalid_request', '--role must be admin, deployer, operator or auditor');
  if (flags.expires !== undefined && !Lifetime.safeParse(flags.expires).success)
    throw new ServerError('server.invalid_request', '--expires must be a duration such as 30d, 12h or 15m');
  const { newKey, lifetimeMs } = await import('../server/keys.js');
  const { resolve } = await import('node:path');
  const config = ctx.config();
  const now = Date.now();
  const expiresAt = flags.expires === undefined ? null : now + lifetimeMs(flags.expires);
  const { record, key } = await newKey(role.data, { now, expiresAt, createdBy: `local:${config.operator.uid}` });
  const store = await openServerStore(resolve(flags.data), flags.database);
  try {
    await store.createKey(record);
  } finally {
    await store.close();
  }
  const { openAuditLog } = await import('../audit/index.js');
  const log = await openAuditLog({ home: config.home, env: config.auditEnv });
  try {
    await log.append({
      actor: { principal: `local:${config.operator.name}` },
      action: 'key.create',
      decision: 'info',
      payload: { id: record.id, role: record.role, expires: expiresAt === null ? null : new Date(expiresAt).toISOString(), offline: true },
    });
  } finally {
    await log.close();
  }
  ctx.out(`${key}\n`);
  ctx.err(
    `key ${record.id} (${record.role}${expiresAt !== null ? `, expires ${new Date(expiresAt).toISOString()}` : ''}): shown once, store it now\n`,
  );
}

/** Registers `serve` and `keys create`; returns the `keys` command (the client commands add ls/revoke to it). */
export function registerServeCommands(program: Command, ctx: CliContext): Command {
  program
    .command('serve')
    .description('serve the AEGIS API (agents, executions, audit) over a unix socket and/or TCP')
    .option('--listen <host:port>', 'TCP address (plaintext only on loopback unless --insecure; TLS with --tls-cert/--tls-key)')
    .option('--socket <path>', 'unix socket (default /run/aegis/aegis.sock when --listen is not given)')
    .option('--data <dir>', "the server's data folder (state.db, code cache, outputs)", DEFAULT_DATA_DIR)
    .option('--database <url>', 'PostgreSQL URL: share state with other workers instead of SQLite')
    .option('--tls-cert <file>', 'TLS certificate (PEM)')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--insecure', 'allow plaintext HTTP on a non-loopback address')
    .option('--worker <id>', 'this worker id, stable across restarts (default: the host name)')
    .option('--state-dir <dir>', 'run records and bundles of the sandboxes (default /run/aegis)')
    .addOption(new Option('--capacity <n>', 'executions run at once on this worker').default('16'))
    .addOption(
      new Option('--output-retention <duration>', "how long an ended execution's outputs folder is kept (30d, 12h, 15m)").default('24h'),
    )
    .action(async (flags: ServeFlags) => {
      try {
        await serve(ctx, flags);
      } catch (err) {
        fail(ctx, 'serve', err);
      }
    });
  const keys = program.command('keys').description('API keys of the server');
  keys
    .command('create')
    .description('create an API key offline against the server data folder; prints the key alone (shown once)')
    .requiredOption('--role <role>', 'admin, deployer, operator or auditor')
    .option('--expires <duration>', 'lifetime, e.g. 30d, 12h, 15m (default: never)')
    .option('--data <dir>', "the server's data folder", DEFAULT_DATA_DIR)
    .option('--database <url>', 'PostgreSQL URL (when the server uses one)')
    .option('--server <url>', 'create it through the API of this server instead (an admin key in AEGIS_API_KEY)')
    .action(async (flags: { role: string; expires?: string; data: string; database?: string; server?: string }) => {
      try {
        if (flags.server !== undefined) {
          const { createKeyThroughServer } = await import('./client-commands.js');
          ctx.exitCode = await createKeyThroughServer(ctx, { ...flags, server: flags.server });
          return;
        }
        await keysCreate(ctx, flags);
      } catch (err) {
        fail(ctx, 'keys create', err);
      }
    });
  return keys;
}

/**
 * `aegis secret set|ls|rotate|rm`: the host's secret store ($AEGIS_HOME/secrets, docs/secrets.md).
 *
 * Contract (other tools call these exactly):
 *   secret set <name> --hosts <h1,h2> [--header <field>] [--expires 30d] [--from-file F]
 *                               the value from F, else from stdin (one trailing newline dropped);
 *                               prints "secret <name>: version 1"
 *   secret ls [--json]          one line per secret: name, current version, hosts, header, created,
 *                               expires, state (active|expired); --json: an array. Never a value.
 *   secret rotate <name> [--expires 30d] [--from-file F]
 *                               a new value (file or stdin) as a new version; the previous one stays
 *                               usable only by executions already running, for at most
 *                               AEGIS_SECRETS_ROTATION_OVERLAP (default 15m)
 *   secret rm <name>            removes the secret and every version's key
 * Exit codes: 0 done; 1 refused or failed (`aegis secret: <code>: <message>` on stderr); 2 usage.
 * Every change is logged first-hand in the audit log (`secret.set`, `secret.rotate`, `secret.rm`,
 * actor principal = the operator) and no change is made when the log cannot be opened.
 */
import type { Command } from 'commander';
import type { SecretListing } from '../secrets/index.js';
import { type CliContext, EXIT } from './context.js';

interface ValueOpts {
  fromFile?: string;
  expires?: string;
}

/** The value from `--from-file` or stdin (untrusted bytes; checked by checkValue). */
async function readValue(ctx: CliContext, fromFile: string | undefined, max: number): Promise<Uint8Array> {
  const { SecretsError } = await import('../secrets/index.js');
  if (fromFile !== undefined) {
    const { readFile, stat } = await import('node:fs/promises');
    try {
      if ((await stat(fromFile)).size > max + 2) throw new SecretsError('secrets.value_invalid', `${fromFile} is larger than ${max} bytes`);
      return await readFile(fromFile);
    } catch (err) {
      if (err instanceof SecretsError) throw err;
      throw new SecretsError(
        'secrets.value_invalid',
        `cannot read --from-file ${fromFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
  }
  // A terminal echoes what is typed: say so, and how to end (a pipe or --from-file keeps it off screen).
  if (process.stdin.isTTY) ctx.err('aegis secret: reading the value from the terminal (it is echoed; end with Ctrl-D)\n');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > max + 2) throw new SecretsError('secrets.value_invalid', `the value on stdin is larger than ${max} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function listingJson(s: SecretListing, now: number, current: SecretListing['versions'][number]): Record<string, unknown> {
  return {
    name: s.name,
    version: current.version,
    hosts: s.hosts,
    header: s.header,
    createdAt: iso(s.createdAt),
    createdBy: s.createdBy,
    expiresAt: iso(current.expiresAt),
    state: current.expiresAt !== null && now >= current.expiresAt ? 'expired' : 'active',
    versions: s.versions.map((v) => ({
      version: v.version,
      createdAt: iso(v.createdAt),
      expiresAt: iso(v.expiresAt),
      retiredAt: iso(v.retiredAt),
    })),
  };
}

export function registerSecretCommands(program: Command, ctx: CliContext): void {
  const secret = program
    .command('secret')
    .description('the secret store: credentials agents use by reference (secret:<name>), never by value');

  const fail = async (err: unknown): Promise<void> => {
    const { isAegisError } = await import('../errors.js');
    if (!isAegisError(err)) throw err;
    ctx.err(`aegis secret: ${err.code}: ${err.message}\n`);
    ctx.exitCode = EXIT.failure;
  };

  /** Opens the audit log, runs `change`, logs the event it returns (fail secure: no log, no change). */
  const audited = async (change: () => Promise<{ action: string; payload: Record<string, unknown> }>): Promise<void> => {
    const config = ctx.config();
    const { openAuditLog } = await import('../audit/index.js');
    const log = await openAuditLog({ home: config.home, env: config.auditEnv });
    try {
      const { action, payload } = await change();
      await log.append({ actor: { principal: config.operator.name }, action, decision: 'info', payload });
    } finally {
      await log.close();
    }
  };

  secret
    .command('set')
    .description('add a secret: its value from --from-file or stdin, the hosts it may be sent to')
    .argument('<name>', 'the name agent.yaml references as secret:<name>')
    .requiredOption('--hosts <h1,h2>', 'hosts the value may be sent to (allowlist syntax: api.example.com, *.example.com)')
    .option('--header <field>', 'the HTTP header the value belongs in (e.g. authorization)')
    .option('--expires <duration>', 'the value expires after this long (30d, 12h, 15m, 90s)')
    .option('--from-file <file>', 'read the value from this file instead of stdin')
    .action(async (name: string, o: ValueOpts & { hosts: string; header?: string }) => {
      try {
        const { checkHeader, checkName, checkValue, MAX_VALUE_BYTES, parseDuration, parseHosts, SecretStore } =
          await import('../secrets/index.js');
        checkName(name);
        const hosts = parseHosts(o.hosts);
        const header = o.header === undefined ? null : checkHeader(o.header);
        const ttl = o.expires === undefined ? null : parseDuration(o.expires, '--expires');
        const value = checkValue(await readValue(ctx, o.fromFile, MAX_VALUE_BYTES));
        const config = ctx.config();
        await audited(async () => {
          const now = Date.now();
          const expiresAt = ttl === null ? null : now + ttl;
          const r = await SecretStore.at(config.secretsDir).set({ name, hosts, header, value, now, expiresAt, by: config.operator.name });
          ctx.out(`secret ${name}: version ${r.version}\n`);
          return { action: 'secret.set', payload: { secret: name, version: r.version, hosts, header, expiresAt: iso(expiresAt) } };
        });
      } catch (err) {
        await fail(err);
      }
    });

  secret
    .command('ls')
    .description('list the secrets (names, versions, hosts, expiry; never values)')
    .option('--json', 'print a JSON array')
    .action(async (o: { json?: boolean }) => {
      try {
        const { currentVersion, SecretStore } = await import('../secrets/index.js');
        const now = Date.now();
        const rows = (await SecretStore.at(ctx.config().secretsDir).list()).map((s) => listingJson(s, now, currentVersion(s)));
        if (o.json === true) ctx.out(`${JSON.stringify(rows, null, 2)}\n`);
        else
          for (const r of rows)
            ctx.out(
              `${String(r['name'])}\tv${String(r['version'])}\t${(r['hosts'] as string[]).join(',')}\t${String(r['header'] ?? '-')}\t${String(r['createdAt'])}\t${String(r['expiresAt'] ?? 'never')}\t${String(r['state'])}\n`,
            );
      } catch (err) {
        await fail(err);
      }
    });

  secret
    .command('rotate')
    .description('give a secret a new value (a new version); running executions keep the old one for the rotation overlap at most')
    .argument('<name>')
    .option('--expires <duration>', 'the new value expires after this long (30d, 12h, 15m, 90s)')
    .option('--from-file <file>', 'read the new value from this file instead of stdin')
    .action(async (name: string, o: ValueOpts) => {
      try {
        const { checkName, checkValue, MAX_VALUE_BYTES, parseDuration, SecretStore } = await import('../secrets/index.js');
        checkName(name);
        const ttl = o.expires === undefined ? null : parseDuration(o.expires, '--expires');
        const value = checkValue(await readValue(ctx, o.fromFile, MAX_VALUE_BYTES));
        const config = ctx.config();
        await audited(async () => {
          const now = Date.now();
          const expiresAt = ttl === null ? null : now + ttl;
          const overlapMs = config.secretsRotationOverlapMs;
          const r = await SecretStore.at(config.secretsDir).rotate({ name, value, now, expiresAt, overlapMs });
          ctx.out(`secret ${name}: version ${r.version}\n`);
          return {
            action: 'secret.rotate',
            payload: {
              secret: name,
              version: r.version,
              expiresAt: iso(expiresAt),
              previousValidUntil: iso(now + overlapMs),
              dropped: r.dropped,
            },
          };
        });
      } catch (err) {
        await fail(err);
      }
    });

  secret
    .command('rm')
    .description('remove a secret and the keys of all its versions')
    .argument('<name>')
    .action(async (name: string) => {
      try {
        const { checkName, SecretStore } = await import('../secrets/index.js');
        checkName(name);
        const config = ctx.config();
        await audited(async () => {
          const r = await SecretStore.at(config.secretsDir).rm(name);
          ctx.out(`secret ${name}: removed\n`);
          return { action: 'secret.rm', payload: { secret: name, versions: r.dropped } };
        });
      } catch (err) {
        await fail(err);
      }
    });
}

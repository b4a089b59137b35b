/**
 * `aegis audit ...`: verify, checkpoint, proof, consistency, export, tail, query, forget, pubkey,
 * prune. Output formats are a contract (checked exactly): results on stdout, diagnostics on
 * stderr. `tail` and `query` print one readable line per event (audit-format.ts); `--json` on
 * every command that prints data gives JSON (JSONL for event lists, with the base64 leaf). Exit codes: 0 ok; 1 verification failed / no log / bad stored data; 2 bad arguments.
 * Every command honours $AEGIS_HOME (default ~/.aegis) and the AEGIS_AUDIT_* variables
 * documented in src/audit/index.ts. Heavy modules are imported inside the actions.
 */
import type { Command } from 'commander';
import type { AuditLog as Log, AuditReader, DecryptedEntry } from '../audit/index.js';
import type { AegisConfig } from '../config/index.js';
import { FACILITY_LOG_AUDIT, formatRfc5424, SEVERITY } from '../audit/rfc5424.js';
import { readableLine } from './audit-format.js';
import { type CliContext, EXIT } from './context.js';

type Decoded = { index: number; entry: Uint8Array; decoded?: DecryptedEntry; error?: string };

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

class UsageError extends Error {}

function nat(text: string, what: string): number {
  if (!/^(0|[1-9][0-9]{0,15})$/u.test(text)) throw new UsageError(`${what} must be a non-negative integer, not ${JSON.stringify(text)}`);
  return Number(text);
}

/** RFC 3339 time, or a duration ago: 30s, 15m, 2h, 7d. */
export function parseSince(text: string, now: number): number {
  const m = /^(\d+)([smhd])$/u.exec(text);
  if (m !== null) return now - Number(m[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const t = Date.parse(text);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/u.test(text))
    throw new UsageError(`time must be RFC 3339 or a duration like 15m, 2h, 7d: ${JSON.stringify(text)}`);
  return t;
}

/** Runs an action with uniform error reporting. */
function action<A extends unknown[]>(ctx: CliContext, fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (err instanceof UsageError) {
        ctx.err(`aegis audit: ${err.message}\n`);
        ctx.exitCode = EXIT.usage;
        return;
      }
      const { isAegisError } = await import('../errors.js');
      if (isAegisError(err)) {
        ctx.err(`aegis audit: ${err.code}: ${err.message}\n`);
        ctx.exitCode = err.code === 'audit.proof_range' ? EXIT.usage : EXIT.failure;
        return;
      }
      throw err;
    }
  };
}

/** Opens the existing log (never creates one: read commands on an empty home fail). */
async function openExisting(config: AegisConfig): Promise<Log> {
  const audit = await import('../audit/index.js');
  const h = config.home;
  const { access } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const store = config.auditEnv['AEGIS_AUDIT_STORE'];
  if (store === undefined || store === '' || store === 'file') {
    await access(join(audit.auditPaths(h).dir, 'log.pub')).catch(() => {
      throw new audit.AuditError('audit.store_io', `no audit log under ${h} (nothing has been logged yet)`);
    });
  }
  // CLI commands append at most one event: no encoder thread.
  return audit.openAuditLog({ home: h, env: config.auditEnv, inlineEncoding: true });
}

/** For commands that write (forget, prune). */
async function withLog(ctx: CliContext, fn: (log: Log) => Promise<void>): Promise<void> {
  const log = await openExisting(ctx.config());
  try {
    await fn(log);
  } finally {
    await log.close();
  }
}

/**
 * For every read command: a reader changes nothing under $AEGIS_HOME or in the store (no
 * retention, no key, no checkpoint), so it works on a read-only copy and beside writers.
 */
async function withReader(ctx: CliContext, fn: (log: AuditReader) => Promise<void>): Promise<void> {
  const { openAuditReader } = await import('../audit/index.js');
  const config = ctx.config();
  const log = await openAuditReader({ home: config.home, env: config.auditEnv });
  try {
    await fn(log);
  } finally {
    await log.close();
  }
}

interface Filters {
  agent?: string;
  execution?: string;
  action?: string;
  decision?: string;
  since?: string;
  until?: string;
}

function compileFilter(f: Filters, now: number): (d: Decoded) => boolean {
  const since = f.since !== undefined ? parseSince(f.since, now) : undefined;
  const until = f.until !== undefined ? parseSince(f.until, now) : undefined;
  if (f.decision !== undefined && !['allow', 'deny', 'error', 'info'].includes(f.decision))
    throw new UsageError('--decision must be allow, deny, error or info');
  // `net.*` matches every action under net.; anything else matches literally.
  const actionPrefix = f.action?.endsWith('.*') === true ? f.action.slice(0, -1) : undefined;
  return (d) => {
    const e = d.decoded?.event;
    if (e === undefined) return false;
    if (f.agent !== undefined && e.actor.agent !== f.agent) return false;
    if (f.execution !== undefined && e.actor.execution !== f.execution) return false;
    if (f.action !== undefined && (actionPrefix !== undefined ? !e.action.startsWith(actionPrefix) : e.action !== f.action)) return false;
    if (f.decision !== undefined && e.decision !== f.decision) return false;
    const t = Date.parse(e.time);
    if (since !== undefined && !(t >= since)) return false;
    if (until !== undefined && !(t < until)) return false;
    return true;
  };
}

function jsonRecord(d: Decoded): string {
  const rec: Record<string, unknown> = { index: d.index, leaf: b64(d.entry) };
  if (d.decoded !== undefined) {
    rec['event'] = d.decoded.event;
    if (d.decoded.keyDestroyed) rec['keyDestroyed'] = true;
  } else {
    rec['error'] = d.error;
  }
  return JSON.stringify(rec);
}

function rfc5424(d: Decoded, hostname: string): string | undefined {
  const e = d.decoded?.event;
  if (e === undefined) return undefined;
  return formatRfc5424({
    facility: FACILITY_LOG_AUDIT,
    // Severity: 3 error, 4 warning for deny, 6 info.
    severity: e.decision === 'deny' ? SEVERITY.warning : e.decision === 'error' ? SEVERITY.error : SEVERITY.informational,
    time: e.time,
    hostname,
    appName: 'aegis',
    msgId: e.action,
    params: [
      ['index', String(d.index)],
      ['id', e.id],
      ['agent', e.actor.agent],
      ['execution', e.actor.execution],
      ['principal', e.actor.principal],
      ['action', e.action],
      ['decision', e.decision],
      ['reason', e.reason],
      ['leaf', b64(d.entry)],
    ],
    msg: JSON.stringify(d.decoded?.keyDestroyed ? { ...e, keyDestroyed: true } : e),
  });
}

export function registerAuditCommands(program: Command, ctx: CliContext): void {
  const audit = program.command('audit').description('inspect, prove and verify the tamper-evident audit log');

  audit
    .command('verify')
    .description('recompute the whole tree from the stored entries and check every signed checkpoint')
    .option('--from-checkpoint <file>', 'also check consistency with this (older) signed checkpoint')
    .option('--pubkey <key-or-file>', 'trusted verifier key (default: AEGIS_AUDIT_PUBKEY, the pinned published key, audit/log.pub)')
    .option('--json', 'print {"ok","size","root"} or {"ok":false,"problem"}')
    .action(
      action(ctx, async (opts: { fromCheckpoint?: string; pubkey?: string; json?: boolean }) => {
        const a = await import('../audit/index.js');
        const { readFile } = await import('node:fs/promises');
        const h = ctx.config().home;
        const env = ctx.config().auditEnv;
        const cpFile = opts.fromCheckpoint;
        const extra =
          cpFile === undefined
            ? []
            : [
                {
                  label: `checkpoint file ${cpFile}`,
                  note: await readFile(cpFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
                    throw new UsageError(`cannot read --from-checkpoint ${cpFile}: ${err.code ?? err.message}`);
                  }),
                },
              ];
        const { verifier, source, storeKey } = await a.trustedVerifier(h, env, opts.pubkey);
        const store = await a.openStore(h, env, { readOnly: true });
        const { workerAnalyzer } = await import('../audit/verify-pool.js');
        const analyzer = workerAnalyzer();
        let result;
        try {
          result = await a.verifyLog({
            store,
            verifier,
            origin: verifier.name,
            published: await a.publishedCheckpoints(h, env),
            extra,
            analyze: analyzer.analyze,
          });
        } finally {
          await analyzer.close();
          await store.close();
        }
        for (const w of result.warnings) ctx.err(`aegis audit verify: warning: ${w}\n`);
        if (result.ok && storeKey !== undefined && storeKey !== a.encodeVerifierKey(verifier)) {
          result = { ok: false as const, problem: `audit/log.pub is not the trusted key from ${source} (key replaced)`, warnings: [] };
        }
        if (result.ok) {
          if (opts.json === true)
            ctx.out(`${JSON.stringify({ ok: true, size: result.size, root: b64(result.root), warnings: result.warnings })}\n`);
          else ctx.out(`ok: ${result.size} entries, root ${b64(result.root)}\n`);
        } else {
          if (opts.json === true) ctx.out(`${JSON.stringify({ ok: false, problem: result.problem })}\n`);
          else ctx.out(`FAIL: ${result.problem}\n`);
          ctx.exitCode = EXIT.failure;
        }
      }),
    );

  audit
    .command('checkpoint')
    .description('print the latest signed checkpoint (C2SP signed note)')
    .option('--json', 'print {"checkpoint": "<signed note>"}')
    .action(
      action(ctx, async (opts: { json?: boolean }) => {
        // A read: the latest checkpoint a writer signed (writers sign on close and every second
        // while the log grows), checked against the stored entries when the reader opened.
        await withReader(ctx, async (log) => {
          const note = await log.latestCheckpoint();
          if (note === undefined) {
            ctx.err('aegis audit: the log is empty: no checkpoint yet\n');
            ctx.exitCode = EXIT.failure;
          } else ctx.out(opts.json === true ? `${JSON.stringify({ checkpoint: note })}\n` : note);
        });
      }),
    );

  audit
    .command('proof <index>')
    .description('print an inclusion proof for entry <index> as JSON (base64 hashes)')
    .option('--size <n>', 'tree size to prove against (default: the current size)')
    .option('--json', 'accepted for symmetry: the proof is JSON')
    .action(
      action(ctx, async (indexText: string, opts: { size?: string }) => {
        const index = nat(indexText, 'index');
        const size = opts.size === undefined ? undefined : nat(opts.size, '--size');
        await withReader(ctx, async (log) => {
          const n = size ?? log.size;
          const p = await log.inclusionProof(index, n);
          ctx.out(`${JSON.stringify({ index, treeSize: n, leafHash: b64(p.leafHash), proof: p.proof.map(b64), root: b64(p.root) })}\n`);
        });
      }),
    );

  audit
    .command('consistency <size1> <size2>')
    .description('print a consistency proof between two tree sizes as JSON (base64 hashes)')
    .option('--json', 'accepted for symmetry: the proof is JSON')
    .action(
      action(ctx, async (s1: string, s2: string) => {
        const size1 = nat(s1, 'size1');
        const size2 = nat(s2, 'size2');
        await withReader(ctx, async (log) => {
          const c = await log.consistencyProof(size1, size2);
          ctx.out(`${JSON.stringify({ size1, size2, root1: b64(c.root1), root2: b64(c.root2), proof: c.proof.map(b64) })}\n`);
        });
      }),
    );

  audit
    .command('export')
    .description('export entries as JSONL {index, leaf, event} or RFC 5424 syslog lines')
    .option('--format <format>', 'jsonl or rfc5424', 'jsonl')
    .option('--since <time>', 'only events at or after this time (RFC 3339 or 15m, 2h, 7d)')
    .option('--agent <name>', 'only events of this agent')
    .action(
      action(ctx, async (opts: { format: string; since?: string; agent?: string }) => {
        if (opts.format !== 'jsonl' && opts.format !== 'rfc5424') throw new UsageError('--format must be jsonl or rfc5424');
        const filter = opts.since !== undefined || opts.agent !== undefined ? compileFilter(opts, Date.now()) : () => true;
        const hostname = (await import('node:os')).hostname();
        await withReader(ctx, async (log) => {
          for await (const d of log.read(0)) {
            if (d.error !== undefined && d.decoded === undefined) {
              ctx.err(`aegis audit export: entry ${d.index}: ${d.error}\n`);
              ctx.exitCode = EXIT.failure;
              if (d.entry.length === 0) break;
              continue;
            }
            if (!filter(d)) continue;
            ctx.out(`${opts.format === 'jsonl' ? jsonRecord(d) : rfc5424(d, hostname)}\n`);
          }
        });
      }),
    );

  audit
    .command('tail')
    .description('print the last events, one readable line each (--json: JSON lines); -f keeps following new ones')
    .option('-n, --lines <n>', 'how many of the last events', '10')
    .option('-f, --follow', 'wait for new events (stop with Ctrl-C)')
    .option('--json', 'print JSON lines {index, leaf, event} instead')
    .action(
      action(ctx, async (opts: { lines: string; follow?: boolean; json?: boolean }) => {
        const line = opts.json === true ? jsonRecord : readableLine;
        const n = nat(opts.lines, '--lines');
        await withReader(ctx, async (log) => {
          let next = Math.max(0, log.size - n);
          const printFrom = async (): Promise<void> => {
            for await (const d of log.read(next)) {
              ctx.out(`${line(d)}\n`);
              next = d.index + 1;
            }
          };
          await printFrom();
          if (opts.follow !== true) return;
          let stop = false;
          const onSig = (): void => void (stop = true);
          process.once('SIGINT', onSig);
          process.once('SIGTERM', onSig);
          const { setTimeout: sleep } = await import('node:timers/promises');
          while (!stop) {
            await sleep(250);
            await log.refresh();
            if (log.size > next) await printFrom();
          }
        });
      }),
    );

  audit
    .command('query')
    .description('print the events matching every given filter, one readable line each (--json: JSON lines)')
    .option('--agent <name>', 'agent name')
    .option('--execution <id>', 'execution (run) id')
    .option('--action <action>', 'action, exactly, or a prefix like net.*')
    .option('--decision <decision>', 'allow, deny, error or info')
    .option('--since <time>', 'at or after (RFC 3339 or 15m, 2h, 7d)')
    .option('--until <time>', 'before (RFC 3339 or 15m, 2h, 7d)')
    .option('--json', 'print JSON lines {index, leaf, event} instead')
    .action(
      action(ctx, async (opts: Filters & { json?: boolean }) => {
        const filter = compileFilter(opts, Date.now());
        const line = opts.json === true ? jsonRecord : readableLine;
        await withReader(ctx, async (log) => {
          for await (const d of log.read(0)) if (filter(d)) ctx.out(`${line(d)}\n`);
        });
      }),
    );

  audit
    .command('forget')
    .description("erase a data subject: destroy the subject's keys (crypto-shredding) and log it")
    .requiredOption('--subject <id>', 'the data subject id the events named')
    .option('--json', 'print {"keysDestroyed","eventIndex"}')
    .action(
      action(ctx, async (opts: { subject: string; json?: boolean }) => {
        await withLog(ctx, async (log) => {
          const n = await log.forget(opts.subject, { principal: ctx.config().operator.name });
          if (opts.json === true) ctx.out(`${JSON.stringify({ keysDestroyed: n, eventIndex: log.size - 1 })}\n`);
          else ctx.out(`forgot subject: ${n} key(s) destroyed, subject-erased event at index ${log.size - 1}\n`);
        });
      }),
    );

  audit
    .command('prune')
    .description('apply the retention period now (destroy payload keys older than it)')
    .option('--json', 'print {"keysDestroyed"}')
    .action(
      action(ctx, async (opts: { json?: boolean }) => {
        await withLog(ctx, async (log) => {
          const ids = await log.applyRetention();
          if (opts.json === true) ctx.out(`${JSON.stringify({ keysDestroyed: ids.length })}\n`);
          else ctx.out(`retention: ${ids.length} key(s) destroyed\n`);
        });
      }),
    );

  audit
    .command('pubkey')
    .description("print the log's public key (C2SP note verifier key)")
    .option('--json', 'print {"pubkey"}')
    .action(
      action(ctx, async (opts: { json?: boolean }) => {
        const a = await import('../audit/index.js');
        const { readFile } = await import('node:fs/promises');
        const { join } = await import('node:path');
        const path = join(a.auditPaths(ctx.config().home).dir, 'log.pub');
        const text = await readFile(path, 'utf8').catch(() => {
          throw new a.AuditError('audit.store_io', `no public key at ${path} (nothing has been logged yet)`);
        });
        ctx.out(opts.json === true ? `${JSON.stringify({ pubkey: text.trim() })}\n` : `${text.trim()}\n`);
      }),
    );
}

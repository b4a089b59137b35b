/**
 * `aegis alerts rules|test|replay`: the alert rules in force, rules tried on an events file,
 * and rules run over the stored audit log.
 *
 * Contract (other tools call these exactly):
 *   alerts rules [--rules <path>]... [--json]     one line per rule: id, level, kind, title (--json: an array)
 *   alerts test <rules> <events.jsonl>            each alert as one JSON line on stdout; exit 0 (alerts or none),
 *                                                 1 when a rule or an event line is invalid (file:line on stderr)
 *   alerts replay [--since 24h] [--until T] [--rules <path>]... [--json]
 *                                                 the alerts the rules raise over the stored log (read-only: nothing
 *                                                 is appended); readable lines, or JSON lines with --json
 *   alerts baseline <agent> [--last 20] [--json]  the agent's anomaly baseline (median, MAD, scale per feature) from the
 *                                                 log's recent history (read-only), and each of its last executions scored
 *                                                 against the runs before it; --json: one JSON document
 * Rules default to the host's (AEGIS_ALERT_RULES, else the default pack rules/aegis-default.yml).
 * Events in a .jsonl file are audit events, or `aegis audit export` records ({index, event, ...}).
 */
import type { Command } from 'commander';
import type { Alert, CompiledRule, EngineEvent } from '../alerts/index.js';
import { type CliContext, EXIT } from './context.js';

type RulesOpt = { rules?: string[] };

const collect = (v: string, acc: string[] = []): string[] => [...acc, v];

async function rulesFor(ctx: CliContext, given: readonly string[] | undefined): Promise<CompiledRule[]> {
  const { loadRules, DEFAULT_PACK } = await import('../alerts/index.js');
  const paths = given !== undefined && given.length > 0 ? given : (ctx.config().alertRules ?? [DEFAULT_PACK]);
  return loadRules(paths);
}

function readableAlert(a: Alert): string {
  const who = a.actor.execution ?? a.actor.principal ?? a.actor.agent ?? '-';
  const folded = a.suppressed > 0 ? ` (+${a.suppressed} folded)` : '';
  return `${a.time} ${a.rule.level.toUpperCase()} ${a.rule.id} ${who}: ${a.summary}${folded}`;
}

/** One events-file line: an audit event, or an export record carrying one (untrusted input). */
function eventOf(line: string, where: string, n: number): EngineEvent {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new Error(`${where}:${n}: not JSON (${(e as Error).message})`);
  }
  const o = v !== null && typeof v === 'object' && 'event' in v ? (v as { event: unknown }).event : v;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error(`${where}:${n}: not an audit event (an object)`);
  const e = o as Record<string, unknown>;
  for (const k of ['action', 'decision', 'time'] as const)
    if (typeof e[k] !== 'string') throw new Error(`${where}:${n}: ${k} must be a string`);
  if (Number.isNaN(Date.parse(e['time'] as string))) throw new Error(`${where}:${n}: time is not an RFC 3339 time`);
  if (e['payload'] !== undefined && (e['payload'] === null || typeof e['payload'] !== 'object'))
    throw new Error(`${where}:${n}: payload must be an object`);
  if (e['actor'] !== undefined && (e['actor'] === null || typeof e['actor'] !== 'object'))
    throw new Error(`${where}:${n}: actor must be an object`);
  return { id: typeof e['id'] === 'string' ? e['id'] : `${where}:${n}`, payload: {}, actor: {}, ...(e as object) } as EngineEvent;
}

export function registerAlertCommands(program: Command, ctx: CliContext): void {
  const alerts = program.command('alerts').description('alert rules (Sigma-compatible) over the audit log: list, try on events, replay');

  const fail = async (err: unknown): Promise<void> => {
    const { isAegisError } = await import('../errors.js');
    if (isAegisError(err)) ctx.err(`aegis alerts: ${err.code}: ${err.message}\n`);
    else if (err instanceof Error && /^.+:\d+: /.test(err.message)) ctx.err(`aegis alerts: alerts.event_invalid: ${err.message}\n`);
    else throw err;
    ctx.exitCode = EXIT.failure;
  };

  alerts
    .command('rules')
    .description('list the active rules (the host configuration, or the files given)')
    .option('--rules <path>', 'a rule file or folder instead of the host configuration (repeatable)', collect)
    .option('--json', 'print a JSON array')
    .action(async (o: RulesOpt & { json?: boolean }) => {
      try {
        const rules = await rulesFor(ctx, o.rules);
        if (o.json === true) {
          ctx.out(
            `${JSON.stringify(
              rules.map((r) => ({
                id: r.id,
                kind: r.kind,
                level: r.level,
                title: r.title,
                source: r.source,
                ...(r.kind === 'correlation' ? { type: r.type, rules: r.rules, groupBy: r.groupBy, timespanMs: r.timespanMs } : {}),
              })),
              null,
              2,
            )}\n`,
          );
        } else {
          for (const r of rules)
            ctx.out(`${r.id}\t${r.level}\t${r.kind === 'correlation' ? `correlation/${r.type}` : 'detection'}\t${r.title}\n`);
        }
      } catch (err) {
        await fail(err);
      }
    });

  alerts
    .command('test')
    .description('evaluate <rules> (file or folder) on the audit events in <events.jsonl>; print each alert as a JSON line')
    .argument('<rules>')
    .argument('<events.jsonl>')
    .action(async (rulesPath: string, eventsPath: string) => {
      try {
        const { AlertEngine } = await import('../alerts/index.js');
        const engine = new AlertEngine(await rulesFor(ctx, [rulesPath]));
        const { createReadStream } = await import('node:fs');
        const { createInterface } = await import('node:readline');
        const input = createReadStream(eventsPath, { encoding: 'utf8' });
        const opened = new Promise<void>((resolve, reject) => {
          input.once('open', () => resolve());
          input.once('error', reject);
        });
        await opened.catch((e: NodeJS.ErrnoException) => {
          throw Object.assign(new Error(`${eventsPath}:0: cannot read (${e.code ?? e.message})`));
        });
        let n = 0;
        for await (const line of createInterface({ input, crlfDelay: Infinity })) {
          n++;
          if (line.trim() === '') continue;
          for (const a of engine.evaluate(eventOf(line, eventsPath, n))) ctx.out(`${JSON.stringify(a)}\n`);
        }
      } catch (err) {
        await fail(err);
      }
    });

  alerts
    .command('baseline')
    .description("an agent's anomaly baseline from the log's recent history, and its last executions scored against it (read-only)")
    .argument('<agent>', "the manifest's agent name")
    .option('--last <n>', 'executions to score', '20')
    .option('--json', 'print one JSON document')
    .action(async (agent: string, o: { last: string; json?: boolean }) => {
      try {
        const last = Number(o.last);
        if (!/^\d{1,4}$/.test(o.last) || last < 1) {
          ctx.err(`aegis alerts: --last must be a whole number from 1 to 9999\n`);
          ctx.exitCode = EXIT.usage;
          return;
        }
        const [{ openAuditReader }, { readRecentExecutions, MAX_HISTORY_EVENTS }, b] = await Promise.all([
          import('../audit/index.js'),
          import('../alerts/baseline-history.js'),
          import('../alerts/baseline.js'),
        ]);
        const config = ctx.config();
        const log = await openAuditReader({ home: config.home, env: config.auditEnv });
        let records;
        try {
          records = await readRecentExecutions(log);
        } finally {
          await log.close();
        }
        const mine = records.filter((r) => r.agent === agent && r.complete);
        const model = b.buildModel(
          agent,
          mine.map((r) => r.features),
          config.baseline.minHistory,
        );
        const scored = mine.slice(-last).map((r) => {
          const { model: m, score } = b.scoreAgainstHistory(mine, r, config.baseline.minHistory);
          return { execution: r.execution, time: r.time, history: m.executions, ready: m.ready, ...score };
        });
        if (o.json === true) {
          ctx.out(
            `${JSON.stringify({ agent, maxEvents: MAX_HISTORY_EVENTS, thresholdZ: b.Z_THRESHOLD, model, executions: scored }, null, 2)}\n`,
          );
          return;
        }
        ctx.out(
          `agent ${agent}: ${model.executions} past executions in the model (last ${b.HISTORY_WINDOW} within the log's last ${MAX_HISTORY_EVENTS} events); ` +
            `${model.ready ? 'alerting' : `learning (alerts from ${model.minHistory})`}; anomalous at z >= ${b.Z_THRESHOLD}\n`,
        );
        ctx.out(`${'feature'.padEnd(16)}${'median'.padStart(14)}${'MAD'.padStart(14)}${'scale'.padStart(14)}\n`);
        for (const f of b.FEATURES) {
          const m = model.features[f];
          ctx.out(
            `${f.padEnd(16)}${String(Math.round(m.median * 100) / 100).padStart(14)}${String(Math.round(m.mad * 100) / 100).padStart(14)}${String(Math.round(m.scale)).padStart(14)}\n`,
          );
        }
        for (const x of scored) {
          const verdict = x.anomalous ? `ANOMALOUS ${b.explain(x.reasons)}` : x.ready ? 'ok' : `learning (${x.history} before it)`;
          const top = [...x.scores].sort((p, q) => q.z - p.z)[0];
          ctx.out(
            `${x.time} ${x.execution} ${verdict}${x.anomalous || top === undefined ? '' : ` (highest: ${top.feature} z ${top.z})`}\n`,
          );
        }
      } catch (err) {
        await fail(err);
      }
    });

  alerts
    .command('replay')
    .description('run the rules over the stored audit log (read-only) and print the alerts they raise')
    .option('--since <time>', 'only events at or after: RFC 3339, or a duration ago (30m, 24h, 7d)', '24h')
    .option('--until <time>', 'only events before: RFC 3339, or a duration ago')
    .option('--rules <path>', 'a rule file or folder instead of the host configuration (repeatable)', collect)
    .option('--json', 'print each alert as a JSON line')
    .action(async (o: RulesOpt & { since: string; until?: string; json?: boolean }) => {
      try {
        const { parseSince } = await import('./audit-commands.js');
        const now = Date.now();
        let since: number;
        let until: number;
        try {
          since = parseSince(o.since, now);
          until = o.until !== undefined ? parseSince(o.until, now) : Infinity;
        } catch (e) {
          ctx.err(`aegis alerts: ${(e as Error).message}\n`);
          ctx.exitCode = EXIT.usage;
          return;
        }
        const { AlertEngine, openAuditReader } = await Promise.all([import('../alerts/index.js'), import('../audit/index.js')]).then(
          ([a, b]) => ({ ...a, ...b }),
        );
        const engine = new AlertEngine(await rulesFor(ctx, o.rules));
        const config = ctx.config();
        const log = await openAuditReader({ home: config.home, env: config.auditEnv });
        try {
          for await (const d of log.read(0)) {
            const e = d.decoded?.event;
            if (e === undefined) continue;
            const t = Date.parse(e.time);
            if (t < since || t >= until) continue;
            for (const a of engine.evaluate(e as EngineEvent)) ctx.out(`${o.json === true ? JSON.stringify(a) : readableAlert(a)}\n`);
          }
        } finally {
          await log.close();
        }
      } catch (err) {
        await fail(err);
      }
    });
}

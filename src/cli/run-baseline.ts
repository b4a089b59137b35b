/**
 * The per-agent baseline at the end of `aegis run` (wiring): after the agent exited and the
 * run's log was closed, its execution is scored against the agent's past executions read back
 * from the same log (read-only, bounded: the last MAX_HISTORY_EVENTS events). When it is
 * anomalous, one `alert.raised` (rule `aegis-baseline-anomaly`) is appended to the log and a
 * line is printed on stderr.
 *
 * ARCHITECTURE NOTE: off the start path, and never changes the run's exit code: a baseline that
 * cannot be computed (no log reader, a damaged entry) is reported on stderr and skipped. The
 * alert is detection after the fact; enforcement is the policy's.
 */
import type { AuditEventInput } from '../audit/event.js';
import type { BaselineModel, FeatureScore } from '../alerts/baseline.js';
import type { AegisConfig } from '../config/index.js';

export const BASELINE_RULE = {
  id: 'aegis-baseline-anomaly',
  title: "Execution far outside its agent's baseline",
  level: 'medium',
} as const;

/** The `alert.raised` event of an anomalous execution (payload: the alert fields plus `reasons` and the model's size). */
export function baselineAlertEvent(
  actor: { agent: string; execution: string },
  reasons: readonly FeatureScore[],
  model: BaselineModel,
  summary: string,
): AuditEventInput {
  return {
    actor,
    action: 'alert.raised',
    decision: 'info',
    reason: BASELINE_RULE.id,
    payload: {
      rule: BASELINE_RULE.id,
      title: BASELINE_RULE.title,
      level: BASELINE_RULE.level,
      kind: 'baseline',
      summary,
      eventIds: [],
      suppressed: 0,
      reasons: reasons.map((r) => ({ ...r })),
      history: model.executions,
    },
  };
}

/** Scores the finished execution; appends and prints an alert when it is anomalous. Never throws. */
export async function scoreFinishedRun(
  config: Pick<AegisConfig, 'home' | 'auditEnv' | 'baseline'>,
  actor: { agent: string; execution: string },
  say: (line: string) => void,
): Promise<void> {
  if (!config.baseline.enabled) return;
  try {
    const [{ openAuditReader }, { readRecentExecutions }, { scoreAgainstHistory, explain }] = await Promise.all([
      import('../audit/index.js'),
      import('../alerts/baseline-history.js'),
      import('../alerts/baseline.js'),
    ]);
    const reader = await openAuditReader({ home: config.home, env: config.auditEnv });
    let records;
    try {
      records = await readRecentExecutions(reader, undefined, actor.agent);
    } finally {
      await reader.close();
    }
    const current = records.find((r) => r.execution === actor.execution);
    if (current === undefined) return;
    const { model, score } = scoreAgainstHistory(records, current, config.baseline.minHistory);
    if (!score.anomalous) return;
    const summary = `${BASELINE_RULE.title}: ${explain(score.reasons)} over ${model.executions} past executions`;
    const { openRunAudit } = await import('../run/services.js');
    const log = await openRunAudit(config);
    await log.append(baselineAlertEvent(actor, score.reasons, model, summary));
    await log.close();
    say(`ALERT ${BASELINE_RULE.level} ${BASELINE_RULE.id}: ${summary}`);
  } catch (err) {
    say(`warning: the anomaly baseline was not computed: ${(err as Error).message}`);
  }
}

/**
 * An agent's history for the baseline, read from the audit log itself (adapter): the last
 * `maxEvents` events of the log, grouped into executions (src/alerts/baseline.ts). Read-only:
 * it takes anything with the reader's `size` and `read(from)` (an `AuditReader`).
 *
 * Cost: bounded by `maxEvents` (default MAX_HISTORY_EVENTS) decrypted entries, whatever the
 * log's size; executions that started before that window are simply not in the history.
 * LIMITATION: on a busy shared log where other agents write most events, the window may hold
 * fewer than the agent's last HISTORY_WINDOW runs (the model then learns from fewer, and stays
 * quiet below its minimum history).
 */
import { type BaselineEvent, type ExecutionRecord, groupExecutions } from './baseline.js';

/** Events read back from the end of the log at most (about 0.5 s on this 2-core host). */
export const MAX_HISTORY_EVENTS = 20_000;

export interface HistorySource {
  readonly size: number;
  read(from: number): AsyncIterable<{ readonly decoded?: { readonly event: BaselineEvent } }>;
}

/** The executions whose events are among the last `maxEvents` of the log, oldest first. */
export async function readRecentExecutions(log: HistorySource, maxEvents: number = MAX_HISTORY_EVENTS): Promise<ExecutionRecord[]> {
  const from = Math.max(0, log.size - maxEvents);
  const events: BaselineEvent[] = [];
  for await (const r of log.read(from)) {
    const e = r.decoded?.event;
    if (e !== undefined && e.payload !== null) events.push(e); // an erased payload (key destroyed) is not a feature source
  }
  // The first execution in the window may have begun before it: its features would be partial.
  const records = groupExecutions(events);
  if (from > 0 && records.length > 0) records.shift();
  return records;
}

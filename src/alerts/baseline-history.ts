/**
 * An agent's history for the baseline, read from the audit log itself (adapter): the last
 * `maxEvents` events of the log, grouped into executions (src/alerts/baseline.ts). Read-only:
 * it takes anything with the reader's `size` and `read(from)` (an `AuditReader`).
 *
 * Cost: bounded by `maxEvents` (default MAX_HISTORY_EVENTS) decrypted entries, whatever the
 * log's size (plus FIRST_LOOK_EVENTS when the first look was not enough); executions that
 * started before that window are simply not in the history.
 * LIMITATION: on a busy shared log where other agents write most events, the window may hold
 * fewer than the agent's last HISTORY_WINDOW runs (the model then learns from fewer, and stays
 * quiet below its minimum history).
 */
import { type BaselineEvent, type ExecutionRecord, groupExecutions, HISTORY_WINDOW } from './baseline.js';

/** Events read back from the end of the log at most (about 0.26 s on this 2-core host). */
export const MAX_HISTORY_EVENTS = 20_000;
/** The first, cheaper look back (about 0.03 s): enough for most agents' last 50 runs. */
export const FIRST_LOOK_EVENTS = 2_000;

export interface HistorySource {
  readonly size: number;
  read(from: number): AsyncIterable<{ readonly decoded?: { readonly event: BaselineEvent } }>;
}

async function readWindow(log: HistorySource, events: number): Promise<{ records: ExecutionRecord[]; from: number }> {
  const from = Math.max(0, log.size - events);
  const read: BaselineEvent[] = [];
  for await (const r of log.read(from)) {
    const e = r.decoded?.event;
    if (e !== undefined && e.payload !== null) read.push(e); // an erased payload (key destroyed) is not a feature source
  }
  // The first execution in the window may have begun before it: its features would be partial.
  const records = groupExecutions(read);
  if (from > 0 && records.length > 0) records.shift();
  return { records, from };
}

/**
 * The executions whose events are among the last `maxEvents` of the log, oldest first. With
 * `agent`, it first looks at the last FIRST_LOOK_EVENTS only, and reads the whole window only
 * when that holds fewer than HISTORY_WINDOW + 1 complete executions of the agent (its history
 * and the current run).
 */
export async function readRecentExecutions(
  log: HistorySource,
  maxEvents: number = MAX_HISTORY_EVENTS,
  agent?: string,
): Promise<ExecutionRecord[]> {
  if (agent !== undefined && FIRST_LOOK_EVENTS < maxEvents) {
    const first = await readWindow(log, FIRST_LOOK_EVENTS);
    if (first.from === 0 || first.records.filter((r) => r.agent === agent && r.complete).length > HISTORY_WINDOW) return first.records;
  }
  return (await readWindow(log, maxEvents)).records;
}

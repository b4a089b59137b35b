/**
 * The cost of the anomaly baseline at the end of `aegis run`: open a reader on a log of 40,000
 * events (800 executions of 50 events each), read back the last FIRST_LOOK_EVENTS (an agent whose
 * last 50 runs fit there) and the last MAX_HISTORY_EVENTS (the bound), group them, and score the
 * newest execution. Prints medians of 5 rounds.
 *
 *   npm run build && node dist/bench/alerts-baseline.js
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scoreAgainstHistory } from '../src/alerts/baseline.js';
import { FIRST_LOOK_EVENTS, MAX_HISTORY_EVENTS, readRecentExecutions } from '../src/alerts/baseline-history.js';
import type { AuditEventInput } from '../src/audit/event.js';
import { openAuditLog, openAuditReader } from '../src/audit/index.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const home = mkdtempSync(join(tmpdir(), 'aegis-bench-baseline-'));
try {
  const log = await openAuditLog({ home, env: {}, inlineEncoding: true });
  for (let x = 0; x < 800; x++) {
    const actor = { agent: `agent-${x % 4}`, execution: `exec-${x}` };
    const batch: AuditEventInput[] = [{ actor, action: 'run.spawn', decision: 'info', payload: { isolation: 'crun' } }];
    for (let i = 0; i < 46; i++)
      batch.push({
        actor,
        action: i % 2 === 0 ? 'net.dns' : 'net.connect',
        decision: 'allow',
        payload: { name: 'api.openai.com', host: 'api.openai.com', port: 443, bytesSent: 900 + i, bytesReceived: 4000 + x },
      });
    batch.push({ actor, action: 'run.exit', decision: 'info', payload: { status: 'exited', exitCode: 0, durationMs: 400 + (x % 7) } });
    batch.push({ actor, action: 'resource.usage', decision: 'info', payload: { cpuMs: 80, maxMemoryBytes: 12e6, durationMs: 410 } });
    batch.push({ actor, action: 'run.exit', decision: 'info', payload: {} });
    await log.appendMany(batch);
  }
  await log.close();
  const measure = async (events: number): Promise<{ ms: number[]; executions: number }> => {
    const ms: number[] = [];
    let executions = 0;
    for (let round = 0; round < 5; round++) {
      const t0 = performance.now();
      const reader = await openAuditReader({ home, env: {} });
      const records = await readRecentExecutions(reader, events);
      await reader.close();
      scoreAgainstHistory(records, records.at(-1)!);
      ms.push(performance.now() - t0);
      executions = records.length;
    }
    return { ms, executions };
  };
  for (const events of [FIRST_LOOK_EVENTS, MAX_HISTORY_EVENTS]) {
    const { ms, executions } = await measure(events);
    console.log(
      `baseline at the end of a run, ${events} events read back (${executions} executions): median ${Math.round(median(ms))} ms (min ${Math.round(Math.min(...ms))} ms)`,
    );
  }
} finally {
  rmSync(home, { recursive: true, force: true });
}

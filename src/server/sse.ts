/**
 * GET /v1/executions/{id}/stream: Server-Sent Events from the execution's output chunks in the
 * Store (the dispatcher appends them as they come): `stdout` / `stderr` (data `{"data": text}`),
 * `audit` (the audit event), then `exit` (the summary), each with `id: <seq>` so a client can
 * resume (`Last-Event-ID` or `?after=`). Works across workers: whichever worker runs the
 * execution, the stream reads the shared store.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyReply } from 'fastify';
import type { Store } from './store/types.js';

const FINAL = new Set(['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost']);
const PAGE = 200;
const KEEPALIVE_MS = 15_000;

function frame(event: string, id: number | undefined, data: string): string {
  // data is JSON text on one line (JSON.stringify escapes newlines).
  return `event: ${event}\n${id !== undefined ? `id: ${id}\n` : ''}data: ${data}\n\n`;
}

export async function streamExecution(store: Store, id: string, after: number, reply: FastifyReply, pollMs: number): Promise<void> {
  const res = reply.raw;
  reply.hijack();
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  let seq = after;
  let lastWrite = Date.now();
  let quietChecks = 0;
  try {
    while (!closed) {
      const chunks = await store.readOutput(id, seq, PAGE);
      for (const c of chunks) {
        seq = c.seq;
        const data = c.kind === 'stdout' || c.kind === 'stderr' ? JSON.stringify({ data: c.data }) : c.data;
        res.write(frame(c.kind, c.seq, data));
        lastWrite = Date.now();
        if (c.kind === 'exit') {
          res.end();
          return;
        }
      }
      if (chunks.length === PAGE) continue;
      // No exit chunk yet: an execution that ended without one (recorded lost by a reaper) ends
      // the stream with an exit built from its record, once nothing more arrives.
      quietChecks += 1;
      if (quietChecks % 10 === 0) {
        const e = await store.getExecution(id);
        if (e === null || FINAL.has(e.status)) {
          const more = await store.readOutput(id, seq, 1);
          if (more.length === 0) {
            const summary = e?.summary ?? { executionId: id, status: e?.status ?? 'lost', exitCode: e?.exitCode ?? null };
            res.write(frame('exit', undefined, JSON.stringify(summary)));
            res.end();
            return;
          }
        }
      }
      if (Date.now() - lastWrite > KEEPALIVE_MS) {
        res.write(': keep-alive\n\n');
        lastWrite = Date.now();
      }
      await sleep(pollMs);
    }
  } catch {
    res.destroy();
  }
}

/**
 * GET /v1/executions/{id}/stream: Server-Sent Events from the execution's output chunks in the
 * Store (the dispatcher appends them as they come): `stdout` / `stderr` (data `{"data": text}`),
 * `audit` (the audit event), then `exit` (the summary), each with `id: <seq>` so a client can
 * resume (`Last-Event-ID` or `?after=`). Works across workers: whichever worker runs the
 * execution, the stream reads the shared store. With a `follow` feed (the Dispatcher's: woken as
 * each batch of a local execution is stored) there is no polling delay; without one the store is
 * polled every `pollMs`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyReply } from 'fastify';
import type { OutputChunk, Store } from './store/types.js';

/** A live feed of an execution's chunks after `afterSeq`, ending after its exit (Dispatcher.follow). */
export type Follow = (id: string, afterSeq: number, signal: AbortSignal) => AsyncIterable<OutputChunk>;

const FINAL = new Set(['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost']);
const PAGE = 200;
const KEEPALIVE_MS = 15_000;

function frame(event: string, id: number | undefined, data: string): string {
  // data is JSON text on one line (JSON.stringify escapes newlines).
  return `event: ${event}\n${id !== undefined ? `id: ${id}\n` : ''}data: ${data}\n\n`;
}

export async function streamExecution(
  store: Store,
  id: string,
  after: number,
  reply: FastifyReply,
  pollMs: number,
  follow?: Follow,
): Promise<void> {
  const res = reply.raw;
  reply.hijack();
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  let closed = false;
  const abort = new AbortController();
  res.on('close', () => {
    closed = true;
    abort.abort();
  });
  let seq = after;
  let lastWrite = Date.now();
  let quietChecks = 0;
  const endFromRecord = async (): Promise<void> => {
    const e = await store.getExecution(id);
    const summary = e?.summary ?? { executionId: id, status: e?.status ?? 'lost', exitCode: e?.exitCode ?? null };
    res.write(frame('exit', undefined, JSON.stringify(summary)));
    res.end();
  };
  if (follow !== undefined) {
    const keepAlive = setInterval(() => void (closed || res.write(': keep-alive\n\n')), KEEPALIVE_MS);
    try {
      for await (const c of follow(id, after, abort.signal)) {
        if (closed) return;
        const data = c.kind === 'stdout' || c.kind === 'stderr' ? JSON.stringify({ data: c.data }) : c.data;
        res.write(frame(c.kind, c.seq, data));
        if (c.kind === 'exit') {
          res.end();
          return;
        }
      }
      // The feed ended without an exit chunk (an execution recorded lost by a reaper).
      if (!closed) await endFromRecord();
    } catch {
      res.destroy();
    } finally {
      clearInterval(keepAlive);
    }
    return;
  }
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
            await endFromRecord();
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

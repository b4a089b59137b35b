/**
 * The audit routes: the same reader and proofs as `aegis audit query|checkpoint|proof|consistency`
 * (src/audit/reader.ts), opened read-only per request.
 */
import type { z } from 'zod';
import type { AuditReader } from '../audit/reader.js';
import { ServerError } from './errors.js';
import type * as S from './schemas.js';

type Open = () => Promise<AuditReader>;
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

async function withReader<T>(open: Open, fn: (r: AuditReader) => Promise<T>): Promise<T> {
  let r: AuditReader;
  try {
    r = await open();
  } catch (cause) {
    throw new ServerError('server.unavailable', 'the audit log cannot be read', { cause });
  }
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
}

export async function auditEvents(open: Open, q: z.output<typeof S.AuditQuery>): Promise<z.input<typeof S.AuditEvents>> {
  const since = q.since !== undefined ? Date.parse(q.since) : undefined;
  const until = q.until !== undefined ? Date.parse(q.until) : undefined;
  if (Number.isNaN(since) || Number.isNaN(until)) throw new ServerError('server.invalid_request', 'since/until: not an RFC 3339 time');
  const limit = q.limit ?? 100;
  // `net.*` matches every action under net.; anything else matches literally (as `aegis audit query`).
  const prefix = q.action?.endsWith('.*') === true ? q.action.slice(0, -1) : undefined;
  return withReader(open, async (r) => {
    const events: z.input<typeof S.AuditEvents>['events'] = [];
    let next: number | null = null;
    for await (const rec of r.read(q.from ?? 0)) {
      const e = rec.decoded?.event;
      if (e === undefined) continue;
      if (q.agent !== undefined && e.actor.agent !== q.agent) continue;
      if (q.execution !== undefined && e.actor.execution !== q.execution) continue;
      if (q.action !== undefined && (prefix !== undefined ? !e.action.startsWith(prefix) : e.action !== q.action)) continue;
      if (q.decision !== undefined && e.decision !== q.decision) continue;
      const t = Date.parse(e.time);
      if (since !== undefined && !(t >= since)) continue;
      if (until !== undefined && !(t < until)) continue;
      if (events.length === limit) {
        next = rec.index;
        break;
      }
      events.push({ index: rec.index, event: { ...e }, ...(rec.decoded?.keyDestroyed === true ? { keyDestroyed: true } : {}) });
    }
    return { events, size: r.size, next };
  });
}

export async function checkpoint(open: Open): Promise<{ checkpoint: string }> {
  return withReader(open, async (r) => {
    const note = await r.latestCheckpoint();
    if (note === undefined) throw new ServerError('server.not_found', 'the log has no checkpoint yet');
    return { checkpoint: note };
  });
}

export async function inclusion(open: Open, q: z.output<typeof S.InclusionQuery>): Promise<z.input<typeof S.Inclusion>> {
  return withReader(open, async (r) => {
    const size = q.size ?? r.size;
    if (size > r.size || q.index >= size)
      throw new ServerError('server.invalid_request', `index ${q.index} is not in a tree of size ${size} (log size ${r.size})`);
    const p = await r.inclusionProof(q.index, size);
    return { index: q.index, treeSize: size, leafHash: b64(p.leafHash), proof: p.proof.map(b64), root: b64(p.root) };
  });
}

export async function consistency(open: Open, q: z.output<typeof S.ConsistencyQuery>): Promise<z.input<typeof S.Consistency>> {
  return withReader(open, async (r) => {
    const size2 = q.size2 ?? r.size;
    if (size2 > r.size || q.size1 < 1 || q.size1 > size2)
      throw new ServerError('server.invalid_request', `sizes must satisfy 1 <= size1 <= size2 <= ${r.size}`);
    const c = await r.consistencyProof(q.size1, size2);
    return { size1: q.size1, size2, root1: b64(c.root1), root2: b64(c.root2), proof: c.proof.map(b64) };
  });
}

/**
 * The route handlers: thin, over the Store, the audit log and the upload check. Parameters,
 * query and body arrive validated (app.ts); JSON results are checked against their schema by
 * app.ts before they are sent.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { AuditEventInput } from '../audit/event.js';
import type { Limits, ServerDeps } from './app.js';
import type { Principal } from './auth.js';
import { ServerError } from './errors.js';
import { lifetimeMs, newKey } from './keys.js';
import type { Metrics } from './metrics.js';
import { sendOutputsTar } from './outputs.js';
import type { RouteId } from './roles.js';
import type * as S from './schemas.js';
import { streamExecution } from './sse.js';
import type { AgentVersionRecord, ApiKeyRecord, ExecutionRecord } from './store/types.js';
import { auditEvents, checkpoint, consistency, inclusion } from './audit-routes.js';
import { applyOperatorEnv } from '../policy/env.js';
import { validateManifestText } from './upload/index.js';

export interface HandlerContext {
  readonly deps: ServerDeps;
  readonly limits: Limits;
  readonly clock: () => number;
  readonly metrics: Metrics;
  readonly doc: Record<string, unknown>;
}

export interface HandlerInput {
  readonly req: FastifyRequest;
  readonly reply: FastifyReply;
  readonly params: Record<string, unknown>;
  readonly query: Record<string, unknown>;
  readonly body: unknown;
  readonly principal: Principal | undefined;
}

export type HandlerResult = { readonly kind: 'json'; readonly status: number; readonly body: unknown } | { readonly kind: 'sent' };

type Handler = (ctx: HandlerContext, input: HandlerInput) => Promise<HandlerResult>;

const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());
const json = (status: number, body: unknown): HandlerResult => ({ kind: 'json', status, body });
const FINAL = new Set(['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost']);

/** The secret store of this server, or 503 when it was started without one. */
function secretsOf(ctx: HandlerContext): { dir: string; rotationOverlapMs: number } {
  const s = ctx.deps.secrets;
  if (s === undefined) throw new ServerError('server.unavailable', 'this server has no secret store');
  return s;
}

/**
 * Runs a secret store operation, mapping its refusals to API errors: bad input 400, a name that
 * exists 409, an unknown one 404; the store's own failures stay internal (500, logged, not sent).
 */
async function secretsCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const { SecretsError } = await import('../secrets/index.js');
    if (!(err instanceof SecretsError)) throw err;
    if (err.code === 'secrets.exists') throw new ServerError('server.conflict', err.message, { cause: err });
    if (err.code === 'secrets.not_found') throw new ServerError('server.not_found', err.message, { cause: err });
    if (err.code.endsWith('_invalid')) throw new ServerError('server.invalid_request', err.message, { cause: err });
    throw err;
  }
}

function who(p: Principal | undefined): Principal {
  if (p === undefined) throw new ServerError('server.unauthorized', 'not authenticated');
  return p;
}

/** A principal limited to its own things sees others' as unknown (404, not 403: ids are not confirmed). */
function owns(p: Principal, createdBy: string): boolean {
  return p.owner === undefined || p.owner === createdBy;
}

async function audit(ctx: HandlerContext, e: AuditEventInput): Promise<void> {
  await ctx.deps.audit.append(e);
}

function agentPayload(a: AgentVersionRecord): Record<string, unknown> {
  return { name: a.name, version: a.version, manifestDigest: a.manifestDigest, codeDigest: a.codeDigest };
}

function keyInfo(k: ApiKeyRecord): z.input<typeof S.KeyInfo> {
  return {
    id: k.id,
    role: k.role,
    createdAt: iso(k.createdAt)!,
    expires: iso(k.expiresAt),
    revoked: iso(k.revokedAt),
    createdBy: k.createdBy,
  };
}

export function executionView(e: ExecutionRecord): z.input<typeof S.Execution> {
  return {
    id: e.id,
    agent: e.agent,
    version: e.version,
    status: e.status,
    exitCode: e.exitCode,
    durationMs: e.durationMs,
    args: [...e.args],
    createdAt: iso(e.createdAt)!,
    startedAt: iso(e.startedAt),
    finishedAt: iso(e.finishedAt),
    createdBy: e.createdBy,
    cancelRequested: e.cancelRequested,
    summary: e.summary === null ? null : { ...e.summary },
  };
}

async function agentOf(ctx: HandlerContext, p: Principal, name: string): Promise<AgentVersionRecord> {
  const a = await ctx.deps.store.getAgent(name);
  if (a === null || !owns(p, a.createdBy)) throw new ServerError('server.not_found', `no agent ${name}`);
  return a;
}

async function executionOf(ctx: HandlerContext, p: Principal, id: string): Promise<ExecutionRecord> {
  const e = await ctx.deps.store.getExecution(id);
  if (e === null || !owns(p, e.createdBy)) throw new ServerError('server.not_found', `no execution ${id}`);
  return e;
}

function time(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  const t = Date.parse(text);
  if (!Number.isFinite(t)) throw new ServerError('server.invalid_request', `${what}: not an RFC 3339 time`);
  return t;
}

/** Reads the deploy's two parts within their limits (anything else in the form is refused). */
async function readDeploy(req: FastifyRequest, manifestBytes: number): Promise<{ manifest: string; code: Buffer }> {
  if (!req.isMultipart())
    throw new ServerError('server.unsupported_media_type', 'POST /v1/agents takes multipart/form-data with manifest and code parts');
  let manifest: string | undefined;
  let code: Buffer | undefined;
  for await (const part of req.parts()) {
    if (part.type === 'field' && part.fieldname === 'manifest' && manifest === undefined) {
      if (part.valueTruncated) throw new ServerError('server.payload_too_large', 'the manifest part is too large');
      manifest = typeof part.value === 'string' ? part.value : String(part.value);
    } else if (part.type === 'file' && part.fieldname === 'code' && code === undefined) {
      code = await part.toBuffer();
    } else if (part.type === 'file' && part.fieldname === 'manifest' && manifest === undefined) {
      const b = await part.toBuffer();
      if (b.length > manifestBytes) throw new ServerError('server.payload_too_large', 'the manifest part is too large');
      manifest = b.toString('utf8');
    } else {
      if (part.type === 'file') part.file.resume();
      throw new ServerError('server.invalid_request', `unexpected form part ${part.fieldname}: only manifest and code`);
    }
  }
  if (manifest === undefined || code === undefined)
    throw new ServerError('server.invalid_request', 'a deploy needs a manifest part and a code part');
  return { manifest, code };
}

export const HANDLERS: Readonly<Record<RouteId, Handler>> = {
  health: async () => json(200, { status: 'ok' }),
  ready: async (ctx) => {
    try {
      await ctx.deps.store.listPools();
      await ctx.deps.ready?.();
    } catch (cause) {
      throw new ServerError('server.unavailable', 'not ready: the store or the audit log does not answer', { cause });
    }
    return json(200, { status: 'ready' });
  },
  openapi: async (ctx) => json(200, ctx.doc),
  metrics: async (ctx) => json(200, await ctx.metrics.render(ctx.deps.store, ctx.deps.engine)),

  'keys.create': async (ctx, { body, principal }) => {
    const p = who(principal);
    const b = body as z.output<typeof S.CreateKeyBody>;
    const now = ctx.clock();
    const expiresAt = b.expires === undefined ? null : now + lifetimeMs(b.expires);
    const { record, key } = await newKey(b.role, { now, expiresAt, createdBy: p.id });
    await ctx.deps.store.createKey(record);
    await audit(ctx, {
      actor: { principal: p.id },
      action: 'key.create',
      decision: 'info',
      payload: { id: record.id, role: record.role, expires: iso(expiresAt) },
    });
    return json(201, { id: record.id, key, role: record.role, expires: iso(expiresAt) });
  },
  'keys.list': async (ctx) => json(200, { keys: (await ctx.deps.store.listKeys()).map(keyInfo) }),
  'keys.revoke': async (ctx, { params, principal }) => {
    const p = who(principal);
    const id = params['id'] as string;
    const k = await ctx.deps.store.getKey(id);
    if (k === null) throw new ServerError('server.not_found', `no key ${id}`);
    if (k.revokedAt !== null) throw new ServerError('server.conflict', `key ${id} is revoked already`);
    const at = ctx.clock();
    if (!(await ctx.deps.store.revokeKey(id, at))) throw new ServerError('server.conflict', `key ${id} is revoked already`);
    await audit(ctx, { actor: { principal: p.id }, action: 'key.revoke', decision: 'info', payload: { id, role: k.role } });
    return json(200, { id, revoked: iso(at) });
  },

  'secrets.set': async (ctx, { body, principal }) => {
    const p = who(principal);
    const b = body as z.output<typeof S.SetSecretBody>;
    const { dir } = secretsOf(ctx);
    const { checkHeader, checkName, checkValue, parseHosts, SecretStore } = await import('../secrets/index.js');
    return secretsCall(async () => {
      checkName(b.name);
      const hosts = parseHosts(b.hosts.join(','));
      const header = b.header === undefined ? null : checkHeader(b.header);
      const value = checkValue(Buffer.from(b.value, 'utf8'));
      const now = ctx.clock();
      const expiresAt = b.expires === undefined ? null : now + lifetimeMs(b.expires);
      const r = await SecretStore.at(dir).set({ name: b.name, hosts, header, value, now, expiresAt, by: p.id });
      await audit(ctx, {
        actor: { principal: p.id },
        action: 'secret.set',
        decision: 'info',
        payload: { secret: b.name, version: r.version, hosts, header, expiresAt: iso(expiresAt) },
      });
      return json(201, { name: b.name, version: r.version });
    });
  },
  'secrets.list': async (ctx) => {
    const { dir } = secretsOf(ctx);
    const { currentVersion, SecretStore } = await import('../secrets/index.js');
    return secretsCall(async () => {
      const now = ctx.clock();
      const secrets = (await SecretStore.at(dir).list()).map((x) => {
        const cur = currentVersion(x);
        return {
          name: x.name,
          version: cur.version,
          hosts: [...x.hosts],
          header: x.header,
          createdAt: iso(x.createdAt)!,
          createdBy: x.createdBy,
          expiresAt: iso(cur.expiresAt),
          state: cur.expiresAt !== null && now >= cur.expiresAt ? ('expired' as const) : ('active' as const),
          versions: x.versions.map((v) => ({
            version: v.version,
            createdAt: iso(v.createdAt)!,
            expiresAt: iso(v.expiresAt),
            retiredAt: iso(v.retiredAt),
          })),
        };
      });
      return json(200, { secrets });
    });
  },
  'secrets.rotate': async (ctx, { params, body, principal }) => {
    const p = who(principal);
    const name = params['name'] as string;
    const b = body as z.output<typeof S.RotateSecretBody>;
    const { dir, rotationOverlapMs } = secretsOf(ctx);
    const { checkName, checkValue, SecretStore } = await import('../secrets/index.js');
    return secretsCall(async () => {
      checkName(name);
      const value = checkValue(Buffer.from(b.value, 'utf8'));
      const now = ctx.clock();
      const expiresAt = b.expires === undefined ? null : now + lifetimeMs(b.expires);
      const r = await SecretStore.at(dir).rotate({ name, value, now, expiresAt, overlapMs: rotationOverlapMs });
      await audit(ctx, {
        actor: { principal: p.id },
        action: 'secret.rotate',
        decision: 'info',
        payload: {
          secret: name,
          version: r.version,
          expiresAt: iso(expiresAt),
          previousValidUntil: iso(now + rotationOverlapMs),
          dropped: r.dropped,
        },
      });
      return json(200, { name, version: r.version });
    });
  },
  'secrets.delete': async (ctx, { params, principal }) => {
    const p = who(principal);
    const name = params['name'] as string;
    const { dir } = secretsOf(ctx);
    const { checkName, SecretStore } = await import('../secrets/index.js');
    return secretsCall(async () => {
      checkName(name);
      const r = await SecretStore.at(dir).rm(name);
      await audit(ctx, {
        actor: { principal: p.id },
        action: 'secret.rm',
        decision: 'info',
        payload: { secret: name, versions: r.dropped },
      });
      return json(200, { name, removed: r.dropped });
    });
  },

  'agents.deploy': async (ctx, { req, principal }) => {
    const p = who(principal);
    const { manifest, code } = await readDeploy(req, ctx.limits.manifestBytes);
    const checked = await ctx.deps.checkUpload(manifest, code);
    const existing = await ctx.deps.store.getAgent(checked.name);
    if (existing !== null && !owns(p, existing.createdBy))
      throw new ServerError('server.forbidden', `agent ${checked.name} belongs to another principal`);
    const rec = await ctx.deps.store.putAgentVersion({
      name: checked.name,
      manifestDigest: checked.manifestDigest,
      codeDigest: checked.codeDigest,
      manifestText: manifest,
      codeArchive: code,
      createdAt: ctx.clock(),
      createdBy: p.owner ?? p.id,
    });
    await audit(ctx, { actor: { agent: rec.name, principal: p.id }, action: 'agent.deploy', decision: 'info', payload: agentPayload(rec) });
    return json(201, { name: rec.name, version: rec.version, manifestDigest: rec.manifestDigest, codeDigest: rec.codeDigest });
  },
  'agents.list': async (ctx, { principal }) => {
    const p = who(principal);
    const pools = new Map((await ctx.deps.store.listPools()).map((x) => [x.agent, x.warm]));
    const agents = (await ctx.deps.store.listAgents())
      .filter((a) => owns(p, a.createdBy))
      .map((a) => ({ ...agentPayload(a), createdAt: iso(a.createdAt), createdBy: a.createdBy, warm: pools.get(a.name) ?? 0 }));
    return json(200, { agents });
  },
  'agents.get': async (ctx, { params, principal }) => {
    const a = await agentOf(ctx, who(principal), params['name'] as string);
    const warm = (await ctx.deps.store.listPools()).find((x) => x.agent === a.name)?.warm ?? 0;
    return json(200, { ...agentPayload(a), createdAt: iso(a.createdAt), createdBy: a.createdBy, warm, manifest: a.manifestText });
  },
  'agents.delete': async (ctx, { params, principal }) => {
    const p = who(principal);
    const a = await agentOf(ctx, p, params['name'] as string);
    if (!(await ctx.deps.store.deleteAgent(a.name, ctx.clock()))) throw new ServerError('server.not_found', `no agent ${a.name}`);
    await ctx.deps.store.setPool(a.name, 0);
    ctx.deps.onPoolChange?.(a.name, 0);
    await audit(ctx, { actor: { agent: a.name, principal: p.id }, action: 'agent.delete', decision: 'info', payload: agentPayload(a) });
    return json(200, { name: a.name, deleted: true });
  },
  'agents.pool': async (ctx, { params, body, principal }) => {
    const p = who(principal);
    const a = await agentOf(ctx, p, params['name'] as string);
    const { warm } = body as z.output<typeof S.PoolBody>;
    await ctx.deps.store.setPool(a.name, warm);
    ctx.deps.onPoolChange?.(a.name, warm);
    await audit(ctx, {
      actor: { agent: a.name, principal: p.id },
      action: 'agent.pool',
      decision: 'info',
      payload: { ...agentPayload(a), warm },
    });
    return json(200, { agent: a.name, warm });
  },

  'executions.create': async (ctx, { params, body, principal }) => {
    const p = who(principal);
    const a = await agentOf(ctx, p, params['name'] as string);
    const b = body as z.output<typeof S.CreateExecutionBody>;
    if (b.env !== undefined && Object.keys(b.env).length > 0) {
      // The engine refuses these too (failed_to_start); checked here so that a refused input
      // creates no execution. The same rules as `aegis run --env` (src/policy/env.ts).
      const v = validateManifestText(a.manifestText);
      const checked = v.ok
        ? applyOperatorEnv(
            v.policy,
            Object.entries(b.env).map(([k, val]) => `${k}=${val}`),
          )
        : undefined;
      if (checked === undefined || !checked.ok)
        throw new ServerError(
          'server.invalid_request',
          `env: ${checked?.message.replace(/^--env /, '') ?? 'the deployed manifest no longer validates'}`,
        );
    }
    const id = ctx.deps.newId?.() ?? randomUUID();
    const rec = await ctx.deps.store.createExecution({
      id,
      agent: a.name,
      version: a.version,
      args: b.args ?? [],
      stdin: b.stdin ?? null,
      env: b.env ?? {},
      createdAt: ctx.clock(),
      createdBy: p.owner ?? p.id,
    });
    await audit(ctx, {
      actor: { agent: a.name, execution: id, principal: p.id },
      action: 'execution.create',
      decision: 'info',
      payload: { ...agentPayload(a), execution: id, args: rec.args.length, envNames: Object.keys(rec.env) },
    });
    ctx.deps.kick?.();
    return json(201, { id: rec.id, status: rec.status });
  },
  'executions.list': async (ctx, { query, principal }) => {
    const p = who(principal);
    const q = query as z.output<typeof S.ExecutionQuery>;
    const since = time(q.since, 'since');
    const until = time(q.until, 'until');
    const list = await ctx.deps.store.listExecutions({
      ...(q.agent !== undefined ? { agent: q.agent } : {}),
      ...(q.status !== undefined ? { status: q.status } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {}),
      limit: q.limit ?? 100,
    });
    return json(200, { executions: list.filter((e) => owns(p, e.createdBy)).map(executionView) });
  },
  'executions.get': async (ctx, { params, principal }) =>
    json(200, executionView(await executionOf(ctx, who(principal), params['id'] as string))),
  'executions.cancel': async (ctx, { params, principal }) => {
    const p = who(principal);
    const e = await executionOf(ctx, p, params['id'] as string);
    if (FINAL.has(e.status)) throw new ServerError('server.conflict', `execution ${e.id} has ended (${e.status}): nothing to cancel`);
    const after = await ctx.deps.store.requestCancel(e.id);
    if (after === null) throw new ServerError('server.not_found', `no execution ${e.id}`);
    if (after.status === 'running') ctx.deps.cancelLocal?.(e.id);
    if (after.status === 'queued') {
      // Never claimed: it ends here, killed, and its stream ends with it.
      const summary = { executionId: e.id, status: 'killed', exitCode: 137, durationMs: 0, stopReason: 'cancelled before start' };
      if (await ctx.deps.store.finishExecution(e.id, { status: 'killed', exitCode: 137, durationMs: 0, summary, at: ctx.clock() }))
        await ctx.deps.store.appendOutput(e.id, [{ kind: 'exit', data: JSON.stringify(summary) }]);
    }
    await audit(ctx, {
      actor: { agent: e.agent, execution: e.id, principal: p.id },
      action: 'execution.cancel',
      decision: 'info',
      payload: { execution: e.id, agent: e.agent, version: e.version, status: after.status },
    });
    ctx.deps.kick?.();
    const now = (await ctx.deps.store.getExecution(e.id)) ?? after;
    return json(202, { id: e.id, status: now.status, cancelRequested: true });
  },
  'executions.stream': async (ctx, { params, query, req, reply, principal }) => {
    const e = await executionOf(ctx, who(principal), params['id'] as string);
    const after = (query as z.output<typeof S.StreamQuery>).after ?? Number(req.headers['last-event-id'] ?? 0);
    await streamExecution(
      ctx.deps.store,
      e.id,
      Number.isSafeInteger(after) && after >= 0 ? after : 0,
      reply,
      ctx.deps.streamPollMs ?? 100,
      ctx.deps.follow,
    );
    return { kind: 'sent' };
  },
  'executions.outputs': async (ctx, { params, reply, principal }) => {
    const e = await executionOf(ctx, who(principal), params['id'] as string);
    if (!FINAL.has(e.status))
      throw new ServerError('server.conflict', `execution ${e.id} is ${e.status}: outputs are served once it has ended`);
    await sendOutputsTar(join(ctx.deps.outputsRoot, e.id), reply);
    return { kind: 'sent' };
  },

  'audit.events': async (ctx, { query }) => json(200, await auditEvents(ctx.deps.openAuditReader, query as z.output<typeof S.AuditQuery>)),
  'audit.checkpoint': async (ctx) => json(200, await checkpoint(ctx.deps.openAuditReader)),
  'audit.inclusion': async (ctx, { query }) =>
    json(200, await inclusion(ctx.deps.openAuditReader, query as z.output<typeof S.InclusionQuery>)),
  'audit.consistency': async (ctx, { query }) =>
    json(200, await consistency(ctx.deps.openAuditReader, query as z.output<typeof S.ConsistencyQuery>)),
};

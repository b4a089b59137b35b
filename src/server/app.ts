/**
 * `buildServer(deps)`: the Fastify application of the API (issue 11). Infrastructure only: the
 * routes of routes.ts registered with their handlers (handlers.ts), authentication and the role
 * matrix on every request, zod validation of parameters, query and body (unknown fields
 * refused), zod validation of every JSON response against its documented schema, and one error
 * layer: every 4xx/5xx, Fastify's own included, is `{"error": {"code", "message"}}`.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import type { Socket } from 'node:net';
import type { z } from 'zod';
import type { AuditReader } from '../audit/reader.js';
import type { AuditSink } from '../audit/event.js';
import type { ExecutionEngine } from '../orchestrator/types.js';
import { isAegisError } from '../errors.js';
import { Authenticator, type Peer, type Principal, type ThrottleOptions } from './auth.js';
import { HTTP_STATUS, ServerError, apiCode, type ServerErrorCode } from './errors.js';
import { HANDLERS, type HandlerResult } from './handlers.js';
import { Metrics } from './metrics.js';
import type { Follow } from './sse.js';
import { openApiDocument } from './openapi.js';
import { allowed, ROLE_MATRIX } from './roles.js';
import { ROUTES, fastifyPath, type RouteDef } from './routes.js';
import type { Store } from './store/types.js';

export interface Limits {
  /** JSON bodies (an execution's stdin is at most 1 MiB). */
  readonly jsonBytes: number;
  /** The manifest part of a deploy. */
  readonly manifestBytes: number;
  /** The code part (.tar.gz) of a deploy. */
  readonly codeBytes: number;
}

export const DEFAULT_LIMITS: Limits = { jsonBytes: 2 << 20, manifestBytes: 256 << 10, codeBytes: 64 << 20 };

/** What a deploy's upload check returns (src/server/upload/ does the checking). */
export interface CheckedUpload {
  readonly name: string;
  readonly manifestDigest: string;
  readonly codeDigest: string;
}

export interface ServerDeps {
  readonly store: Store;
  /** The audit log the server writes (api.*, agent.*, key.*, execution.* events). */
  readonly audit: AuditSink;
  /** A read-only view of the same log, opened per audit request and closed after. */
  readonly openAuditReader: () => Promise<AuditReader>;
  /**
   * Validates a deploy (manifest exactly as `aegis validate`, archive safely extractable): throws
   * ServerError `server.manifest_invalid` (details.issues) or `server.archive_invalid`.
   */
  readonly checkUpload: (manifestText: string, archive: Buffer) => Promise<CheckedUpload>;
  /** The host's secret store (`$AEGIS_HOME/secrets`) and the rotation overlap, for the admin's secrets routes. */
  readonly secrets?: { readonly dir: string; readonly rotationOverlapMs: number };
  /** Where executions' outputs live: `<outputsRoot>/<execution id>/`. */
  readonly outputsRoot: string;
  readonly version: string;
  /** Pools and start latency for /metrics (absent: no engine on this process). */
  readonly engine?: Pick<ExecutionEngine, 'pools' | 'metrics'>;
  /** Called after an execution is queued or a pool changed (the dispatcher claims at once). */
  readonly kick?: () => void;
  /** Cancels an execution running on this worker at once (else the dispatcher's cancel poll does it). */
  readonly cancelLocal?: (id: string) => boolean;
  readonly onPoolChange?: (agent: string, warm: number) => void;
  readonly clock?: () => number;
  readonly newId?: () => string;
  readonly limits?: Partial<Limits>;
  readonly throttle?: ThrottleOptions;
  /** The socket's group: its members (seen through peer credentials) are local operators+deployers. */
  readonly socketGid?: number;
  /** Identifies a unix-socket peer (undefined for TCP connections). */
  readonly peerOf?: (socket: Socket) => Promise<Peer | undefined>;
  /** Extra readiness check (the store and the audit log answer). */
  readonly ready?: () => Promise<void>;
  readonly metrics?: Metrics;
  /** Diagnostics (stderr). */
  readonly log?: (msg: string) => void;
  /** A live feed of an execution's chunks (the Dispatcher's follow); without it the stream polls the store. */
  readonly follow?: Follow;
  /** How often the SSE stream polls the store for new chunks (ms). */
  readonly streamPollMs?: number;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    routeId?: string;
  }
  interface FastifyRequest {
    principal?: Principal;
  }
}

/** The HTTP error body of an error (never an internal message for 5xx). */
export function errorBody(err: unknown): { status: number; body: { error: Record<string, unknown> } } {
  if (err instanceof ServerError) {
    const status = HTTP_STATUS[err.code];
    const message = status >= 500 && err.code !== 'server.unavailable' ? 'internal error' : err.message;
    return { status, body: { error: { code: apiCode(err.code), message, ...(err.details ?? {}) } } };
  }
  const e = err as { statusCode?: number; code?: string; message?: string };
  const byStatus: Record<number, ServerErrorCode> = {
    400: 'server.invalid_request',
    404: 'server.not_found',
    406: 'server.invalid_request',
    413: 'server.payload_too_large',
    415: 'server.unsupported_media_type',
  };
  const code = typeof e.statusCode === 'number' ? byStatus[e.statusCode] : undefined;
  if (code !== undefined) return errorBody(new ServerError(code, typeof e.message === 'string' ? e.message : 'bad request'));
  if (isAegisError(err) && /\.(invalid|refused|too_large)$/.test(err.code))
    return errorBody(new ServerError('server.invalid_request', err.message));
  return errorBody(new ServerError('server.internal', 'internal error'));
}

function check<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  const where = first === undefined || first.path.length === 0 ? what : `${what}.${first.path.join('.')}`;
  throw new ServerError('server.invalid_request', `${where}: ${first?.message ?? 'invalid'}`);
}

export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const limits: Limits = { ...DEFAULT_LIMITS, ...deps.limits };
  const clock = deps.clock ?? Date.now;
  const metrics = deps.metrics ?? new Metrics();
  const auth = new Authenticator({
    store: deps.store,
    audit: deps.audit,
    clock,
    socketGid: deps.socketGid ?? 0,
    onFailure: (r) => metrics.countAuthFailure(r),
    ...(deps.throttle !== undefined ? { throttle: deps.throttle } : {}),
    ...(deps.log !== undefined ? { log: deps.log } : {}),
  });
  const doc = openApiDocument(deps.version);
  const app = Fastify({ logger: false, bodyLimit: limits.jsonBytes, return503OnClosing: true, forceCloseConnections: true });

  await app.register(multipart, {
    limits: { fieldSize: limits.manifestBytes, fileSize: limits.codeBytes, files: 2, fields: 1, parts: 2, headerPairs: 100 },
    throwFileSizeLimit: true,
  });

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorBody(err);
    if (status >= 500 && status !== 503)
      deps.log?.(`${req.method} ${req.url}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    if (reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    void reply.code(status).type('application/json').send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = errorBody(new ServerError('server.not_found', `no route ${req.method} ${req.url.split('?')[0]}`));
    void reply.code(status).type('application/json').send(body);
  });

  // Authentication and the role matrix, before any body is read.
  app.addHook('onRequest', async (req) => {
    const id = req.routeOptions.config.routeId;
    if (id === undefined) return; // unknown route: 404
    const rule = ROLE_MATRIX[id as keyof typeof ROLE_MATRIX];
    if (rule === 'public') return;
    const socket = req.raw.socket;
    const peer = deps.peerOf === undefined ? undefined : await deps.peerOf(socket);
    const source =
      deps.peerOf !== undefined && socket.remoteAddress === undefined
        ? `unix:uid:${peer?.uid ?? 'unknown'}`
        : `tcp:${socket.remoteAddress ?? 'unknown'}`;
    const principal = await auth.authenticate({ source, authorization: req.headers.authorization, peer, route: id });
    if (!allowed(id as keyof typeof ROLE_MATRIX, principal.roles))
      throw new ServerError(
        'server.forbidden',
        `role ${principal.roles.join('+')} may not use ${req.method} ${req.routeOptions.url ?? ''}`,
      );
    req.principal = principal;
  });

  const ctx = { deps, limits, clock, metrics, doc };
  for (const route of ROUTES) {
    app.route({
      method: route.method,
      url: fastifyPath(route.path),
      config: { routeId: route.id },
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const params = route.params !== undefined ? check(route.params, req.params, 'params') : {};
        const query = route.query !== undefined ? check(route.query, req.query ?? {}, 'query') : {};
        let body: unknown;
        if (route.body !== undefined && route.body !== 'multipart') body = check(route.body, req.body ?? {}, 'body');
        else if (route.body === undefined && req.body !== undefined && req.body !== null)
          throw new ServerError('server.invalid_request', 'this route takes no body');
        const result: HandlerResult = await HANDLERS[route.id](ctx, { req, reply, params, query, body, principal: req.principal });
        if (result.kind === 'sent') return reply;
        return send(route, reply, result.status, result.body);
      },
    });
  }
  return app;
}

/** Sends a JSON response after checking it against the route's documented schema (a mismatch is a 500). */
function send(route: RouteDef, reply: FastifyReply, status: number, body: unknown): FastifyReply {
  const kind = route.responses[status];
  if (kind === undefined) throw new ServerError('server.internal', `${route.id}: undocumented status ${status}`);
  if ('media' in kind) return reply.code(status).type(kind.media).send(body);
  const r = (kind as z.ZodType).safeParse(body);
  if (!r.success) throw new ServerError('server.internal', `${route.id}: response does not match its schema: ${r.error.message}`);
  return reply.code(status).type('application/json').send(r.data);
}

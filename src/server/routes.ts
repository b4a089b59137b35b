/**
 * Every route of the API as data: method, path, the role-matrix id, and the zod schemas of its
 * parameters, query, body and responses. The router (app.ts) registers exactly these and the
 * OpenAPI document (openapi.ts) is generated from exactly these.
 */
import type { z } from 'zod';
import * as S from './schemas.js';
import type { RouteId } from './roles.js';

/** A response's body: JSON (a schema), or a non-JSON media type. */
export type ResponseKind =
  | z.ZodType
  | { readonly media: 'text/event-stream' | 'application/x-tar' | 'text/plain' | 'application/json'; readonly description: string };

export interface RouteDef {
  readonly id: RouteId;
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** OpenAPI style: `/v1/agents/{name}`. */
  readonly path: string;
  readonly summary: string;
  readonly params?: z.ZodObject;
  readonly query?: z.ZodObject;
  /** A JSON body schema, or `multipart` (agents.deploy: the `manifest` and `code` parts). */
  readonly body?: z.ZodType | 'multipart';
  /** Success responses (errors are the shared ErrorBody). */
  readonly responses: Readonly<Record<number, ResponseKind>>;
}

export const ROUTES: readonly RouteDef[] = [
  { id: 'health', method: 'GET', path: '/healthz', summary: 'the process is up', responses: { 200: S.Health } },
  { id: 'ready', method: 'GET', path: '/readyz', summary: 'the store and the audit log answer', responses: { 200: S.Ready } },
  {
    id: 'metrics',
    method: 'GET',
    path: '/metrics',
    summary: 'Prometheus text format',
    responses: { 200: { media: 'text/plain', description: 'Prometheus exposition format 0.0.4' } },
  },
  {
    id: 'openapi',
    method: 'GET',
    path: '/v1/openapi.json',
    summary: 'this document',
    responses: { 200: { media: 'application/json', description: 'OpenAPI 3.1' } },
  },
  {
    id: 'keys.create',
    method: 'POST',
    path: '/v1/keys',
    summary: 'create an API key (shown once)',
    body: S.CreateKeyBody,
    responses: { 201: S.CreatedKey },
  },
  { id: 'keys.list', method: 'GET', path: '/v1/keys', summary: 'list API keys (never the secrets)', responses: { 200: S.KeyList } },
  {
    id: 'keys.revoke',
    method: 'DELETE',
    path: '/v1/keys/{id}',
    summary: 'revoke an API key',
    params: S.KeyParams,
    responses: { 200: S.Revoked },
  },
  {
    id: 'secrets.set',
    method: 'POST',
    path: '/v1/secrets',
    summary: 'add a secret (value in, never out): the hosts it may be sent to, optionally its header and expiry',
    body: S.SetSecretBody,
    responses: { 201: S.SecretVersion },
  },
  { id: 'secrets.list', method: 'GET', path: '/v1/secrets', summary: 'list the secrets (never values)', responses: { 200: S.SecretList } },
  {
    id: 'secrets.rotate',
    method: 'POST',
    path: '/v1/secrets/{name}/rotate',
    summary: 'a new value as a new version; running executions keep the old one for the rotation overlap at most',
    params: S.SecretParams,
    body: S.RotateSecretBody,
    responses: { 200: S.SecretVersion },
  },
  {
    id: 'secrets.delete',
    method: 'DELETE',
    path: '/v1/secrets/{name}',
    summary: 'remove a secret and the keys of all its versions',
    params: S.SecretParams,
    responses: { 200: S.SecretRemoved },
  },
  {
    id: 'agents.deploy',
    method: 'POST',
    path: '/v1/agents',
    summary: 'deploy a manifest and its code (.tar.gz); a known name gets a new version',
    body: 'multipart',
    responses: { 201: S.Deployed },
  },
  {
    id: 'agents.list',
    method: 'GET',
    path: '/v1/agents',
    summary: 'list deployed agents (latest versions)',
    responses: { 200: S.AgentList },
  },
  {
    id: 'agents.get',
    method: 'GET',
    path: '/v1/agents/{name}',
    summary: 'one agent',
    params: S.AgentParams,
    responses: { 200: S.AgentDetail },
  },
  {
    id: 'agents.delete',
    method: 'DELETE',
    path: '/v1/agents/{name}',
    summary: 'delete an agent',
    params: S.AgentParams,
    responses: { 200: S.Deleted },
  },
  {
    id: 'agents.pool',
    method: 'PUT',
    path: '/v1/agents/{name}/pool',
    summary: 'set the warm pool target',
    params: S.AgentParams,
    body: S.PoolBody,
    responses: { 200: S.PoolInfo },
  },
  {
    id: 'executions.create',
    method: 'POST',
    path: '/v1/agents/{name}/executions',
    summary: 'queue an execution of the latest version',
    params: S.AgentParams,
    body: S.CreateExecutionBody,
    responses: { 201: S.CreatedExecution },
  },
  {
    id: 'executions.list',
    method: 'GET',
    path: '/v1/executions',
    summary: 'list executions, newest first',
    query: S.ExecutionQuery,
    responses: { 200: S.ExecutionList },
  },
  {
    id: 'executions.get',
    method: 'GET',
    path: '/v1/executions/{id}',
    summary: 'status and summary',
    params: S.ExecutionParams,
    responses: { 200: S.Execution },
  },
  {
    id: 'executions.cancel',
    method: 'DELETE',
    path: '/v1/executions/{id}',
    summary: 'cancel: TERM, grace, KILL (recorded killed)',
    params: S.ExecutionParams,
    responses: { 202: S.Cancelled },
  },
  {
    id: 'executions.stream',
    method: 'GET',
    path: '/v1/executions/{id}/stream',
    summary: 'Server-Sent Events: stdout, stderr, audit, then exit',
    params: S.ExecutionParams,
    query: S.StreamQuery,
    responses: {
      200: {
        media: 'text/event-stream',
        description:
          'events `stdout` / `stderr` (data {"data": text}), `audit` (an audit event), `exit` (the summary); id: sequence number',
      },
    },
  },
  {
    id: 'executions.outputs',
    method: 'GET',
    path: '/v1/executions/{id}/outputs',
    summary: "the execution's output folder as a tar stream",
    params: S.ExecutionParams,
    responses: { 200: { media: 'application/x-tar', description: 'regular files and folders only' } },
  },
  {
    id: 'audit.events',
    method: 'GET',
    path: '/v1/audit/events',
    summary: 'query audit events',
    query: S.AuditQuery,
    responses: { 200: S.AuditEvents },
  },
  {
    id: 'audit.checkpoint',
    method: 'GET',
    path: '/v1/audit/checkpoint',
    summary: 'the latest signed checkpoint',
    responses: { 200: S.Checkpoint },
  },
  {
    id: 'audit.inclusion',
    method: 'GET',
    path: '/v1/audit/proofs/inclusion',
    summary: 'RFC 6962 inclusion proof (base64 hashes)',
    query: S.InclusionQuery,
    responses: { 200: S.Inclusion },
  },
  {
    id: 'audit.consistency',
    method: 'GET',
    path: '/v1/audit/proofs/consistency',
    summary: 'RFC 6962 consistency proof (base64 hashes)',
    query: S.ConsistencyQuery,
    responses: { 200: S.Consistency },
  },
];

/** Fastify's path syntax for an OpenAPI path. */
export function fastifyPath(path: string): string {
  return path.replace(/\{(\w+)\}/g, ':$1');
}

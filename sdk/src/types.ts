/**
 * The API's request and response shapes, written from the OpenAPI 3.1 document the server serves
 * at `/v1/openapi.json` (issue 11's contract). `openapi.test.ts` compares ROUTES with a running
 * server's document, so a route the server changes breaks the SDK's build, not its users.
 * Fields the contract does not fix are optional: the SDK never depends on them.
 */

export type Role = 'admin' | 'deployer' | 'operator' | 'auditor';

/** An execution's status (issue 11's contract). */
export type ExecutionStatus = 'queued' | 'running' | 'exited' | 'oom' | 'timeout' | 'killed' | 'failed_to_start' | 'lost';

/** Every status, in the contract's order (checked against the OpenAPI document). */
export const EXECUTION_STATUSES: readonly ExecutionStatus[] = [
  'queued',
  'running',
  'exited',
  'oom',
  'timeout',
  'killed',
  'failed_to_start',
  'lost',
];

/** The statuses an execution ends in. */
export const FINAL_STATUSES: readonly ExecutionStatus[] = ['exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost'];

export function isFinalStatus(s: ExecutionStatus): boolean {
  return FINAL_STATUSES.includes(s);
}

/** `POST /v1/keys` answer: `key` is shown this once and never again. */
export interface CreatedKey {
  readonly id: string;
  readonly key: string;
  readonly role: Role;
  /** ISO 8601, or null: never expires. */
  readonly expires: string | null;
}

/** `GET /v1/keys` item (never the key itself). Times are RFC 3339 UTC. */
export interface KeyInfo {
  readonly id: string;
  readonly role: Role;
  readonly createdAt: string;
  /** null: never expires. */
  readonly expires: string | null;
  /** When it was revoked, or null. */
  readonly revoked: string | null;
  /** The key id that created it, or `local:<uid>` for the offline bootstrap. */
  readonly createdBy: string;
}

/** `POST /v1/agents` answer. */
export interface DeployedAgent {
  readonly name: string;
  readonly version: number;
  readonly manifestDigest: string;
  readonly codeDigest: string;
}

/** `GET /v1/agents` item and `GET /v1/agents/{name}`: the latest version. */
export interface AgentInfo extends DeployedAgent {
  readonly createdAt: string;
  readonly createdBy: string;
  /** The warm pool target. */
  readonly warm: number;
  /** The deployed agent.yaml text (`GET /v1/agents/{name}` only). */
  readonly manifest?: string;
}

/** A manifest problem, exactly as `aegis validate --json` reports it. */
export interface ManifestIssue {
  readonly line: number;
  readonly column: number;
  readonly path: string;
  readonly message: string;
}

/** What an execution is given (`POST /v1/agents/{name}/executions`). */
export interface ExecutionInput {
  readonly args?: readonly string[];
  readonly stdin?: string;
  /** Only the variables the manifest allows; others are refused (400). */
  readonly env?: Readonly<Record<string, string>>;
}

/** `POST /v1/agents/{name}/executions` answer. */
export interface CreatedExecution {
  readonly id: string;
  readonly status: ExecutionStatus;
}

/** `GET /v1/executions/{id}`: status and, once ended, the same summary `aegis run --summary` writes. */
export interface ExecutionInfo {
  readonly id: string;
  readonly agent: string;
  readonly version: number;
  readonly status: ExecutionStatus;
  readonly exitCode: number | null;
  readonly durationMs: number | null;
  readonly args: readonly string[];
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly createdBy: string;
  readonly cancelRequested: boolean;
  /** What `aegis run --summary` writes, once ended. */
  readonly summary: Readonly<Record<string, unknown>> | null;
}

/** `GET /v1/executions` filter. */
export interface ExecutionFilter {
  readonly agent?: string;
  readonly status?: ExecutionStatus;
  /** RFC 3339 time or a Date: created at or after. */
  readonly since?: string | Date;
  /** RFC 3339 time or a Date: created before. */
  readonly until?: string | Date;
  readonly limit?: number;
}

/** One Server-Sent Event of `GET /v1/executions/{id}/stream`. */
export type ExecutionEvent =
  | { readonly type: 'stdout'; readonly data: string }
  | { readonly type: 'stderr'; readonly data: string }
  | { readonly type: 'audit'; readonly event: Readonly<Record<string, unknown>> }
  | {
      readonly type: 'exit';
      readonly status: ExecutionStatus;
      readonly exitCode: number | null;
      readonly [field: string]: unknown;
    };

/** The error body of every 4xx/5xx answer. */
export interface ApiErrorBody {
  readonly error: {
    readonly code: string;
    readonly message: string;
    readonly issues?: readonly ManifestIssue[];
  };
}

/** `DELETE /v1/executions/{id}` answer (202). */
export interface CancelledExecution {
  readonly id: string;
  readonly status: ExecutionStatus;
  readonly cancelRequested: true;
}

/** `PUT /v1/agents/{name}/pool` answer. */
export interface PoolInfo {
  readonly agent: string;
  readonly warm: number;
}

/** The routes this SDK calls (method and OpenAPI path template), checked against the server's document. */
export const ROUTES = [
  ['get', '/healthz'],
  ['get', '/readyz'],
  ['post', '/v1/keys'],
  ['get', '/v1/keys'],
  ['delete', '/v1/keys/{id}'],
  ['post', '/v1/agents'],
  ['get', '/v1/agents'],
  ['get', '/v1/agents/{name}'],
  ['delete', '/v1/agents/{name}'],
  ['put', '/v1/agents/{name}/pool'],
  ['post', '/v1/agents/{name}/executions'],
  ['get', '/v1/executions'],
  ['get', '/v1/executions/{id}'],
  ['delete', '/v1/executions/{id}'],
  ['get', '/v1/executions/{id}/stream'],
  ['get', '/v1/executions/{id}/outputs'],
] as const;

/**
 * `fieldsOf<T>()(...names)`: the names of every field of T, checked by the compiler both ways (a
 * name T lacks, or a field of T left out, fails the build).
 */
function fieldsOf<T>() {
  return <const K extends readonly (keyof T & string)[]>(
    ...names: K & ([Exclude<keyof T, K[number]>] extends [never] ? unknown : never)
  ): K => names;
}

/**
 * The fields of each JSON answer type, by `<method> <path> <status>`: the test against a server
 * compares them with the properties of the response schemas in its `/v1/openapi.json`, so the
 * SDK's types and the document cannot drift apart unnoticed.
 */
export const RESPONSE_FIELDS: Readonly<Record<string, readonly string[]>> = {
  'post /v1/keys 201': fieldsOf<CreatedKey>()('id', 'key', 'role', 'expires'),
  'post /v1/agents 201': fieldsOf<DeployedAgent>()('name', 'version', 'manifestDigest', 'codeDigest'),
  'get /v1/agents/{name} 200': fieldsOf<AgentInfo>()(
    'name',
    'version',
    'manifestDigest',
    'codeDigest',
    'createdAt',
    'createdBy',
    'warm',
    'manifest',
  ),
  'put /v1/agents/{name}/pool 200': fieldsOf<PoolInfo>()('agent', 'warm'),
  'post /v1/agents/{name}/executions 201': fieldsOf<CreatedExecution>()('id', 'status'),
  'get /v1/executions/{id} 200': fieldsOf<ExecutionInfo>()(
    'id',
    'agent',
    'version',
    'status',
    'exitCode',
    'durationMs',
    'args',
    'createdAt',
    'startedAt',
    'finishedAt',
    'createdBy',
    'cancelRequested',
    'summary',
  ),
  'delete /v1/executions/{id} 202': fieldsOf<CancelledExecution>()('id', 'status', 'cancelRequested'),
};

/** List answers: the field holding the list, and the fields of one item. */
export const LIST_FIELDS: Readonly<Record<string, { readonly key: string; readonly item: readonly string[] }>> = {
  'get /v1/keys 200': { key: 'keys', item: fieldsOf<KeyInfo>()('id', 'role', 'createdAt', 'expires', 'revoked', 'createdBy') },
  'get /v1/agents 200': {
    key: 'agents',
    item: fieldsOf<Omit<AgentInfo, 'manifest'>>()('name', 'version', 'manifestDigest', 'codeDigest', 'createdAt', 'createdBy', 'warm'),
  },
  'get /v1/executions 200': { key: 'executions', item: RESPONSE_FIELDS['get /v1/executions/{id} 200']! },
};

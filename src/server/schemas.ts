/**
 * The API's request and response schemas (zod 4): the single source of truth. Requests are
 * validated with them (unknown fields refused: every object is strict) and the OpenAPI 3.1
 * document at /v1/openapi.json is generated from them (openapi.ts), so the two cannot drift.
 */
import { z } from 'zod';

export const ROLES = ['admin', 'deployer', 'operator', 'auditor'] as const;
export const Role = z.enum(ROLES);

export const EXECUTION_STATUSES = ['queued', 'running', 'exited', 'oom', 'timeout', 'killed', 'failed_to_start', 'lost'] as const;
export const ExecutionStatus = z.enum(EXECUTION_STATUSES);

/** Agent names as the manifest allows them (lowercase DNS-label-like). */
export const AgentName = z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'an agent name: lowercase letters, digits and -');
/** Execution ids (UUIDs, lowercase). */
export const ExecutionId = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'an execution id');
export const KeyId = z.string().regex(/^ak_[0-9a-f]{16}$/, 'a key id (ak_ and 16 hex digits)');
const Time = z.string().describe('RFC 3339 UTC time');
const Digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);
/** `30d`, `12h`, `15m`: a key's lifetime. */
export const Lifetime = z.string().regex(/^[1-9]\d{0,4}[mhd]$/, 'a duration such as 30d, 12h or 15m');
const Nat = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const ErrorIssue = z.strictObject({ line: z.number().int(), column: z.number().int(), path: z.string(), message: z.string() });
export const ErrorBody = z.strictObject({
  error: z.strictObject({ code: z.string(), message: z.string(), issues: z.array(ErrorIssue).optional() }),
});

// --- keys
export const CreateKeyBody = z.strictObject({ role: Role, expires: Lifetime.optional() });
export const CreatedKey = z.strictObject({
  id: KeyId,
  key: z.string().describe('the key itself, shown this once: send it as Authorization: Bearer <key>'),
  role: Role,
  expires: Time.nullable(),
});
export const KeyInfo = z.strictObject({
  id: KeyId,
  role: Role,
  createdAt: Time,
  expires: Time.nullable(),
  revoked: Time.nullable(),
  createdBy: z.string(),
});
export const KeyList = z.strictObject({ keys: z.array(KeyInfo) });
export const KeyParams = z.strictObject({ id: KeyId });
export const Revoked = z.strictObject({ id: KeyId, revoked: Time });

// --- secrets (admin only; a value goes in and never comes out: issue 12, docs/secrets.md)
export const SecretName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,127}$/, 'a secret name: [a-z0-9][a-z0-9._-]{0,127}');
export const SecretParams = z.strictObject({ name: SecretName });
const SecretValue = z.string().min(1).max(16384).describe('the value; never returned, never logged');
export const SetSecretBody = z.strictObject({
  name: SecretName,
  hosts: z.array(z.string().min(1).max(255)).min(1).max(64).describe('hosts the value may be sent to (allowlist syntax)'),
  header: z.string().min(1).max(128).optional().describe('the HTTP header the value belongs in'),
  value: SecretValue,
  expires: Lifetime.optional(),
});
export const RotateSecretBody = z.strictObject({ value: SecretValue, expires: Lifetime.optional() });
export const SecretVersion = z.strictObject({ name: SecretName, version: z.number().int().min(1) });
export const SecretInfo = z.strictObject({
  name: SecretName,
  version: z.number().int().min(1),
  hosts: z.array(z.string()),
  header: z.string().nullable(),
  createdAt: Time,
  createdBy: z.string(),
  expiresAt: Time.nullable(),
  state: z.enum(['active', 'expired']),
  versions: z.array(
    z.strictObject({ version: z.number().int().min(1), createdAt: Time, expiresAt: Time.nullable(), retiredAt: Time.nullable() }),
  ),
});
export const SecretList = z.strictObject({ secrets: z.array(SecretInfo) });
export const SecretRemoved = z.strictObject({
  name: SecretName,
  removed: z.array(z.number().int().min(1)).describe('the versions removed'),
});

// --- agents
export const AgentParams = z.strictObject({ name: AgentName });
export const Deployed = z.strictObject({ name: AgentName, version: z.number().int().min(1), manifestDigest: Digest, codeDigest: Digest });
export const AgentInfo = z.strictObject({
  name: AgentName,
  version: z.number().int().min(1),
  manifestDigest: Digest,
  codeDigest: Digest,
  createdAt: Time,
  createdBy: z.string(),
  warm: z.number().int().min(0).describe('the warm pool target'),
});
export const AgentDetail = AgentInfo.extend({ manifest: z.string().describe('the deployed agent.yaml text') });
export const AgentList = z.strictObject({ agents: z.array(AgentInfo) });
export const Deleted = z.strictObject({ name: AgentName, deleted: z.literal(true) });
export const MAX_WARM = 32;
export const PoolBody = z.strictObject({ warm: z.number().int().min(0).max(MAX_WARM) });
export const PoolInfo = z.strictObject({ agent: AgentName, warm: z.number().int().min(0) });

// --- executions
export const MAX_ARGS = 256;
export const MAX_STDIN = 1 << 20;
export const CreateExecutionBody = z.strictObject({
  args: z.array(z.string().max(4096)).max(MAX_ARGS).optional(),
  stdin: z.string().max(MAX_STDIN).optional(),
  env: z
    .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/), z.string().max(8192))
    .optional()
    .describe('environment additions; only names the manifest allows'),
});
export const CreatedExecution = z.strictObject({ id: ExecutionId, status: ExecutionStatus });
export const Execution = z.strictObject({
  id: ExecutionId,
  agent: AgentName,
  version: z.number().int().min(1),
  status: ExecutionStatus,
  exitCode: z.number().int().nullable(),
  durationMs: z.number().nullable(),
  args: z.array(z.string()),
  createdAt: Time,
  startedAt: Time.nullable(),
  finishedAt: Time.nullable(),
  createdBy: z.string(),
  cancelRequested: z.boolean(),
  summary: z.record(z.string(), z.unknown()).nullable().describe('what `aegis run --summary` writes, once ended'),
});
export const ExecutionParams = z.strictObject({ id: ExecutionId });
export const ExecutionQuery = z.strictObject({
  agent: AgentName.optional(),
  status: ExecutionStatus.optional(),
  since: Time.optional(),
  until: Time.optional(),
  limit: Nat.max(1000).optional(),
});
export const ExecutionList = z.strictObject({ executions: z.array(Execution) });
export const Cancelled = z.strictObject({ id: ExecutionId, status: ExecutionStatus, cancelRequested: z.literal(true) });
export const StreamQuery = z.strictObject({ after: Nat.optional() });

// --- audit
export const AuditQuery = z.strictObject({
  agent: z.string().max(256).optional(),
  execution: z.string().max(256).optional(),
  action: z.string().max(256).optional().describe('exactly, or a prefix like net.*'),
  decision: z.enum(['allow', 'deny', 'error', 'info']).optional(),
  since: Time.optional(),
  until: Time.optional(),
  from: Nat.optional().describe('first entry index to look at'),
  limit: Nat.min(1).max(1000).optional(),
});
export const AuditEventRecord = z.strictObject({
  index: z.number().int().min(0),
  event: z.record(z.string(), z.unknown()),
  keyDestroyed: z.boolean().optional(),
});
export const AuditEvents = z.strictObject({
  events: z.array(AuditEventRecord),
  size: z.number().int().min(0),
  next: z.number().int().min(0).nullable().describe('index to continue from, or null at the end'),
});
export const Checkpoint = z.strictObject({ checkpoint: z.string().describe('C2SP signed note') });
export const InclusionQuery = z.strictObject({ index: Nat, size: Nat.optional() });
export const Inclusion = z.strictObject({
  index: z.number().int(),
  treeSize: z.number().int(),
  leafHash: z.string(),
  proof: z.array(z.string()),
  root: z.string(),
});
export const ConsistencyQuery = z.strictObject({ size1: Nat, size2: Nat.optional() });
export const Consistency = z.strictObject({
  size1: z.number().int(),
  size2: z.number().int(),
  root1: z.string(),
  root2: z.string(),
  proof: z.array(z.string()),
});

// --- operations
export const Health = z.strictObject({ status: z.literal('ok') });
export const Ready = z.strictObject({ status: z.literal('ready') });
export const Empty = z.strictObject({});

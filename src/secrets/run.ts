/**
 * What `aegis run` asks of the secret store before the agent starts: every `secret:<name>`
 * reference of the manifest must name a secret that exists, whose current version has not
 * expired, and that is bound to at least one host the manifest's network.allow permits;
 * otherwise the run is refused (fail secure) with `secrets.missing`, `secrets.expired` or
 * `secrets.unbound`. Each reference then becomes, in the agent's environment, a placeholder
 * unique to this execution and variable (`aegis-ph-` + 128 random bits).
 *
 * ARCHITECTURE NOTE: the real value is never read here (no key is needed to start a run) and
 * never enters the sandbox: the agent sees only placeholders. Which secret and version each
 * placeholder stands for is returned to the caller; `aegis run` then decrypts the values once
 * and hands them to the egress gateway, in memory, which swaps a placeholder for its value only
 * in HTTPS requests to the secret's bound hosts and refuses it anywhere else it sees it
 * (src/secrets/inject.ts, src/gateway/intercept/; docs/secrets.md).
 */
import { randomBytes } from 'node:crypto';
import type { AuditEventInput } from '../audit/event.js';
import type { Policy } from '../policy/types.js';
import { boundHosts, currentVersion, isExpired, PLACEHOLDER_RANDOM_BYTES, placeholderFrom, validForRun } from './core.js';
import type { InjectableSecret } from './inject.js';
import { SecretsError } from './errors.js';
import { SecretStore } from './store.js';

/** One `secret:<name>` reference of this run (the placeholder is never logged). */
export interface PlaceholderBinding {
  readonly variable: string;
  readonly secret: string;
  readonly version: number;
  /** The secret's hosts that the manifest's allowlist permits (never empty). */
  readonly hosts: readonly string[];
  readonly header: string | null;
  readonly placeholder: string;
}

export interface RunSecrets {
  /** Variable -> placeholder, for the agent's environment. */
  readonly env: Readonly<Record<string, string>>;
  readonly bindings: readonly PlaceholderBinding[];
}

export interface PrepareRunSecretsOptions {
  /** The secret store directory ($AEGIS_HOME/secrets). */
  readonly dir: string;
  readonly policy: Policy;
  /** The clock, in milliseconds since the epoch. */
  readonly now: number;
}

/** Checks the manifest's secret references against the store; throws SecretsError (the run must not start). */
export async function prepareRunSecrets(o: PrepareRunSecretsOptions): Promise<RunSecrets> {
  const refs = Object.entries(o.policy.agent.secretRefs).sort(([a], [b]) => (a < b ? -1 : 1));
  if (refs.length === 0) return { env: {}, bindings: [] };
  const store = SecretStore.at(o.dir);
  const env: Record<string, string> = {};
  const bindings: PlaceholderBinding[] = [];
  for (const [variable, name] of refs) {
    const s = await store.get(name);
    if (s === undefined)
      throw new SecretsError('secrets.missing', `agent.yaml needs secret:${name} (env ${variable}), which is not in the secret store`, {
        secret: name,
      });
    const v = currentVersion(s);
    if (isExpired(v, o.now))
      throw new SecretsError(
        'secrets.expired',
        `secret ${name} (env ${variable}) expired at ${new Date(v.expiresAt!).toISOString()}: rotate it`,
        { secret: name },
      );
    const hosts = boundHosts(s.hosts, o.policy.network);
    if (hosts.length === 0)
      throw new SecretsError(
        'secrets.unbound',
        `secret ${name} (env ${variable}) may be sent only to ${s.hosts.join(', ')}, and permissions.network.allow permits none of them`,
        { secret: name },
      );
    const placeholder = placeholderFrom(randomBytes(PLACEHOLDER_RANDOM_BYTES));
    env[variable] = placeholder;
    bindings.push({ variable, secret: name, version: v.version, hosts, header: s.header, placeholder });
  }
  return { env, bindings };
}

/** The policy with each secret reference's placeholder in the agent's plain environment. */
export function withPlaceholders(policy: Policy, secrets: RunSecrets): Policy {
  if (secrets.bindings.length === 0) return policy;
  return { ...policy, agent: { ...policy.agent, env: { ...policy.agent.env, ...secrets.env } } };
}

/** `secret.denied` for a run refused by prepareRunSecrets (undefined for any other error). */
export function secretDeniedEvent(err: unknown, execution: string, agent: string | undefined): AuditEventInput | undefined {
  if (!(err instanceof SecretsError) || err.secret === undefined) return undefined;
  return {
    actor: { execution, ...(agent !== undefined ? { agent } : {}) },
    action: 'secret.denied',
    decision: 'deny',
    reason: err.code,
    payload: { secret: err.secret },
  };
}

/** `secret.bind` events: which secret and version each reference stands for (never the placeholder or the value). */
export function secretBindEvents(secrets: RunSecrets, execution: string, agent: string): AuditEventInput[] {
  return secrets.bindings.map((b) => ({
    actor: { agent, execution },
    action: 'secret.bind',
    decision: 'allow',
    payload: { secret: b.secret, version: b.version, variable: b.variable, hosts: [...b.hosts], header: b.header },
  }));
}

/**
 * The values of this run's secrets, for the gateway's swap (issue 12). Read once, after the
 * checks, and held only in the calling process's memory (the gateway); never in the sandbox,
 * the log, or an error message (a decryption failure names the secret, never the value).
 */
export async function revealRunSecrets(dir: string, secrets: RunSecrets): Promise<InjectableSecret[]> {
  if (secrets.bindings.length === 0) return [];
  const store = SecretStore.at(dir);
  const out: InjectableSecret[] = [];
  for (const b of secrets.bindings) {
    const value = Buffer.from(await store.reveal(b.secret, b.version)).toString('latin1');
    out.push({ secret: b.secret, version: b.version, hosts: b.hosts, header: b.header, placeholder: b.placeholder, value });
  }
  return out;
}

/**
 * The gateway's check before each swap: the store's metadata (no value) says whether a run that
 * started at `runStartedAt` may still use `version` (`validForRun`: expiry, rotation overlap,
 * removal). Any failure to read the store answers false (fail closed).
 */
export function secretValidity(
  dir: string,
  runStartedAt: number,
  overlapMs: number,
): (secret: string, version: number) => Promise<boolean> {
  return async (secret, version) => {
    const s = await SecretStore.at(dir).get(secret);
    return s !== undefined && validForRun(s, version, runStartedAt, Date.now(), overlapMs);
  };
}

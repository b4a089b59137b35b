/**
 * The credentials of remote tool servers (`tools[].mcp.secret: "secret:<name>"`), read from the
 * AEGIS secrets store once, before the agent starts, and held by the broker only: the agent
 * never sees them (the broker adds the header on its own connection to the server).
 *
 * Fail secure: a referenced secret that is missing, expired, or not bound to the server's host
 * (one of its `--hosts` must match the URL's host) refuses the run (`tools.secret_unavailable`,
 * and the `secrets.*` reason in the audit event).
 */
import type { AuditEventInput } from '../audit/event.js';
import { parseAllowEntry } from '../policy/host.js';
import type { ToolsPolicy } from '../policy/types.js';
import { boundHosts, currentVersion, isExpired } from '../secrets/core.js';
import { SecretStore } from '../secrets/store.js';
import { ToolsError } from './errors.js';
import type { ToolCredential } from './upstream.js';

export interface ToolCredentials {
  /** Server name -> header and value (in memory only). */
  readonly byServer: ReadonlyMap<string, ToolCredential>;
  /** `secret.bind` events (server, secret, version, header; never the value). */
  readonly events: readonly Omit<AuditEventInput, 'actor'>[];
}

export async function resolveToolCredentials(tools: ToolsPolicy | undefined, secretsDir: string, now: number): Promise<ToolCredentials> {
  const byServer = new Map<string, ToolCredential>();
  const events: Omit<AuditEventInput, 'actor'>[] = [];
  const wanted = (tools?.servers ?? []).flatMap((s) =>
    s.transport.kind === 'http' && s.transport.secret !== null ? [{ s, t: s.transport }] : [],
  );
  if (wanted.length === 0) return { byServer, events };
  const store = SecretStore.at(secretsDir);
  for (const { s, t } of wanted) {
    const name = t.secret!;
    const meta = await store.get(name);
    if (meta === undefined)
      throw new ToolsError('tools.secret_unavailable', `tool server ${s.name} needs secret:${name}, which is not in the secret store`);
    const v = currentVersion(meta);
    if (isExpired(v, now))
      throw new ToolsError('tools.secret_unavailable', `secret ${name} (tool server ${s.name}) has expired: rotate it`);
    const rule = parseAllowEntry(t.host);
    const hosts = rule.ok ? boundHosts(meta.hosts, { rules: [rule.rule], rateLimit: { perSecond: 1, burst: 1 }, byteQuota: null }) : [];
    if (hosts.length === 0)
      throw new ToolsError(
        'tools.secret_unavailable',
        `secret ${name} may be sent only to ${meta.hosts.join(', ')}, not to ${t.host} (tool server ${s.name})`,
      );
    const value = Buffer.from(await store.reveal(name, v.version)).toString('utf8');
    const header = meta.header ?? 'authorization';
    byServer.set(s.name, { header, value });
    events.push({
      action: 'secret.bind',
      decision: 'allow',
      payload: { secret: name, version: v.version, toolServer: s.name, hosts, header },
    });
  }
  return { byServer, events };
}

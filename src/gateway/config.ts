/**
 * Gateway configuration: the single source of truth is the zod schema below. Values come from
 * a JSON config file (AEGIS_GATEWAY_CONFIG=<path>) and are overridden by environment variables.
 *
 * - upstreamDns   (AEGIS_UPSTREAM_DNS, "ip:port")  resolver the gateway itself asks.
 *                 Default: the host's first `nameserver` in /etc/resolv.conf, port 53.
 * - sandboxSubnet (AEGIS_SANDBOX_SUBNET, CIDR /16../29) carved into one /30 per sandbox.
 *                 Default 10.201.0.0/16. Must not contain upstreamDns (gateway.config_invalid) nor
 *                 overlap any host route (checked at every sandbox start: gateway.subnet_conflict).
 * - stateDir      (AEGIS_STATE_DIR) slot locks and per-sandbox resolv.conf. Default /run/aegis.
 * - netnsPool     (AEGIS_NETNS_POOL, 0..16) sandbox networks kept prepared ahead under stateDir
 *                 (netns/pool.ts): a start claims one instead of building it, and refills the
 *                 pool. Default 0: none, nothing stays behind a run.
 *
 * - upstreamCaFile (AEGIS_UPSTREAM_CA_FILE, absolute path) extra CAs (PEM) the gateway trusts, besides
 *                 the host's store, when it verifies the upstream of a TLS-terminated host
 *                 (issue 12: bound secrets, HTTP rules). Operator configuration only: nothing the
 *                 agent controls adds a CA.
 *
 * NOTE: other tunnels stay end to end, and their certificate verification is the agent's.
 * AEGIS_EXTRA_CA_FILE is ignored here; an `extraCaFile` key in the file is refused (the setting
 * is `upstreamCaFile`), so that nobody believes it took effect.
 */
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { GatewayError } from './errors.js';
import { parseSubnet, subnetContains } from './netns/plan.js';
import { POOL_MAX_ENTRIES } from './netns/pool-limits.js';

const hostPort = z
  .string()
  .describe('resolver address as ip:port (IPv4)')
  .transform((s, ctx) => {
    const m = /^([0-9.]+):([0-9]{1,5})$/.exec(s);
    if (!m || !isIPv4(m[1]!) || Number(m[2]) < 1 || Number(m[2]) > 65535) {
      ctx.addIssue({ code: 'custom', message: `"${s}" is not ip:port` });
      return z.NEVER;
    }
    return { host: m[1]!, port: Number(m[2]) };
  });

export const GatewayConfigSchema = z.strictObject({
  upstreamDns: hostPort.optional().describe('upstream resolver; default: host /etc/resolv.conf'),
  sandboxSubnet: z
    .string()
    .default('10.201.0.0/16')
    .refine((s) => {
      try {
        parseSubnet(s);
        return true;
      } catch {
        return false;
      }
    }, 'must be an IPv4 network a.b.c.d/n with n between 16 and 29')
    .describe('subnet carved into one /30 per sandbox'),
  stateDir: z.string().startsWith('/', 'must be an absolute path').default('/run/aegis').describe('slot locks and per-sandbox files'),
  netnsPool: z.number().int().min(0).max(POOL_MAX_ENTRIES).default(0).describe('sandbox networks kept prepared ahead (0: none)'),
  upstreamCaFile: z
    .string()
    .startsWith('/', 'must be an absolute path')
    .optional()
    .describe('extra CA certificates (PEM) trusted for upstreams of TLS-terminated hosts, besides the host store'),
});

export interface GatewayConfig {
  readonly upstreamDns: { readonly host: string; readonly port: number };
  readonly sandboxSubnet: string;
  readonly stateDir: string;
  /** Sandbox networks kept prepared ahead (AEGIS_NETNS_POOL; absent or 0: none). */
  readonly netnsPool?: number;
  /** Extra CAs (PEM file) for upstream verification of terminated hosts (AEGIS_UPSTREAM_CA_FILE); never from the agent. */
  readonly upstreamCaFile?: string;
}

/** First IPv4 `nameserver` of a resolv.conf text, or null. */
export function firstNameserver(resolvConfText: string): string | null {
  for (const line of resolvConfText.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && isIPv4(m[1]!)) return m[1]!;
  }
  return null;
}

/** Pure: merge file values and environment, validate, apply defaults. */
export function parseGatewayConfig(
  env: Readonly<Record<string, string | undefined>>,
  fileJson: unknown,
  hostResolvConf: string,
): GatewayConfig {
  const fromFile = fileJson === null || fileJson === undefined ? {} : fileJson;
  if (typeof fromFile !== 'object' || Array.isArray(fromFile))
    throw new GatewayError('gateway.config_invalid', 'gateway config file must hold a JSON object');
  if (Object.hasOwn(fromFile, 'extraCaFile')) {
    throw new GatewayError(
      'gateway.config_invalid',
      'extraCaFile: not a gateway setting; upstreamCaFile names the CAs the gateway trusts for TLS-terminated hosts (tunnels stay end to end: give their CA to the agent, SSL_CERT_FILE in the manifest env)',
    );
  }
  const merged: Record<string, unknown> = { ...(fromFile as Record<string, unknown>) };
  if (env.AEGIS_UPSTREAM_DNS) merged.upstreamDns = env.AEGIS_UPSTREAM_DNS;
  if (env.AEGIS_SANDBOX_SUBNET) merged.sandboxSubnet = env.AEGIS_SANDBOX_SUBNET;
  if (env.AEGIS_STATE_DIR) merged.stateDir = env.AEGIS_STATE_DIR;
  if (env.AEGIS_UPSTREAM_CA_FILE) merged.upstreamCaFile = env.AEGIS_UPSTREAM_CA_FILE;
  if (env.AEGIS_NETNS_POOL)
    merged.netnsPool = /^[0-9]{1,3}$/.test(env.AEGIS_NETNS_POOL) ? Number(env.AEGIS_NETNS_POOL) : env.AEGIS_NETNS_POOL;
  const r = GatewayConfigSchema.safeParse(merged);
  if (!r.success) {
    throw new GatewayError('gateway.config_invalid', r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '));
  }
  let upstream = r.data.upstreamDns;
  if (!upstream) {
    const ns = firstNameserver(hostResolvConf);
    if (!ns)
      throw new GatewayError(
        'gateway.config_invalid',
        'no upstream resolver: set AEGIS_UPSTREAM_DNS or an IPv4 nameserver in /etc/resolv.conf',
      );
    upstream = { host: ns, port: 53 };
  }
  if (subnetContains(r.data.sandboxSubnet, upstream.host)) {
    throw new GatewayError(
      'gateway.config_invalid',
      `upstreamDns: ${upstream.host} is inside sandboxSubnet ${r.data.sandboxSubnet}; the gateway could not reach it`,
    );
  }
  return {
    upstreamDns: upstream,
    sandboxSubnet: r.data.sandboxSubnet,
    stateDir: r.data.stateDir,
    ...(r.data.netnsPool > 0 ? { netnsPool: r.data.netnsPool } : {}),
    ...(r.data.upstreamCaFile !== undefined ? { upstreamCaFile: r.data.upstreamCaFile } : {}),
  };
}

/** Read the config file (if AEGIS_GATEWAY_CONFIG names one) and the host's resolv.conf. */
export function loadGatewayConfig(env: Readonly<Record<string, string | undefined>>): GatewayConfig {
  let file: unknown = null;
  if (env.AEGIS_GATEWAY_CONFIG) {
    try {
      file = JSON.parse(readFileSync(env.AEGIS_GATEWAY_CONFIG, 'utf8'));
    } catch (err) {
      throw new GatewayError('gateway.config_invalid', `gateway config ${env.AEGIS_GATEWAY_CONFIG}: ${String(err)}`, { cause: err });
    }
  }
  let resolv = '';
  try {
    resolv = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    resolv = '';
  }
  return parseGatewayConfig(env, file, resolv);
}

/**
 * compilePolicy(manifest) -> Policy: the normalized, canonical-unit form every enforcer uses.
 * Pure.
 *
 * ARCHITECTURE NOTE: the arrows between the two pure areas run one way, manifest -> policy.
 * src/policy owns the vocabularies (allow-entry and image-reference grammars, sandbox paths,
 * syscall names, the Policy type) and every decision; src/manifest owns the document (schema,
 * parser with positions) and this translation of a validated document into a Policy. Nothing
 * in src/policy imports src/manifest. The manifest has already been validated (units parsed, entries compiled, paths
 * normalized); this step fixes the canonical representation (CFS period, de-duplicated and
 * sorted grants, secret references split from plain environment values).
 */
import type { Policy } from '../policy/types.js';
import type { Manifest } from './schema.js';

/** CFS bandwidth period used for every sandbox (the kernel default, 100 ms). */
export const CPU_PERIOD_US = 100_000;
/** Token bucket burst: this many seconds' worth of the rate, at least 1. */
const BURST_SECONDS = 2;

const SECRET_PREFIX = 'secret:';

function uniqueSorted(xs: readonly string[]): string[] {
  return [...new Set(xs)].sort();
}

export function compilePolicy(m: Manifest): Policy {
  const env: Record<string, string> = {};
  const secretRefs: Record<string, string> = {};
  for (const [k, v] of Object.entries(m.agent.env)) {
    if (v.startsWith(SECRET_PREFIX)) secretRefs[k] = v.slice(SECRET_PREFIX.length);
    else env[k] = v;
  }
  const p = m.permissions;
  const write = uniqueSorted(p.fs.write);
  const cores = p.cpu_quota;
  return {
    version: '1.0',
    agent: {
      name: m.agent.name,
      runtime: m.agent.runtime,
      entrypoint: [...m.agent.entrypoint],
      env,
      secretRefs,
      isolation: m.agent.isolation ?? null,
      code: m.agent.code,
    },
    network: {
      rules: p.network.allow,
      rateLimit: { perSecond: p.network.rate_limit, burst: Math.max(1, Math.ceil(p.network.rate_limit * BURST_SECONDS)) },
      byteQuota: p.network.byte_quota,
    },
    fs: {
      // A path granted for write is not repeated under read.
      read: uniqueSorted(p.fs.read).filter((r) => !write.includes(r)),
      write,
    },
    limits: {
      timeoutMs: p.execution_time,
      memoryBytes: p.memory,
      cpu: { quotaUs: Math.max(1000, Math.round(cores * CPU_PERIOD_US)), periodUs: CPU_PERIOD_US, cores },
      pids: p.processes,
    },
    syscalls: { deny: uniqueSorted(p.syscalls.deny) },
    tools: {
      servers: m.tools.map((t) => ({ name: t.name, transport: t.mcp, allow: uniqueSorted(t.allow), timeoutMs: t.timeout })),
    },
  };
}

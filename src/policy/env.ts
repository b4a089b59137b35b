/**
 * Environment variables of the agent: the rules shared by `agent.env` in agent.yaml and the
 * operator's `aegis run --env NAME=VALUE`. Pure.
 *
 * ARCHITECTURE NOTE: the manifest's `agent.env` is the agent author's; `--env` is the operator's,
 * for plain values chosen at run time (a region, a log level, a customer id). The operator's
 * values add to or override the author's, with the same rules as the manifest: a valid name, no
 * NUL byte, at most 64 KiB, and never one of the variables the egress gateway sets (the proxy
 * variables). On top of that `--env` refuses `secret:` values (secret references belong in the
 * manifest, where `aegis validate` lists them) and refuses to replace a variable the manifest
 * declares as a secret reference (a plain value there would be a secret typed on a command line
 * and kept in shell history). PATH, HOME, LANG may be overridden, as the manifest may.
 * The audit log records the names the operator set, never the values (run.env event).
 */
import type { Policy } from './types.js';

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Set by AEGIS itself (egress gateway); neither the manifest nor the operator may point them elsewhere. */
export const RESERVED_ENV: ReadonlySet<string> = new Set([
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'ALL_PROXY',
  'NO_PROXY',
  'FTP_PROXY',
  'AEGIS_TOOLS_URL',
]);
export const SECRET_PREFIX = 'secret:';
export const SECRET_REF = /^secret:([a-z0-9][a-z0-9._-]{0,127})$/;
export const MAX_ENV_VALUE = 65_536;

export type OperatorEnvResult =
  | { readonly ok: true; readonly policy: Policy; /** the names the operator set, sorted */ readonly names: readonly string[] }
  | { readonly ok: false; readonly message: string };

/**
 * Applies `--env NAME=VALUE` flags (untrusted strings) to the policy's plain environment.
 * Messages name the variable, never its value.
 */
export function applyOperatorEnv(policy: Policy, flags: readonly string[]): OperatorEnvResult {
  const env: Record<string, string> = { ...policy.agent.env };
  const seen = new Set<string>();
  for (const flag of flags) {
    const eq = flag.indexOf('=');
    const name = eq < 0 ? flag : flag.slice(0, eq);
    const value = eq < 0 ? '' : flag.slice(eq + 1);
    const shown = JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}...` : name);
    if (eq < 0) return { ok: false, message: `--env ${shown}: expected NAME=VALUE` };
    if (!ENV_NAME.test(name)) return { ok: false, message: `--env ${shown}: not an environment variable name` };
    if (RESERVED_ENV.has(name.toUpperCase()))
      return { ok: false, message: `--env ${name}: set by AEGIS (egress gateway) and cannot be overridden` };
    if (seen.has(name)) return { ok: false, message: `--env ${name}: given twice` };
    if (value.startsWith(SECRET_PREFIX))
      return { ok: false, message: `--env ${name}: plain values only; secret references belong in agent.yaml (agent.env)` };
    if (value.includes('\0') || value.length > MAX_ENV_VALUE)
      return { ok: false, message: `--env ${name}: the value has a NUL byte or is longer than ${MAX_ENV_VALUE} characters` };
    const secret = policy.agent.secretRefs[name];
    if (secret !== undefined)
      return {
        ok: false,
        message: `--env ${name}: agent.yaml declares it as the secret reference secret:${secret}; a plain value cannot replace it`,
      };
    seen.add(name);
    env[name] = value;
  }
  return { ok: true, policy: { ...policy, agent: { ...policy.agent, env } }, names: [...seen].sort() };
}

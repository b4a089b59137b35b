/**
 * AEGIS's configuration, read once at the edge (src/cli/, later src/server/) from the
 * environment, validated, and passed in to everything else. No other module reads
 * `process.env`: areas take the values they need as arguments.
 *
 *   AEGIS_HOME      per-user state: audit log and keys (default ~/.aegis). When set to anything
 *                   but the default it must be an existing directory: a mistyped value is an
 *                   error (`config.home_missing`), never a new, empty audit log.
 *   AEGIS_IMAGES    the host-wide image store (default /var/lib/aegis/images), made absolute.
 *   AEGIS_AUDIT_*   the audit log's settings (src/audit/index.ts documents and validates them).
 *   AEGIS_ALERT_RULES  alert rule files or folders, separated by ":" (default: the default pack,
 *                   rules/aegis-default.yml); `none` turns alerting off.
 *   AEGIS_BASELINE  `off` turns the per-agent anomaly baseline off at the end of `aegis run`
 *                   (default on; also off when AEGIS_ALERT_RULES=none). docs/alerts.md.
 *   AEGIS_BASELINE_MIN_HISTORY  past executions of an agent before the baseline may alert
 *                   (default 20; a whole number from 2 to 1000; lower it only for tests).
 *   AEGIS_UPSTREAM_DNS, AEGIS_SANDBOX_SUBNET, AEGIS_STATE_DIR, AEGIS_GATEWAY_CONFIG
 *                   the egress gateway's settings (src/gateway/config.ts validates them).
 *
 * The operator (who runs AEGIS, recorded in audit events) comes from the process's real uid
 * and the password database, never from `$USER`, which anyone can set.
 */
import { statSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { AegisError } from '../errors.js';

export type ConfigErrorCode =
  /** A setting has a value AEGIS cannot use. */
  | 'config.invalid'
  /** AEGIS_HOME names a directory that does not exist. */
  | 'config.home_missing';

export class ConfigError extends AegisError<ConfigErrorCode> {}

export type Env = Readonly<Record<string, string | undefined>>;

export interface Operator {
  readonly uid: number;
  /** User name from the password database, or `uid:<n>` when it has none. */
  readonly name: string;
}

export interface AegisConfig {
  /** $AEGIS_HOME: audit log, keys. */
  readonly home: string;
  /** $AEGIS_IMAGES: the content-addressed image store, absolute. */
  readonly imagesDir: string;
  readonly operator: Operator;
  /** The AEGIS_AUDIT_* variables, for src/audit. */
  readonly auditEnv: Readonly<Record<string, string>>;
  /** The gateway's variables, for src/gateway/config.ts. */
  readonly gatewayEnv: Readonly<Record<string, string>>;
  /** Alert rule paths; undefined: the default pack; []: alerting off. */
  readonly alertRules: readonly string[] | undefined;
  /** The per-agent anomaly baseline scored at the end of `aegis run` (docs/alerts.md). */
  readonly baseline: { readonly enabled: boolean; readonly minHistory: number };
}

/** The image store when AEGIS_IMAGES is not set. */
export const DEFAULT_IMAGES_DIR = '/var/lib/aegis/images';

const GATEWAY_VARS = ['AEGIS_UPSTREAM_DNS', 'AEGIS_SANDBOX_SUBNET', 'AEGIS_STATE_DIR', 'AEGIS_GATEWAY_CONFIG'] as const;

/** What parseConfig needs to know about the host (read by loadConfig). */
export interface HostFacts {
  readonly homedir: string;
  readonly operator: Operator;
  /** Whether `path` is an existing directory. */
  readonly isDirectory: (path: string) => boolean;
}

function set(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v;
}

/** Validates the environment into an AegisConfig (throws ConfigError). */
export function parseConfig(env: Env, host: HostFacts): AegisConfig {
  const defaultHome = join(host.homedir, '.aegis');
  const homeVar = set(env, 'AEGIS_HOME');
  let home = defaultHome;
  if (homeVar !== undefined) {
    if (!isAbsolute(homeVar)) throw new ConfigError('config.invalid', `AEGIS_HOME=${homeVar} must be an absolute path`);
    home = resolve(homeVar);
    if (home !== defaultHome && !host.isDirectory(home)) {
      throw new ConfigError(
        'config.home_missing',
        `AEGIS_HOME=${homeVar} is not an existing directory: create it (mkdir -m 700 ${homeVar}) or unset AEGIS_HOME to use ${defaultHome}`,
      );
    }
  }
  const imagesVar = set(env, 'AEGIS_IMAGES');
  const pick = (names: readonly string[]): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const n of names) {
      const v = env[n];
      if (v !== undefined) out[n] = v;
    }
    return out;
  };
  const rulesVar = set(env, 'AEGIS_ALERT_RULES');
  let alertRules: string[] | undefined;
  if (rulesVar !== undefined) {
    alertRules = rulesVar.trim() === 'none' ? [] : rulesVar.split(':').filter((p) => p !== '');
    for (const p of alertRules)
      if (!isAbsolute(p))
        throw new ConfigError('config.invalid', `AEGIS_ALERT_RULES: ${p} must be an absolute path (or the whole value "none")`);
  }
  const baselineVar = set(env, 'AEGIS_BASELINE');
  if (baselineVar !== undefined && baselineVar !== 'on' && baselineVar !== 'off')
    throw new ConfigError('config.invalid', `AEGIS_BASELINE=${baselineVar} must be on or off`);
  const minVar = set(env, 'AEGIS_BASELINE_MIN_HISTORY');
  const minHistory = minVar === undefined ? 20 : Number(minVar);
  if (!/^\d{1,4}$/.test(minVar ?? '20') || minHistory < 2 || minHistory > 1000)
    throw new ConfigError('config.invalid', `AEGIS_BASELINE_MIN_HISTORY=${minVar} must be a whole number from 2 to 1000`);
  return {
    alertRules,
    baseline: { enabled: baselineVar !== 'off' && !(alertRules !== undefined && alertRules.length === 0), minHistory },
    home,
    imagesDir: imagesVar === undefined ? DEFAULT_IMAGES_DIR : resolve(imagesVar),
    operator: host.operator,
    auditEnv: pick(Object.keys(env).filter((k) => k.startsWith('AEGIS_AUDIT_'))),
    gatewayEnv: pick(GATEWAY_VARS),
  };
}

/** This process's operator: real uid and its user name. */
export function currentOperator(): Operator {
  const uid = process.getuid?.() ?? -1;
  try {
    return { uid, name: userInfo().username };
  } catch {
    return { uid, name: `uid:${uid}` };
  }
}

/** Reads the environment (default: this process's) once and validates it. */
export function loadConfig(env: Env = process.env): AegisConfig {
  return parseConfig(env, {
    homedir: homedir(),
    operator: currentOperator(),
    isDirectory: (p) => {
      try {
        return statSync(p).isDirectory();
      } catch {
        return false;
      }
    },
  });
}

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
 *   AEGIS_ALERT_WEBHOOK  https:// URL the alerts are POSTed to, signed (http:// only to a loopback
 *                   address); needs AEGIS_ALERT_WEBHOOK_SECRET_FILE (absolute path of the HMAC
 *                   secret; never the secret itself in the environment or argv);
 *                   AEGIS_ALERT_WEBHOOK_CA_FILE: an extra CA (PEM) for its TLS.
 *   AEGIS_ALERT_SYSLOG   udp://host:port | tcp://host:port | tls://host:port, RFC 5424 syslog;
 *                   AEGIS_ALERT_SYSLOG_CA_FILE: an extra CA (PEM) for tls://.
 *   AEGIS_BASELINE  `off` turns the per-agent anomaly baseline off at the end of `aegis run`
 *                   (default on; also off when AEGIS_ALERT_RULES=none). docs/alerts.md.
 *   AEGIS_BASELINE_MIN_HISTORY  past executions of an agent before the baseline may alert
 *                   (default 20; a whole number from 2 to 1000; lower it only for tests).
 *   AEGIS_UPSTREAM_DNS, AEGIS_SANDBOX_SUBNET, AEGIS_STATE_DIR, AEGIS_GATEWAY_CONFIG
 *                   the egress gateway's settings (src/gateway/config.ts validates them).
 *   AEGIS_IMAGE_TRUSTED_KEYS  Ed25519 public key files (SPKI PEM, absolute paths, separated by
 *                   ":"): when set, every image an agent runs on must be signed by one of them
 *                   (`aegis image sign`; docs/images.md). Unset: signatures are not required.
 *   AEGIS_REGISTRY_AUTH_FILE  credentials for `aegis image pull|push` (Docker's config.json
 *                   format, mode 0600; default $AEGIS_HOME/registry-auth.json when it exists).
 *   AEGIS_REGISTRY_CA_FILE  an extra CA certificate (PEM, absolute path) that registries' TLS
 *                   certificates may chain to (the system's roots stay trusted).
 *   AEGIS_MONITOR   the runtime monitor (docs/monitoring.md): `auto` (default) monitors every run
 *                   when the host supports it (bpftrace, tracefs, BTF; `aegis doctor`) and then
 *                   refuses a run whose monitor cannot attach; `on` requires it on any host (a
 *                   host without support starts no run); `off` never monitors.
 *   AEGIS_MONITOR_IDLE  how long the host's shared monitor (one bpftrace for every run of the
 *                   host) outlives its last run when `aegis run` started it (default 60s; `0`:
 *                   it stops with the last run). `aegis serve` keeps it while it runs.
 *   AEGIS_MICROVM_ALLOW_EMULATION  `1` lets `isolation: microvm` run under QEMU's software
 *                   emulation (TCG) when KVM is not usable: for testing only (default 0: KVM only).
 *   AEGIS_MICROVM_GUEST  the microVM guest directory (absolute; default /var/lib/aegis/microvm,
 *                   built by scripts/microvm/build-guest.sh). docs/sandbox.md "microVM".
 *   AEGIS_SECRETS_ROTATION_OVERLAP  how long a rotated-out secret version stays usable by the
 *                   executions that were already running (default 15m; `0`: not at all).
 *   AEGIS_SERVER    the server the client commands (deploy, exec, ps, logs, kill, pool, keys) talk
 *                   to: http(s)://host[:port] or unix:/path (default: the local socket,
 *                   /run/aegis/aegis.sock); `--server` overrides it.
 *   AEGIS_API_KEY   the API key those commands send (Bearer). Never printed or logged.
 *
 * The operator (who runs AEGIS, recorded in audit events) comes from the process's real uid
 * and the password database, never from `$USER`, which anyone can set.
 */
import { readFileSync, statSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { parseDuration } from '../secrets/core.js';

import { ConfigError } from './errors.js';
import { resolveDockerEndpoint, type DockerEndpoint, type DockerTls } from './docker-context.js';
import type { Env } from './errors.js';

export { ConfigError, type ConfigErrorCode, type Env } from './errors.js';
export type { DockerTls } from './docker-context.js';

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
  /** $AEGIS_HOME/secrets: the secret store (docs/secrets.md). */
  readonly secretsDir: string;
  /** $AEGIS_SECRETS_ROTATION_OVERLAP in milliseconds (default DEFAULT_ROTATION_OVERLAP_MS). */
  readonly secretsRotationOverlapMs: number;
  /** Where alerts are POSTed (AEGIS_ALERT_WEBHOOK*), or undefined: no webhook. */
  readonly alertWebhook: AlertWebhookConfig | undefined;
  /** Where alerts go as syslog (AEGIS_ALERT_SYSLOG*), or undefined: no syslog. */
  readonly alertSyslog: AlertSyslogConfig | undefined;
  /** The per-agent anomaly baseline scored at the end of `aegis run` (docs/alerts.md). */
  readonly baseline: { readonly enabled: boolean; readonly minHistory: number };
  /** Public key files one of which must have signed every image run (AEGIS_IMAGE_TRUSTED_KEYS); undefined: not required. */
  readonly imageTrustedKeys: readonly string[] | undefined;
  /** Registry credentials file (AEGIS_REGISTRY_AUTH_FILE, default $AEGIS_HOME/registry-auth.json). */
  readonly registryAuthFile: string;
  /** Extra CA for registries (AEGIS_REGISTRY_CA_FILE). */
  readonly registryCaFile: string | undefined;
  /** AEGIS_SERVER / AEGIS_API_KEY: what the client commands talk to (docs: README, server quick start). */
  readonly client: ClientConfig;
  /** $AEGIS_MONITOR: the runtime monitor's host policy (default `auto`). */
  readonly monitor: MonitorMode;
  /** $AEGIS_MONITOR_IDLE in milliseconds (default DEFAULT_MONITOR_IDLE_MS). */
  readonly monitorIdleMs: number;
  /**
   * The engine of `isolation: docker` (docs/sandbox.md, Docker): $DOCKER_HOST, else the Docker
   * CLI's context (DOCKER_CONTEXT or its current context; docker-context.ts): `unix:///path` or
   * `tcp://host:port`; undefined: the engine's default socket /var/run/docker.sock.
   */
  readonly dockerHost: string | undefined;
  /**
   * TLS for a tcp:// engine (DOCKER_TLS_VERIFY/DOCKER_CERT_PATH, or the context's TLS folder):
   * the PEM files' paths; the engine's certificate is always verified (src/config/docker-context.ts).
   */
  readonly dockerTls: DockerTls | undefined;
  /** The Docker context the engine came from (DOCKER_CONTEXT or the CLI's current context), if any. */
  readonly dockerContext: string | undefined;
  /**
   * Why the Docker CLI's current context cannot be used (no DOCKER_* variable set): docker runs
   * are refused with it; every other command works.
   */
  readonly dockerRefused: string | undefined;
  /**
   * $AEGIS_DOCKER_NETWORK: how a docker sandbox reaches the egress gateway (docs/sandbox.md,
   * Docker): `host-netns`, `gateway-container`, or `auto` (default: host-netns where the engine
   * shares this host's kernel, gateway-container otherwise).
   */
  readonly dockerNetwork: 'auto' | 'host-netns' | 'gateway-container';
  /**
   * $AEGIS_DOCKER_ENGINE: what the docker backend may assume of the engine (docs/sandbox.md,
   * Docker): `local` (it shares this host's kernel, filesystem and cgroups: AEGIS's cgroup limits
   * and checked binds), `remote` (only its API: limits through the engine's HostConfig, code and
   * volumes copied through its archive API, network through a gateway container; an engine in a
   * VM, Docker Desktop, a tcp:// engine), or `auto` (default: local where the engine reports this
   * host's kernel and is not Docker Desktop, remote otherwise).
   */
  readonly dockerEngine: 'auto' | 'local' | 'remote';
  /** isolation microvm: the guest directory and whether software emulation is allowed. */
  readonly microvm: { readonly guestDir: string; readonly allowEmulation: boolean };
}

export interface ClientConfig {
  /** `http://host:port`, `https://host:port` or `unix:/path`; undefined: the default socket. */
  readonly server: string | undefined;
  /** The API key (a secret: never print it). */
  readonly apiKey: string | undefined;
}

/** The server's unix socket when neither --server nor AEGIS_SERVER names one. */
export const DEFAULT_SERVER_SOCKET = '/run/aegis/aegis.sock';

/** Checks a server address (AEGIS_SERVER or --server); returns it normalised or throws ConfigError. */
export function parseServerUrl(value: string, name = 'AEGIS_SERVER'): string {
  const v = value.trim();
  if (v.startsWith('unix:')) {
    const path = v.slice('unix:'.length);
    if (!isAbsolute(path)) throw new ConfigError('config.invalid', `${name}=${v}: a unix socket is unix:/absolute/path`);
    return `unix:${resolve(path)}`;
  }
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new ConfigError('config.invalid', `${name}=${v} is not a server address (http://host:port, https://host:port or unix:/path)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ConfigError('config.invalid', `${name}=${v} must be http://, https:// or unix:/path`);
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '')
    throw new ConfigError(
      'config.invalid',
      `${name}=${v} must not carry credentials, a query or a fragment (the key goes in AEGIS_API_KEY)`,
    );
  return url.href.replace(/\/$/, '');
}

/**
 * `auto`: required when the host supports it, else off; `on`: required (no support, no run);
 * `off`: never.
 */
export type MonitorMode = 'auto' | 'on' | 'off';

export interface AlertWebhookConfig {
  /** An https:// URL, or http:// to a loopback address. */
  readonly url: string;
  /** Absolute path of the file holding the HMAC-SHA256 secret (its mode is checked when it is read). */
  readonly secretFile: string;
  /** Absolute path of an extra CA certificate (PEM). */
  readonly caFile: string | undefined;
}

export interface AlertSyslogConfig {
  readonly protocol: 'udp' | 'tcp' | 'tls';
  /** A host name or an IP address (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** tls only: absolute path of an extra CA certificate (PEM). */
  readonly caFile: string | undefined;
}

/** A rotated-out secret version stays usable by executions already running for this long. */
export const DEFAULT_ROTATION_OVERLAP_MS = 15 * 60_000;
/** How long the host's shared monitor outlives its last run by default (docs/monitoring.md). */
export const DEFAULT_MONITOR_IDLE_MS = 60_000;

/** The image store when AEGIS_IMAGES is not set. */
export const DEFAULT_IMAGES_DIR = '/var/lib/aegis/images';
/** Where scripts/microvm/build-guest.sh puts the microVM guest (src/sandbox/drivers/microvm.ts). */
export const DEFAULT_MICROVM_GUEST_DIR = '/var/lib/aegis/microvm';

const GATEWAY_VARS = [
  'AEGIS_UPSTREAM_DNS',
  'AEGIS_SANDBOX_SUBNET',
  'AEGIS_STATE_DIR',
  'AEGIS_GATEWAY_CONFIG',
  'AEGIS_UPSTREAM_CA_FILE',
  'AEGIS_NETNS_POOL',
] as const;

/** The variables that choose the Docker engine explicitly (docker-context.ts). */
const DOCKER_VARS = ['DOCKER_HOST', 'DOCKER_CONTEXT', 'DOCKER_CONFIG', 'DOCKER_TLS_VERIFY', 'DOCKER_CERT_PATH'] as const;

/** What parseConfig needs to know about the host (read by loadConfig). */
export interface HostFacts {
  readonly homedir: string;
  readonly operator: Operator;
  /** Whether `path` is an existing directory. */
  readonly isDirectory: (path: string) => boolean;
  /** A file's text, or null when it does not exist (the Docker CLI's config and contexts); default: no files. */
  readonly readText?: (path: string) => string | null;
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
  const overlapVar = set(env, 'AEGIS_SECRETS_ROTATION_OVERLAP');
  let secretsRotationOverlapMs = DEFAULT_ROTATION_OVERLAP_MS;
  if (overlapVar !== undefined) {
    try {
      secretsRotationOverlapMs = parseDuration(overlapVar.trim(), 'AEGIS_SECRETS_ROTATION_OVERLAP', true);
    } catch (cause) {
      throw new ConfigError('config.invalid', (cause as Error).message, { cause });
    }
  }
  const baselineVar = set(env, 'AEGIS_BASELINE');
  if (baselineVar !== undefined && baselineVar !== 'on' && baselineVar !== 'off')
    throw new ConfigError('config.invalid', `AEGIS_BASELINE=${baselineVar} must be on or off`);
  const minVar = set(env, 'AEGIS_BASELINE_MIN_HISTORY');
  const minHistory = minVar === undefined ? 20 : Number(minVar);
  if (!/^\d{1,4}$/.test(minVar ?? '20') || minHistory < 2 || minHistory > 1000)
    throw new ConfigError('config.invalid', `AEGIS_BASELINE_MIN_HISTORY=${minVar} must be a whole number from 2 to 1000`);
  const keysVar = set(env, 'AEGIS_IMAGE_TRUSTED_KEYS');
  const imageTrustedKeys = keysVar === undefined ? undefined : keysVar.split(':').filter((p) => p !== '');
  if (imageTrustedKeys !== undefined) {
    if (imageTrustedKeys.length === 0) throw new ConfigError('config.invalid', 'AEGIS_IMAGE_TRUSTED_KEYS names no key file');
    for (const p of imageTrustedKeys)
      if (!isAbsolute(p)) throw new ConfigError('config.invalid', `AEGIS_IMAGE_TRUSTED_KEYS: ${p} must be an absolute path`);
  }
  const monitorVar = set(env, 'AEGIS_MONITOR')?.trim();
  if (monitorVar !== undefined && monitorVar !== 'auto' && monitorVar !== 'on' && monitorVar !== 'off')
    throw new ConfigError('config.invalid', `AEGIS_MONITOR=${monitorVar} must be auto, on or off`);
  const idleVar = set(env, 'AEGIS_MONITOR_IDLE');
  let monitorIdleMs = DEFAULT_MONITOR_IDLE_MS;
  if (idleVar !== undefined) {
    try {
      monitorIdleMs = parseDuration(idleVar.trim(), 'AEGIS_MONITOR_IDLE', true);
    } catch (cause) {
      throw new ConfigError('config.invalid', (cause as Error).message, { cause });
    }
    if (monitorIdleMs > 24 * 3_600_000) throw new ConfigError('config.invalid', `AEGIS_MONITOR_IDLE=${idleVar} must be at most 24h`);
  }
  const emulationVar = set(env, 'AEGIS_MICROVM_ALLOW_EMULATION');
  if (emulationVar !== undefined && emulationVar !== '0' && emulationVar !== '1')
    throw new ConfigError('config.invalid', `AEGIS_MICROVM_ALLOW_EMULATION=${emulationVar} must be 0 or 1`);
  let docker: DockerEndpoint = { host: undefined, tls: undefined, context: undefined };
  let dockerRefused: string | undefined;
  try {
    docker = resolveDockerEndpoint(env, { homedir: host.homedir, readText: host.readText ?? (() => null) });
  } catch (err) {
    // A Docker variable set for this command is this command's error; the Docker CLI's current
    // context is ambient state: a bad one refuses docker runs only (fail secure), not every command.
    if (!(err instanceof ConfigError) || DOCKER_VARS.some((v) => set(env, v) !== undefined)) throw err;
    dockerRefused = err.message;
  }
  const dockerNetwork = set(env, 'AEGIS_DOCKER_NETWORK')?.trim() ?? 'auto';
  if (dockerNetwork !== 'auto' && dockerNetwork !== 'host-netns' && dockerNetwork !== 'gateway-container')
    throw new ConfigError('config.invalid', `AEGIS_DOCKER_NETWORK=${dockerNetwork} must be auto, host-netns or gateway-container`);
  const dockerEngine = set(env, 'AEGIS_DOCKER_ENGINE')?.trim() ?? 'auto';
  if (dockerEngine !== 'auto' && dockerEngine !== 'local' && dockerEngine !== 'remote')
    throw new ConfigError('config.invalid', `AEGIS_DOCKER_ENGINE=${dockerEngine} must be auto, local or remote`);
  if (dockerEngine === 'remote' && dockerNetwork === 'host-netns')
    throw new ConfigError(
      'config.invalid',
      'AEGIS_DOCKER_ENGINE=remote needs AEGIS_DOCKER_NETWORK=gateway-container or auto (an engine reached only over its API cannot join a namespace of this host)',
    );
  return {
    dockerNetwork,
    dockerEngine,
    microvm: { guestDir: absolutePath(env, 'AEGIS_MICROVM_GUEST') ?? DEFAULT_MICROVM_GUEST_DIR, allowEmulation: emulationVar === '1' },
    dockerHost: docker.host,
    dockerTls: docker.tls,
    dockerContext: docker.context,
    dockerRefused,
    monitor: monitorVar ?? 'auto',
    monitorIdleMs,
    imageTrustedKeys,
    registryAuthFile: absolutePath(env, 'AEGIS_REGISTRY_AUTH_FILE') ?? join(home, 'registry-auth.json'),
    registryCaFile: absolutePath(env, 'AEGIS_REGISTRY_CA_FILE'),
    alertRules,
    alertWebhook: parseAlertWebhook(env),
    alertSyslog: parseAlertSyslog(env),
    baseline: { enabled: baselineVar !== 'off' && !(alertRules !== undefined && alertRules.length === 0), minHistory },
    home,
    secretsDir: join(home, 'secrets'),
    secretsRotationOverlapMs,
    imagesDir: imagesVar === undefined ? DEFAULT_IMAGES_DIR : resolve(imagesVar),
    operator: host.operator,
    auditEnv: pick(Object.keys(env).filter((k) => k.startsWith('AEGIS_AUDIT_'))),
    gatewayEnv: pick(GATEWAY_VARS),
    client: parseClient(env),
  };
}

function parseClient(env: Env): ClientConfig {
  const server = set(env, 'AEGIS_SERVER');
  const apiKey = set(env, 'AEGIS_API_KEY')?.trim();
  if (apiKey !== undefined && !/^[\x21-\x7e]+$/.test(apiKey))
    throw new ConfigError('config.invalid', 'AEGIS_API_KEY has characters an API key never has (spaces or control characters)');
  return { server: server === undefined ? undefined : parseServerUrl(server), apiKey };
}

function absolutePath(env: Env, name: string): string | undefined {
  const v = set(env, name);
  if (v !== undefined && !isAbsolute(v)) throw new ConfigError('config.invalid', `${name}=${v} must be an absolute path`);
  return v;
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);

function parseAlertWebhook(env: Env): AlertWebhookConfig | undefined {
  const v = set(env, 'AEGIS_ALERT_WEBHOOK');
  const secretFile = absolutePath(env, 'AEGIS_ALERT_WEBHOOK_SECRET_FILE');
  const caFile = absolutePath(env, 'AEGIS_ALERT_WEBHOOK_CA_FILE');
  if (v === undefined) {
    if (secretFile !== undefined || caFile !== undefined)
      throw new ConfigError('config.invalid', 'AEGIS_ALERT_WEBHOOK_SECRET_FILE / _CA_FILE are set but AEGIS_ALERT_WEBHOOK is not');
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new ConfigError('config.invalid', `AEGIS_ALERT_WEBHOOK=${v} is not a URL`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url.hostname)))
    throw new ConfigError('config.invalid', `AEGIS_ALERT_WEBHOOK=${v} must be an https:// URL (http:// only to a loopback address)`);
  if (url.username !== '' || url.password !== '')
    throw new ConfigError('config.invalid', 'AEGIS_ALERT_WEBHOOK must not carry credentials: the body is signed with the secret file');
  if (url.hash !== '') throw new ConfigError('config.invalid', `AEGIS_ALERT_WEBHOOK=${v} must not have a #fragment`);
  if (secretFile === undefined)
    throw new ConfigError('config.invalid', 'AEGIS_ALERT_WEBHOOK needs AEGIS_ALERT_WEBHOOK_SECRET_FILE (the HMAC-SHA256 secret, mode 600)');
  if (caFile !== undefined && url.protocol !== 'https:')
    throw new ConfigError('config.invalid', 'AEGIS_ALERT_WEBHOOK_CA_FILE is only for an https:// webhook');
  return { url: url.href, secretFile, caFile };
}

function parseAlertSyslog(env: Env): AlertSyslogConfig | undefined {
  const v = set(env, 'AEGIS_ALERT_SYSLOG');
  const caFile = absolutePath(env, 'AEGIS_ALERT_SYSLOG_CA_FILE');
  if (v === undefined) {
    if (caFile !== undefined) throw new ConfigError('config.invalid', 'AEGIS_ALERT_SYSLOG_CA_FILE is set but AEGIS_ALERT_SYSLOG is not');
    return undefined;
  }
  const bad = (why: string): ConfigError =>
    new ConfigError('config.invalid', `AEGIS_ALERT_SYSLOG=${v}: ${why} (expected udp://host:port, tcp://host:port or tls://host:port)`);
  const m = /^(udp|tcp|tls):\/\/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(v.trim());
  if (m === null) throw bad('not a syslog address');
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw bad('port out of range');
  const protocol = m[1] as 'udp' | 'tcp' | 'tls';
  if (caFile !== undefined && protocol !== 'tls') throw bad('AEGIS_ALERT_SYSLOG_CA_FILE is only for tls://');
  const host = m[2]!.startsWith('[') ? m[2]!.slice(1, -1) : m[2]!;
  return { protocol, host, port, caFile };
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
    readText: readTextFile,
  });
}

/** A file's text, or null when it does not exist (other errors, e.g. EACCES, throw ConfigError). */
export function readTextFile(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw new ConfigError('config.invalid', `cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * Which Docker engine `isolation: docker` talks to, chosen as the Docker CLI chooses it
 * (docs/sandbox.md, Docker; https://docs.docker.com/engine/manage-resources/contexts/):
 *
 * 1. `DOCKER_HOST`, when set (it wins over any context, as for the CLI);
 * 2. else the context named by `DOCKER_CONTEXT`, else the CLI's current context
 *    (`currentContext` of `$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`);
 *    context `default` (or none) is the engine's default socket;
 * 3. a context's endpoint is `Endpoints.docker.Host` of
 *    `$DOCKER_CONFIG/contexts/meta/<sha256 of its name>/meta.json`, its TLS material
 *    `$DOCKER_CONFIG/contexts/tls/<sha256 of its name>/docker/{ca,cert,key}.pem`.
 *
 * TLS (`tcp://` only): with `DOCKER_HOST`, when `DOCKER_TLS_VERIFY` or `DOCKER_CERT_PATH` is
 * set (files `ca.pem`, `cert.pem`, `key.pem` in `DOCKER_CERT_PATH`, default `$DOCKER_CONFIG`);
 * with a context, when its TLS folder holds them. The engine's certificate is always verified
 * against that CA and its host name: a context with `SkipTLSVerify` is refused, and so is a
 * partial set of files. `ssh://` (and Windows named pipes) are refused with the way around.
 *
 * Reads only the files named above, through `readText` (tests pass real files in a temp dir).
 */
import { createHash } from 'node:crypto';
import { isAbsolute, join } from 'node:path';
import { ConfigError, type Env } from './errors.js';

export interface DockerTls {
  /** Paths of the PEM files. */
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface DockerEndpoint {
  /** `unix:///path` or `tcp://host:port`; undefined: the default socket /var/run/docker.sock. */
  readonly host: string | undefined;
  /** Present for TLS (tcp:// only). */
  readonly tls: DockerTls | undefined;
  /** The context it came from (undefined: DOCKER_HOST or the default). */
  readonly context: string | undefined;
}

export interface DockerContextHost {
  readonly homedir: string;
  /** The text of a file, or null when it does not exist. Other read errors throw. */
  readonly readText: (path: string) => string | null;
}

const HOST_RE = /^unix:\/\/\/[^\0]+$|^tcp:\/\/[A-Za-z0-9.:[\]-]+:[0-9]{1,5}\/?$/;
const TLS_FILES = ['ca.pem', 'cert.pem', 'key.pem'] as const;

function set(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function checkHost(host: string, from: string): string {
  if (host.startsWith('ssh://'))
    throw new ConfigError(
      'config.invalid',
      `${from}=${host}: ssh:// engines are not supported; forward the engine's socket (ssh -L /tmp/docker.sock:/var/run/docker.sock host) and use unix:///tmp/docker.sock, or use tcp:// with TLS`,
    );
  if (!HOST_RE.test(host)) throw new ConfigError('config.invalid', `${from}=${host} must be unix:///<socket path> or tcp://<host>:<port>`);
  return host;
}

/** A tcp:// engine without TLS is accepted on loopback only (anyone on the path would be root on the engine). */
function plaintextCheck(host: string, from: string): void {
  if (!host.startsWith('tcp://')) return;
  let name: string;
  try {
    name = new URL(host).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    throw new ConfigError('config.invalid', `${from}=${host} is not a valid tcp://<host>:<port> address`);
  }
  if (name === 'localhost' || name === '::1' || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(name)) return;
  throw new ConfigError(
    'config.invalid',
    `${from}=${host} without TLS: an engine reached over the network must be verified (set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or use a Docker context with TLS); plain tcp:// is accepted on loopback only`,
  );
}

/** The three TLS files in `dir`; all present, or none (null); a partial set is refused. */
function tlsFiles(dir: string, h: DockerContextHost, from: string): DockerTls | null {
  const present = TLS_FILES.filter((f) => h.readText(join(dir, f)) !== null);
  if (present.length === 0) return null;
  if (present.length !== TLS_FILES.length)
    throw new ConfigError('config.invalid', `${from}: ${dir} must hold ca.pem, cert.pem and key.pem (it has ${present.join(', ')})`);
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ConfigError('config.invalid', `${path} is not JSON: ${(err as Error).message}`);
  }
}

/** The Docker engine endpoint from the environment and the Docker CLI's files (throws ConfigError). */
export function resolveDockerEndpoint(env: Env, h: DockerContextHost): DockerEndpoint {
  const configVar = set(env, 'DOCKER_CONFIG');
  if (configVar !== undefined && !isAbsolute(configVar))
    throw new ConfigError('config.invalid', `DOCKER_CONFIG=${configVar} must be an absolute path`);
  const configDir = configVar ?? join(h.homedir, '.docker');
  const hostVar = set(env, 'DOCKER_HOST');
  if (hostVar !== undefined) {
    const host = checkHost(hostVar, 'DOCKER_HOST');
    const certVar = set(env, 'DOCKER_CERT_PATH');
    if (certVar !== undefined && !isAbsolute(certVar))
      throw new ConfigError('config.invalid', `DOCKER_CERT_PATH=${certVar} must be an absolute path`);
    const wantTls = set(env, 'DOCKER_TLS_VERIFY') !== undefined || certVar !== undefined;
    if (!wantTls) {
      plaintextCheck(host, 'DOCKER_HOST');
      return { host, tls: undefined, context: undefined };
    }
    if (!host.startsWith('tcp://'))
      throw new ConfigError('config.invalid', `DOCKER_TLS_VERIFY/DOCKER_CERT_PATH need a tcp:// DOCKER_HOST (it is ${host})`);
    const dir = certVar ?? configDir;
    const tls = tlsFiles(dir, h, 'DOCKER_CERT_PATH');
    if (tls === null) throw new ConfigError('config.invalid', `DOCKER_TLS_VERIFY: no ca.pem, cert.pem and key.pem in ${dir}`);
    return { host, tls, context: undefined };
  }
  let name = set(env, 'DOCKER_CONTEXT');
  if (name === undefined) {
    const path = join(configDir, 'config.json');
    const text = h.readText(path);
    const current = text === null ? undefined : (parseJson(text, path) as { currentContext?: unknown }).currentContext;
    if (current !== undefined && typeof current !== 'string')
      throw new ConfigError('config.invalid', `${path}: currentContext must be a string`);
    name = current === undefined || current.trim() === '' ? undefined : current;
  }
  if (name === undefined || name === 'default') return { host: undefined, tls: undefined, context: undefined };
  const digest = createHash('sha256').update(name).digest('hex');
  const metaPath = join(configDir, 'contexts', 'meta', digest, 'meta.json');
  const metaText = h.readText(metaPath);
  if (metaText === null) throw new ConfigError('config.invalid', `Docker context "${name}" does not exist (no ${metaPath})`);
  const meta = parseJson(metaText, metaPath) as { Endpoints?: { docker?: { Host?: unknown; SkipTLSVerify?: unknown } } };
  const endpoint = meta.Endpoints?.docker;
  if (typeof endpoint?.Host !== 'string')
    throw new ConfigError('config.invalid', `Docker context "${name}": ${metaPath} has no Endpoints.docker.Host`);
  const host = checkHost(endpoint.Host, `Docker context "${name}"`);
  if (endpoint.SkipTLSVerify === true)
    throw new ConfigError(
      'config.invalid',
      `Docker context "${name}" skips TLS verification: AEGIS never talks to an engine it cannot verify`,
    );
  const tls = tlsFiles(join(configDir, 'contexts', 'tls', digest, 'docker'), h, `Docker context "${name}"`);
  if (tls !== null && !host.startsWith('tcp://'))
    throw new ConfigError('config.invalid', `Docker context "${name}": TLS material for a ${host} endpoint (tcp:// only)`);
  if (tls === null) plaintextCheck(host, `Docker context "${name}"`);
  return { host, tls: tls ?? undefined, context: name };
}

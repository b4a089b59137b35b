/**
 * Which Docker engine the docker backend talks to. Kept apart from engine.ts so that choosing it
 * and the cheap availability check do not load the engine client (dockerode) into every run.
 */
import { existsSync } from 'node:fs';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/** TLS material of a tcp:// engine: paths of the PEM files (AegisConfig.dockerTls). */
export interface EngineTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

let configuredHost: string | undefined;
let configuredTls: EngineTls | undefined;
/** Why the Docker CLI's current context cannot be used (AegisConfig.dockerRefused). */
let configuredRefusal: string | undefined;
const listeners: (() => void)[] = [];

/**
 * The engine to use (AegisConfig.dockerHost and dockerTls, set once by the CLI); undefined: the
 * default socket.
 */
export function useDockerHost(host: string | undefined, tls?: EngineTls, refused?: string): void {
  configuredHost = host;
  configuredTls = tls;
  configuredRefusal = refused;
  for (const l of listeners) l();
}

export function dockerHost(): string | undefined {
  return configuredHost;
}

export function dockerTls(): EngineTls | undefined {
  return configuredTls;
}

/**
 * How a docker sandbox reaches the egress gateway (AegisConfig.dockerNetwork, docs/sandbox.md):
 * `host-netns`: a holder container joins the gateway's namespace on this host (the engine must
 * share this host's kernel); `gateway-container`: a per-run gateway container owns the agent's
 * namespace and relays every flow over the engine's API to this host's gateway (gateway.ts);
 * `auto`: host-netns where the engine runs on this host's kernel, gateway-container otherwise.
 */
export type DockerNetworkMode = 'auto' | 'host-netns' | 'gateway-container';
let networkMode: DockerNetworkMode = 'auto';

export function useDockerNetwork(mode: DockerNetworkMode): void {
  networkMode = mode;
}

export function dockerNetwork(): DockerNetworkMode {
  return networkMode;
}

/**
 * What the docker backend may assume of the engine (AegisConfig.dockerEngine, docs/sandbox.md):
 * `local` shares this host's kernel, filesystem and cgroups; `remote` is reached only over its
 * API (remote.ts); `auto` decides per engine from what it reports (drivers/docker.ts).
 */
export type DockerEngineMode = 'auto' | 'local' | 'remote';
let engineMode: DockerEngineMode = 'auto';

export function useDockerEngine(mode: DockerEngineMode): void {
  engineMode = mode;
}

export function dockerEngine(): DockerEngineMode {
  return engineMode;
}

/**
 * Whether an engine that reports `info` (GET /info), reached at `endpoint`, is taken for one on
 * this host (kernel `hostKernel`): a unix socket (a tcp:// engine is over the network, even when
 * its kernel release happens to be the same), the same kernel release, and not Docker Desktop
 * (whose VM may run any kernel). LIMITATION: an engine on this kernel that sees another
 * filesystem (rootless Docker, an engine in a container) passes: AEGIS_DOCKER_ENGINE=remote.
 */
export function engineOnThisKernel(
  info: { KernelVersion?: string; OperatingSystem?: string },
  hostKernel: string,
  endpoint: string | undefined = undefined,
): boolean {
  if (endpoint !== undefined && !endpoint.startsWith('unix://')) return false;
  return info.KernelVersion === hostKernel && !/Docker Desktop/i.test(info.OperatingSystem ?? '');
}

let ownerHostFile: string | undefined;
/**
 * Where this AEGIS host's owner id is kept (`<AEGIS_HOME>/docker-owner-host`, set once by the CLI):
 * the label that tells its engine objects from other hosts' on a shared engine (engine.ts).
 */
export function useDockerOwnerHostFile(path: string | undefined): void {
  ownerHostFile = path;
}

export function dockerOwnerHostFile(): string | undefined {
  return ownerHostFile;
}

/** Called when the engine changes (engine.ts drops its cached clients). */
export function onDockerHostChange(l: () => void): void {
  listeners.push(l);
}

/** Why the engine cannot be used (cheap, synchronous: the socket file), or null. */
export function engineUnavailableReason(
  host: string | undefined = configuredHost,
  refused: string | undefined = configuredRefusal,
): string | null {
  if (refused !== undefined) return `the Docker CLI's current context cannot be used: ${refused}`;
  if (host !== undefined && !host.startsWith('unix://')) return null;
  const sock = host === undefined ? DEFAULT_DOCKER_SOCKET : host.slice('unix://'.length);
  return existsSync(sock)
    ? null
    : `no Docker engine socket at ${sock} (install docker.io and start dockerd, or set DOCKER_HOST; see aegis doctor)`;
}

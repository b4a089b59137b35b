/**
 * The Docker backend's `gateway-container` network mode (I/O): per run, a gateway container
 * that owns the agent's network namespace and relays every flow of the agent over the engine's
 * API to a dialer in the run's sandbox network namespace on this host, where the one AEGIS
 * gateway (src/gateway) decides, intercepts and audits as for crun. relay.ts has the two ends.
 *
 * ARCHITECTURE NOTE (why a relay and not a second gateway): the gateway container carries bytes
 * only. The decisions, DNS answers, secrets, tools broker, rate limits and the `net.*` audit
 * events stay in the host's gateway, and a blocked attempt is dropped and counted by the sandbox
 * namespace's nftables exactly as under crun (`net.blocked`). The only link it needs is the
 * attached stdin/stdout of the gateway container, which exists wherever the engine's API does
 * (also when the engine runs in a VM): no engine network is made, no host path is mounted into
 * it, and it is not in the run's cgroup.
 *
 * ARCHITECTURE NOTE (why no engine network): the gateway container has `NetworkMode: none`, and
 * makes its namespace itself (relay.ts: a veth pair whose far end leads nowhere, a default route,
 * nftables by the agent's uid). A per-run `--internal` network would add a bridge in the
 * engine's host that other containers can be attached to, and the engine's embedded DNS server
 * on 127.0.0.11, which resolves through the engine host's upstream (a DNS channel around the
 * gateway that the rules would have to close); neither is needed.
 *
 * The image is built by AEGIS from this host's Node.js, ip and nft binaries and their shared
 * libraries, plus relay.js, relay-main.js and host/exec.js (imported as a store-style image,
 * `aegis-image:<digest>`, once per content).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { findExecutable, runCommand } from '../../host/exec.js';
import { SandboxError } from '../errors.js';
import { engineLabels } from './options.js';
import { encodeFrame, FRAME, FrameReader } from './relay.js';

const RELAY_FILES = {
  'aegis/src/sandbox/docker/relay.js': fileURLToPath(new URL('./relay.js', import.meta.url)),
  'aegis/src/sandbox/docker/relay-main.js': fileURLToPath(new URL('./relay-main.js', import.meta.url)),
  'aegis/src/host/exec.js': fileURLToPath(new URL('../../host/exec.js', import.meta.url)),
};
const RELAY_MAIN = '/aegis/src/sandbox/docker/relay-main.js';
const READY_TIMEOUT_MS = 20_000;
/** The dialer's whole environment. */
export const DIALER_ENV: Readonly<Record<string, string>> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
/** The gateway container's CPU (engine NanoCpus): half a CPU, its own, not the agent's. */
export const GATEWAY_NANO_CPUS = 500_000_000;

/** The shared libraries of `bins` (ldd), absolute paths. */
async function sharedLibraries(bins: readonly string[]): Promise<string[]> {
  const ldd = findExecutable('ldd');
  if (ldd === null)
    throw new SandboxError('sandbox.runtime_unavailable', 'ldd is not installed (needed to build the Docker gateway image)');
  const r = await runCommand([ldd, ...bins], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new SandboxError('sandbox.runtime_unavailable', `ldd ${bins.join(' ')} failed: ${r.stderr}`);
  const libs = new Set<string>();
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs].sort();
}

/**
 * The gateway image's root filesystem under `<stateDir>/docker/gateway/sha256/<key>/rootfs`,
 * built when missing; `key` covers every file's path, size and mtime and the relay's own code.
 */
export async function gatewayRootfs(stateDir: string): Promise<string> {
  const node = process.execPath;
  const ip = findExecutable('ip');
  const nft = findExecutable('nft');
  if (ip === null || nft === null)
    throw new SandboxError('sandbox.runtime_unavailable', 'ip and nft are needed for the Docker gateway image');
  const bins = [node, ip, nft];
  const files: [string, string][] = [
    ['usr/bin/node', node],
    ['usr/sbin/ip', ip],
    ['usr/sbin/nft', nft],
    ...(await sharedLibraries(bins)).map((l): [string, string] => [l.slice(1), l]),
    ...Object.entries(RELAY_FILES),
  ];
  const h = createHash('sha256');
  for (const [target, src] of files) {
    // AEGIS's own files by content (a rebuild that does not change them keeps the image).
    if (target.startsWith('aegis/')) h.update(`${target}\0`).update(readFileSync(src));
    else {
      const st = statSync(src);
      h.update(`${target}\0${st.size}\0${st.mtimeMs}\0`);
    }
  }
  const key = h.digest('hex');
  const root = join(stateDir, 'docker', 'gateway', 'sha256', key, 'rootfs');
  if (existsSync(root)) return root;
  const tmp = join(stateDir, 'docker', 'gateway', `.build-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  for (const d of ['proc', 'dev', 'sys', 'tmp', 'etc']) mkdirSync(join(tmp, d), { recursive: true });
  for (const [target, src] of files) {
    mkdirSync(dirname(join(tmp, target)), { recursive: true });
    copyFileSync(src, join(tmp, target));
  }
  writeFileSync(join(tmp, 'aegis', 'package.json'), '{"type":"module"}\n');
  mkdirSync(dirname(root), { recursive: true, mode: 0o700 });
  renameSync(tmp, root);
  return root;
}

/**
 * The engine's image id of the gateway image, imported if needed; the earlier gateway images
 * (another Node.js, ip or nft, another relay) are removed from the engine and the state folder,
 * unless a container still uses them.
 */
export async function gatewayImage(docker: Docker, stateDir: string): Promise<string> {
  const { engineImage, IMAGE_REPO } = await import('./engine.js');
  const rootfs = await gatewayRootfs(stateDir);
  const id = await engineImage(docker, rootfs, stateDir);
  const keys = join(stateDir, 'docker', 'gateway', 'sha256');
  const current = basename(dirname(rootfs));
  for (const old of readdirSync(keys)) {
    if (old === current || !/^[0-9a-f]{64}$/.test(old)) continue;
    const inUse = await docker
      .getImage(`${IMAGE_REPO}:${old}`)
      .remove()
      .then(
        () => false,
        (err: unknown) => (err as { statusCode?: number }).statusCode === 409,
      );
    if (inUse) continue;
    rmSync(join(keys, old), { recursive: true, force: true });
    // Its import records, one per engine (engine.ts engineImage).
    const records = join(stateDir, 'docker', 'docker-images');
    // (A file of the older layout, one record per image for every engine, goes as well.)
    for (const e of existsSync(records) ? readdirSync(records, { withFileTypes: true }) : [])
      if (e.isDirectory()) rmSync(join(records, e.name, old), { force: true });
      else if (e.name === old) rmSync(join(records, e.name), { force: true });
  }
  return id;
}

/** The sandbox namespace's eth0 address (`a.b.c.d/len`), default gateway and AEGIS table, read inside it. */
async function sandboxAddresses(netnsPath: string): Promise<{ address: string; gateway: string; inner: string; address6?: string }> {
  const nsenter = findExecutable('nsenter');
  const ip = findExecutable('ip');
  if (nsenter === null || ip === null)
    throw new SandboxError('sandbox.runtime_unavailable', 'nsenter and ip are needed for the Docker gateway');
  const r = await runCommand([nsenter, `--net=${netnsPath}`, '--', ip, '-4', '-o', 'addr', 'show', 'dev', 'eth0'], { timeoutMs: 10_000 });
  const g = await runCommand([nsenter, `--net=${netnsPath}`, '--', ip, '-4', 'route', 'show', 'default'], { timeoutMs: 10_000 });
  const nft = findExecutable('nft');
  const t =
    nft === null
      ? null
      : await runCommand([nsenter, `--net=${netnsPath}`, '--', nft, 'list', 'table', 'inet', 'aegis'], { timeoutMs: 10_000 });
  const r6 = await runCommand([nsenter, `--net=${netnsPath}`, '--', ip, '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'global'], {
    timeoutMs: 10_000,
  });
  const address6 = /\binet6 ([0-9a-f:]+\/[0-9]+)/.exec(r6.stdout)?.[1];
  const address = /\binet ([0-9.]+\/[0-9]+)/.exec(r.stdout)?.[1];
  const gateway = /^default via ([0-9.]+)/m.exec(g.stdout)?.[1];
  if (address === undefined || gateway === undefined || t === null || t.code !== 0 || !t.stdout.includes('table inet aegis'))
    throw new SandboxError('sandbox.start_failed', `the sandbox namespace ${netnsPath} has no eth0 address, default route or AEGIS table`);
  return { address, gateway, inner: t.stdout, ...(address6 !== undefined ? { address6 } : {}) };
}

export interface GatewayContainer {
  readonly containerId: string;
  /** The dialer on this host (ended with the container's attach stream). */
  readonly dialer: ChildProcess;
  /** Replays what the relay refused and has not replayed yet; resolves once done (at most 3 s). */
  flush(): Promise<void>;
}

/**
 * Creates and starts the run's gateway container, joins it to a dialer in `netnsPath`, and
 * resolves once the relay is listening (the agent's container may then join its namespace).
 */
export async function startGatewayContainer(
  docker: Docker,
  g: {
    id: string;
    image: string;
    netnsPath: string;
    agentUid: number;
    agentGid: number;
    owner: { pid: number; startTime: string; host?: string };
    /** The engine's DNS options for the namespace's resolv.conf (a remote engine: options.ts dnsOptions). */
    dns?: { Dns: string[]; DnsSearch: string[]; DnsOptions: string[] };
  },
): Promise<GatewayContainer> {
  const addrs = await sandboxAddresses(g.netnsPath);
  const nsenter = findExecutable('nsenter')!;
  const created = await docker.createContainer(gatewayOptions({ ...g, ...addrs })).catch((err: unknown) => {
    throw new SandboxError('sandbox.start_failed', `Docker engine: gateway container: ${(err as Error).message}`, { cause: err });
  });
  const c = docker.getContainer(created.id);
  const stream = (await c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as unknown as Writable &
    Readable;
  const out = new PassThrough();
  const err = new PassThrough();
  let errText = '';
  err.on('data', (b: Buffer) => void (errText = (errText + b.toString()).slice(-2000)));
  demuxAttach(stream, out, err);
  stream.on('error', () => undefined);
  const dialer = spawn(
    nsenter,
    [
      `--net=${g.netnsPath}`,
      '--',
      process.execPath,
      fileURLToPath(new URL('./relay-main.js', import.meta.url)),
      'dial',
      String(g.agentUid),
      String(g.agentGid),
    ],
    // Nothing of the operator's environment (secrets, settings) reaches the dialer.
    { stdio: ['pipe', 'pipe', 'inherit'], env: DIALER_ENV },
  );
  dialer.on('error', () => undefined);
  // Watch for the relay's ready frame on the way to the dialer (which ignores it).
  const ready = new Promise<void>((resolve, reject) => {
    const reader = new FrameReader();
    const timer = setTimeout(() => reject(new Error('the relay did not become ready')), READY_TIMEOUT_MS);
    const onData = (b: Buffer): void => {
      try {
        if (reader.push(b).some((f) => f.type === FRAME.ready)) {
          clearTimeout(timer);
          out.off('data', onData);
          resolve();
        }
      } catch (e) {
        clearTimeout(timer);
        reject(e as Error);
      }
    };
    out.on('data', onData);
    stream.once('end', () => reject(new Error('the gateway container ended')));
    dialer.once('exit', () => reject(new Error('the dialer ended')));
  });
  out.pipe(dialer.stdin!);
  dialer.stdin!.on('error', () => undefined);
  // The dialer's frames go to the relay whole, so that AEGIS's own flush frame lands between two
  // of them, never inside one. The dialer's flush answers are taken here (not forwarded: the
  // relay would take one for a new request). Not frames: the run's network ends (fail secure).
  const flushed: (() => void)[] = [];
  const fromDialer = new FrameReader();
  const toRelay = (frame: Buffer): void => {
    if (!stream.write(frame) && !dialer.stdout!.isPaused()) {
      dialer.stdout!.pause();
      stream.once('drain', () => dialer.stdout!.resume());
    }
  };
  dialer.stdout!.on('data', (b: Buffer) => {
    let frames;
    try {
      frames = fromDialer.push(b);
    } catch {
      dialer.stdout!.destroy();
      dialer.kill('SIGKILL');
      stream.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type === FRAME.flush) flushed.shift()?.();
      else toRelay(encodeFrame(f.type, f.id, f.payload));
    }
  });
  stream.once('end', () => dialer.stdin!.end());
  stream.once('close', () => dialer.stdin!.end());
  try {
    await c.start();
    await ready;
  } catch (e) {
    dialer.kill('SIGKILL');
    stream.destroy();
    throw new SandboxError(
      'sandbox.start_failed',
      `Docker gateway container: ${(e as Error).message}${errText ? `: ${errText.trim()}` : ''}`,
      {
        cause: e,
      },
    );
  }
  const flush = async (): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        flushed.push(resolve);
        toRelay(encodeFrame(FRAME.flush, 0));
      }),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, 3000))),
    ]);
    clearTimeout(timer);
  };
  return { containerId: created.id, dialer, flush };
}

/** The largest frame of the engine's attach stream accepted (the engine sends at most 32 KiB). */
const MAX_ATTACH_FRAME = 1 << 20;

/**
 * Splits the engine's multiplexed attach stream (`Tty: false`: frames of an 8-byte header,
 * stream type, 3 zero bytes, length u32 BE, then the bytes) into `out` (stdout) and `err`
 * (stderr). SECURITY (memory bound): `source` is paused while `out` is full and resumed when it
 * drains (dockerode's demuxStream ignores write()'s result: what the dialer does not take would
 * be queued here without bound). A malformed header ends `source` (fail secure: the run's
 * network ends).
 */
export function demuxAttach(source: Readable, out: Writable, err: Writable): void {
  let buf: Buffer = Buffer.alloc(0);
  source.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let full = false;
    while (buf.length >= 8) {
      const type = buf.readUInt8(0);
      const len = buf.readUInt32BE(4);
      if (type > 2 || buf.readUIntBE(1, 3) !== 0 || len > MAX_ATTACH_FRAME) {
        buf = Buffer.alloc(0);
        source.destroy(new Error('the engine sent a malformed attach frame'));
        return;
      }
      if (buf.length < 8 + len) break;
      const payload = buf.subarray(8, 8 + len);
      buf = buf.subarray(8 + len);
      if (type === 2) err.write(payload);
      else if (!out.write(payload)) full = true;
    }
    if (full && !source.isPaused()) {
      source.pause();
      out.once('drain', () => source.resume());
    }
  });
}

/** The gateway container's create options (pure). */
export function gatewayOptions(f: {
  id: string;
  image: string;
  agentUid: number;
  address: string;
  gateway: string;
  inner: string;
  address6?: string;
  owner: { pid: number; startTime: string; host?: string };
  dns?: { Dns: string[]; DnsSearch: string[]; DnsOptions: string[] };
}): Docker.ContainerCreateOptions {
  return {
    name: `${f.id}-gw`,
    Image: f.image,
    Entrypoint: [
      '/usr/bin/node',
      RELAY_MAIN,
      'relay',
      String(f.agentUid),
      f.address,
      f.gateway,
      Buffer.from(f.inner).toString('base64'),
      f.address6 ?? '',
    ],
    Cmd: [],
    User: '0:0',
    Hostname: 'aegis',
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: true,
    StdinOnce: true,
    Tty: false,
    Labels: engineLabels(f.id, 'net-gateway', f.owner),
    HostConfig: {
      Privileged: false,
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      // Its own namespace's links, routes and nftables only (the namespace is the container's).
      CapAdd: ['NET_ADMIN'],
      SecurityOpt: ['no-new-privileges:true'],
      NetworkMode: 'none',
      // As in the sandbox namespace (plan.ts): no ICMP sockets for the agent (a new namespace's
      // default, which the engine widens), IPv6 only on the address the relay gives eth0.
      Sysctls: {
        'net.ipv4.ping_group_range': '1 0',
        'net.ipv6.conf.all.disable_ipv6': '0',
        'net.ipv6.conf.default.addr_gen_mode': '1',
        'net.ipv6.conf.default.accept_ra': '0',
        'net.ipv6.conf.default.autoconf': '0',
        'net.ipv6.conf.default.accept_dad': '0',
        'net.ipv6.conf.default.router_solicitations': '0',
      },
      ...(f.dns ?? {}),
      NanoCpus: GATEWAY_NANO_CPUS,
      Memory: 256 * 1024 * 1024,
      MemorySwap: 256 * 1024 * 1024,
      PidsLimit: 64,
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      RestartPolicy: { Name: 'no' },
    },
  };
}

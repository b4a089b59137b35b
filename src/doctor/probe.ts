/**
 * Gathers HostFacts for `aegis doctor` (adapter: reads /proc, /sys, /etc; runs `<tool> --version`
 * with a timeout; resolves the default image). Never changes the host.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findExecutable, runCommand } from '../host/exec.js';
import { parseImageRef } from '../images/ref.js';
import { DEFAULT_IMAGES_DIR, resolveImageSync } from '../images/store.js';
import { release } from 'node:os';
import { DEFAULT_DOCKER_SOCKET, engineClient, engineUnavailableReason, IMAGE_REPO } from '../sandbox/docker/engine.js';
import { engineOnThisKernel } from '../sandbox/docker/host.js';
import { compileSeccomp } from '../sandbox/spec/seccomp.js';
import { guestProtocol, kvmProbeCacheDir, type MicrovmSettings } from '../sandbox/drivers/microvm.js';
import { probeKvm } from '../sandbox/drivers/microvm-kvm.js';
import { AGENT_HOST_GID, AGENT_HOST_UID } from '../sandbox/host-paths.js';
import { cgroupLayout, type DockerFacts, type HostFacts, type MicrovmFacts } from './checks.js';

const VERSION_ARGS: Readonly<Record<string, readonly string[]>> = {
  crun: ['--version'],
  runc: ['--version'],
  runsc: ['--version'],
  nft: ['--version'],
  ip: ['-V'],
  debootstrap: ['--version'],
  'mkfs.ext4': ['-V'],
  bpftrace: ['--version'],
};

async function version(path: string, args: readonly string[]): Promise<string> {
  const r = await runCommand([path, ...args], { timeoutMs: 5000 }).catch((err: unknown) => err as Error);
  if (r instanceof Error) return `unknown (${r.message})`;
  // debootstrap --version prints "debootstrap 1.0.128+nmu2+deb12u2"; runsc prints "runsc version ...".
  const first = `${r.stdout}\n${r.stderr}`.split('\n').find((l) => l.trim() !== '');
  return first?.trim() ?? 'unknown';
}

function read(p: string): string | null {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

function osRelease(): { id: string; versionId: string } {
  const t = read('/etc/os-release') ?? '';
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(t)?.[1] ?? '';
  return { id: get('ID'), versionId: get('VERSION_ID') };
}

/** What the Docker engine says of itself, and whether it runs a container under AEGIS's seccomp profile. */
export async function probeDocker(
  host: string | undefined,
  imageDigest: string | null = null,
  tls?: { ca: string; cert: string; key: string },
  context?: string,
  refused?: string,
  engineMode: 'auto' | 'local' | 'remote' = 'auto',
): Promise<DockerFacts> {
  const shown = `${host ?? `unix://${DEFAULT_DOCKER_SOCKET}`}${tls !== undefined ? ' (TLS)' : ''}${context !== undefined ? ` (Docker context ${context})` : ''}`;
  const missing = engineUnavailableReason(host, refused);
  if (missing !== null) return { host: shown, unreachable: missing };
  let docker: ReturnType<typeof engineClient>;
  try {
    docker = engineClient(host, tls);
  } catch (err) {
    return { host: shown, unreachable: (err as Error).message };
  }
  let info: { CgroupDriver?: string; CgroupVersion?: string; KernelVersion?: string; OperatingSystem?: string };
  let version: { Version?: string; ApiVersion?: string };
  try {
    [info, version] = (await Promise.all([docker.info(), docker.version()])) as [typeof info, typeof version];
  } catch (err) {
    return { host: shown, unreachable: (err as Error).message };
  }
  let seccompRun: string | null = null;
  try {
    // The default image as AEGIS imported it (it has `true`); absent until the first docker run.
    const images =
      imageDigest === null
        ? []
        : await docker.listImages({ filters: { reference: [`${IMAGE_REPO}:${imageDigest.replace(/^sha256:/, '')}`] } });
    const image = images[0]?.Id;
    if (image !== undefined) {
      const c = await docker.createContainer({
        Image: image,
        Entrypoint: ['true'],
        User: '101000:101000',
        Labels: { 'org.aegis.role': 'doctor' },
        HostConfig: {
          NetworkMode: 'none',
          ReadonlyRootfs: true,
          CapDrop: ['ALL'],
          SecurityOpt: ['no-new-privileges:true', `seccomp=${JSON.stringify(compileSeccomp({ deny: [] }))}`],
          LogConfig: { Type: 'none', Config: {} },
        },
      });
      try {
        await c.start();
        const r = (await c.wait()) as { StatusCode: number };
        seccompRun = r.StatusCode === 0 ? 'ok' : `true exited ${r.StatusCode}`;
      } finally {
        await c.remove({ force: true }).catch(() => undefined);
      }
    }
  } catch (err) {
    seccompRun = (err as { json?: { message?: string } }).json?.message ?? (err as Error).message;
  }
  return {
    host: shown,
    unreachable: null,
    ...(version.Version !== undefined ? { version: version.Version } : {}),
    ...(version.ApiVersion !== undefined ? { apiVersion: version.ApiVersion } : {}),
    ...(info.CgroupDriver !== undefined ? { cgroupDriver: info.CgroupDriver } : {}),
    ...(info.CgroupVersion !== undefined ? { cgroupVersion: info.CgroupVersion } : {}),
    sameKernel: engineOnThisKernel(info, release(), host),
    engineMode,
    seccompRun,
  };
}

/** isolation microvm: QEMU, the guest, and the KVM probe (a boot with a timeout, cached next to the guest). */
export async function probeMicrovm(s: MicrovmSettings): Promise<MicrovmFacts> {
  const guest = [s.guestDir, join(s.guestDir, 'current')].find(
    (d) => existsSync(join(d, 'vmlinuz')) && existsSync(join(d, 'initramfs.cpio.gz')),
  );
  const kvm = await probeKvm({
    guestDir: guest ?? s.guestDir,
    cacheDir: kvmProbeCacheDir(s),
    runAs: { uid: AGENT_HOST_UID, gid: AGENT_HOST_GID },
  });
  return {
    guestDir: s.guestDir,
    guest: guest ?? null,
    guestProblem: guest === undefined ? null : guestProtocol(guest),
    qemu: findExecutable('qemu-system-x86_64'),
    allowEmulation: s.allowEmulation,
    kvm,
  };
}

export async function probeHost(
  opts: {
    imagesDir?: string;
    defaultRef?: string;
    dockerHost?: string;
    dockerTls?: { ca: string; cert: string; key: string };
    dockerContext?: string;
    dockerRefused?: string;
    dockerEngine?: 'auto' | 'local' | 'remote';
    microvm?: MicrovmSettings;
  } = {},
): Promise<HostFacts> {
  const commands: Record<string, { path: string; version: string } | null> = {};
  await Promise.all(
    Object.entries(VERSION_ARGS).map(async ([name, args]) => {
      const p = findExecutable(name);
      commands[name] = p ? { path: p, version: await version(p, args) } : null;
    }),
  );
  const mountinfo = read('/proc/self/mountinfo') ?? '';
  const v2 = cgroupLayout(mountinfo, null).v2Mount;
  const maxUserns = Number((read('/proc/sys/user/max_user_namespaces') ?? '').trim());
  const dir = opts.imagesDir ?? DEFAULT_IMAGES_DIR;
  const defaultRef = opts.defaultRef ?? 'python:3.11';
  let defaultImage: HostFacts['images']['defaultImage'];
  try {
    defaultImage = { ok: true, digest: resolveImageSync(parseImageRef(defaultRef), { imagesDir: dir }).digest };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    defaultImage = { ok: false, code: e.code ?? 'error', message: e.message ?? String(err) };
  }
  return {
    euid: process.geteuid?.() ?? -1,
    os: osRelease(),
    commands,
    mountinfo,
    procCgroups: read('/proc/cgroups') ?? '',
    v2Controllers: v2 ? read(join(v2, 'cgroup.controllers')) : null,
    maxUserNamespaces: Number.isFinite(maxUserns) && read('/proc/sys/user/max_user_namespaces') !== null ? maxUserns : null,
    kvm: existsSync('/dev/kvm'),
    btf: existsSync('/sys/kernel/btf/vmlinux'),
    images: { dir, storeExists: existsSync(dir), defaultRef, defaultImage },
    docker: await probeDocker(
      opts.dockerHost,
      defaultImage.ok ? defaultImage.digest : null,
      opts.dockerTls,
      opts.dockerContext,
      opts.dockerRefused,
      opts.dockerEngine,
    ),
    ...(opts.microvm !== undefined ? { microvm: await probeMicrovm(opts.microvm) } : {}),
  };
}

/**
 * Gathers HostFacts for `aegis doctor` (adapter: reads /proc, /sys, /etc; runs `<tool> --version`
 * with a timeout; resolves the default image). Never changes the host.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findExecutable, runCommand } from '../host/exec.js';
import { parseImageRef } from '../images/ref.js';
import { DEFAULT_IMAGES_DIR, resolveImageSync } from '../images/store.js';
import { cgroupLayout, type HostFacts } from './checks.js';

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

export async function probeHost(opts: { imagesDir?: string; defaultRef?: string } = {}): Promise<HostFacts> {
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
  };
}

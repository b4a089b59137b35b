/**
 * The sandbox's filesystem as the agent sees it: which paths it can read and write, and why.
 * `aegis policy test <m> fs read|write <path>` answers from here.
 *
 * Pure: no I/O. The view is read off the OCI config that `compileBundle` produces for the policy
 * (its mounts, read-only root, masked and read-only /proc paths), so it cannot drift from what a
 * run mounts. `decidePath` (src/policy/paths.ts) answers a narrower question, whether the
 * manifest *grants* a path, and stays what the sandbox runner asks about volumes.
 *
 * Model: the deepest mount that contains the path decides (as in the kernel); outside every mount
 * the image root answers (read-only). A mount is writable for the agent when it is a read-write
 * bind, or a read-write tmpfs with mode 1777 (`/tmp`, `/dev/shm`, write grants); the kernel
 * filesystems are read-only to the agent, apart from the standard device nodes.
 *
 * LIMITATION: it decides on names and on what AEGIS mounts, not on the image's contents: "read
 * allowed" under the image root means "if the image has that file" (and its own file modes apply);
 * a few per-process files under /proc (e.g. /proc/self/oom_score_adj) that the kernel lets a
 * process write are reported as read-only; POSIX message queues (/dev/mqueue) are not modelled.
 */
import type { AllowReason, DenyReason, Policy } from '../../policy/types.js';
import { isWithin, normalizeSandboxPath, type FsMode } from '../../policy/paths.js';
import { SandboxError } from '../errors.js';
import { CODE_MOUNT, compileBundle, mountTargets, TMP_MOUNT, type ResolvedVolume } from './compile.js';
import type { OciConfig, OciMount } from './oci.js';
import { dirsToList, type ImageListing } from './rootfs.js';

/** A decision about the sandbox view; `mount` is the mount that answered ('/' for the image root). */
export type ViewDecision =
  | { readonly allow: true; readonly reason: AllowReason; readonly mount: string; readonly detail: string }
  | { readonly allow: false; readonly reason: DenyReason; readonly mount: string; readonly detail: string };

/**
 * Device nodes every OCI runtime creates in /dev (runtime-spec config-linux.md, "Default
 * Devices"), readable and writable by anyone; nothing else can be created in /dev.
 */
export const DEFAULT_DEVICES = ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom', '/dev/tty'];

/** Scratch tmpfs mounts every sandbox has: writable by the agent, empty at start, gone afterwards. */
const SCRATCH = new Set([TMP_MOUNT, '/dev/shm']);

const KERNEL_TYPES = new Set(['proc', 'sysfs', 'devpts', 'mqueue']);

/** The mounts and masks of the bundle a run of `policy` gets (host paths are placeholders). */
export function sandboxConfig(
  policy: Policy,
  volumes: readonly ResolvedVolume[] = [],
): Pick<OciConfig, 'mounts' | 'root'> & Pick<OciConfig['linux'], 'maskedPaths' | 'readonlyPaths'> {
  // An image that has none of the mount targets' parents: the skeleton then binds nothing from
  // the image, and every path outside a mount falls to the read-only root.
  const listing: ImageListing = new Map(dirsToList(mountTargets(policy, volumes).top).map((d) => [d, 'missing' as const]));
  const { config } = compileBundle(policy, {
    imageRootfs: '/image',
    imageListing: listing,
    codeDir: '/code',
    volumes,
    cgroupsPath: null,
    isolation: 'crun',
  });
  return { mounts: config.mounts, root: config.root, maskedPaths: config.linux.maskedPaths, readonlyPaths: config.linux.readonlyPaths };
}

function option(m: OciMount, name: string): boolean {
  return m.options.includes(name);
}

function allow(reason: AllowReason, mount: string, detail: string): ViewDecision {
  return { allow: true, reason, mount, detail };
}

function deny(reason: DenyReason, mount: string, detail: string): ViewDecision {
  return { allow: false, reason, mount, detail };
}

/**
 * Decide whether the agent can `mode` `path` inside a sandbox of `policy` (with `volumes`
 * attached, as `aegis run --volume` would). `path` is untrusted: anything that is not an
 * absolute path is denied.
 */
export function decideSandboxPath(policy: Policy, mode: FsMode, path: string, volumes: readonly ResolvedVolume[] = []): ViewDecision {
  const p = normalizeSandboxPath(path);
  if (p === null) return deny('fs.denied.invalid_path', '/', `"${path}" is not an absolute path`);
  let view;
  try {
    view = sandboxConfig(policy, volumes);
  } catch (err) {
    if (err instanceof SandboxError) return deny('fs.denied.not_granted', '/', `no sandbox can be made for this policy: ${err.message}`);
    throw err;
  }
  const masked = view.maskedPaths.find((m) => isWithin(p, m));
  if (masked !== undefined) return deny('fs.denied.masked', masked, `${masked} is masked (it reads as empty; writes fail)`);

  // The deepest mount containing p decides; mounts are applied in order, so the last of equal depth wins.
  let mount: OciMount | undefined;
  for (const m of view.mounts)
    if (isWithin(p, m.destination) && (mount === undefined || m.destination.length >= mount.destination.length)) mount = m;
  if (mount === undefined) {
    if (mode === 'read') return allow('fs.allowed.image', '/', `${p} is in the image, read-only: readable if the image has it`);
    return deny('fs.denied.image_readonly', '/', `${p} is in the image, mounted read-only`);
  }
  const at = mount.destination;
  const ro = view.readonlyPaths.find((r) => isWithin(p, r));

  if (KERNEL_TYPES.has(mount.type) || at === '/dev' || at === '/sys') {
    if (mode === 'read')
      return allow('fs.allowed.kernel', at, `${at} is the sandbox's own ${mount.type === 'tmpfs' ? at.slice(1) : mount.type}, readable`);
    if (DEFAULT_DEVICES.includes(p)) return allow('fs.allowed.device', at, `${p} is a standard device node, writable by anyone`);
    if (ro !== undefined) return deny('fs.denied.kernel_readonly', ro, `${ro} is mounted read-only`);
    if (at !== '/dev') return deny('fs.denied.kernel_readonly', at, `${at} is read-only to the agent`);
    return deny('fs.denied.kernel_readonly', at, `${at} is read-only to the agent: only the standard devices and /dev/shm are writable`);
  }
  if (at === CODE_MOUNT) {
    if (mode === 'read') return allow('fs.allowed.code', at, `${at} is the agent's code, read-only`);
    return deny('fs.denied.code_readonly', at, `${at} is the agent's code, mounted read-only`);
  }
  if (SCRATCH.has(at)) return allow('fs.allowed.tmpfs', at, `${at} is a writable tmpfs for the run, empty at start and gone afterwards`);

  const writable = !option(mount, 'ro') && (mount.type === 'bind' ? option(mount, 'rw') : option(mount, 'mode=1777'));
  const volume = mount.type === 'bind' && volumes.some((v) => v.sandbox === at);
  const what = volume
    ? `the host folder ${mount.source}`
    : writable
      ? 'an empty tmpfs for the run, gone afterwards (no volume attached)'
      : 'an empty read-only tmpfs (no volume attached)';
  if (mode === 'read') return allow('fs.allowed.read', at, `${at} is granted: ${what}`);
  if (writable) return allow('fs.allowed.write', at, `${at} is granted read-write: ${what}`);
  return deny('fs.denied.read_only', at, `${at} is granted read-only: ${what}`);
}

/**
 * Validation of a compiled bundle: a list of small, independent checks that each state one
 * security property. Run on every bundle before it is handed to a runtime; a violation means a
 * compiler bug or an unsafe request, and the agent does not start.
 *
 * Pure: no I/O.
 */
import { isWithin } from '../../policy/paths.js';
import { DENIED_ALWAYS } from './seccomp.js';
import { SandboxError } from '../errors.js';
import type { CompiledBundle, CompileOptions } from './compile.js';
import { SANDBOX_CA_BUNDLE } from './compile.js';
import {
  AEGIS_MASKED_PATHS,
  CODE_MOUNT,
  DEFAULT_ID_MAP,
  MASKED_PATHS,
  PID_MAX_LIMIT,
  READONLY_PATHS,
  SANDBOX_RLIMITS,
  USERNS_OWNER_BASE,
} from './compile.js';

type Check = (b: CompiledBundle, o: CompileOptions) => string | null;

const RESOLV_CONF = '/etc/resolv.conf';

const REQUIRED_NS = ['pid', 'mount', 'ipc', 'uts', 'cgroup', 'network', 'user'] as const;

/**
 * The one runtime-specific exception (see src/sandbox/drivers/runsc.ts): gVisor joining the
 * gateway's network namespace runs without an OCI user namespace. Allowed only for gVisor, only
 * with a joined network namespace, and only when the agent's uid and gid are themselves in the
 * unprivileged range the user namespace would have mapped them to (never a host account).
 */
function gvisorWithoutUserns(b: CompiledBundle, o: CompileOptions): boolean {
  const ns = b.config.linux.namespaces;
  const u = b.config.process.user;
  const net = o.network;
  // The Docker engine cannot join a user namespace per container (src/sandbox/drivers/docker.ts):
  // the same rule on ids, with or without a joined network namespace.
  if (o.isolation === 'docker')
    return !ns.some((n) => n.type === 'user') && u.uid >= UNPRIVILEGED_HOST_BASE && u.gid >= UNPRIVILEGED_HOST_BASE;
  return (
    o.isolation === 'gvisor' &&
    net?.kind === 'netns' &&
    !ns.some((n) => n.type === 'user') &&
    ns.some((n) => n.type === 'network' && n.path === net.path) &&
    u.uid >= UNPRIVILEGED_HOST_BASE &&
    u.gid >= UNPRIVILEGED_HOST_BASE
  );
}
const UNPRIVILEGED_HOST_BASE = DEFAULT_ID_MAP.hostBase;

/** `/proc/<pid>/ns/user`; pid 0 only in `--dry-run` output (no such process: cannot be joined). */
const USERNS_PATH = /^\/proc\/(0|[1-9][0-9]{0,6})\/ns\/user$/;

/**
 * crun and runc must join the user namespace AEGIS made (src/sandbox/userns.ts): one owned by
 * USERNS_OWNER_BASE + the holder's pid, never by root, so the kernel's per-user counters of the
 * sandbox are charged to a uid of its own. gVisor serves these calls in its own kernel and
 * creates its namespace itself; so does runc in a joined network namespace (LIMITATION below).
 */
function usernsOwnership(b: CompiledBundle, o: CompileOptions): string | null {
  const joined = b.config.linux.namespaces.filter((n) => n.type === 'user' && n.path !== undefined);
  if (o.isolation === 'gvisor') return joined.length > 0 || o.userns !== undefined ? 'gVisor creates its own user namespace' : null;
  if (o.isolation === 'docker')
    return joined.length > 0 || o.userns !== undefined ? 'the Docker engine cannot join a user namespace' : null;
  // The microVM's guest kernel has its own ids; QEMU runs as the unprivileged host uid (drivers/microvm.ts).
  if (o.isolation === 'microvm') return joined.length > 0 || o.userns !== undefined ? 'a microVM joins no host user namespace' : null;
  // LIMITATION: runc 1.1 joins the user namespace first and then cannot join the gateway's
  // network namespace (owned by the host's user namespace): there, runc creates it (root-owned).
  if (o.isolation === 'runc' && o.network?.kind === 'netns')
    return joined.length > 0 || o.userns !== undefined ? 'runc cannot join a user namespace together with a network namespace' : null;
  const u = o.userns;
  if (u === undefined) return `${o.isolation} must join a user namespace owned by a dedicated uid (not root)`;
  const m = USERNS_PATH.exec(u.path);
  const pid = m?.[1] === undefined ? NaN : Number(m[1]);
  if (!(pid < PID_MAX_LIMIT) || u.ownerUid !== USERNS_OWNER_BASE + pid)
    return `user namespace ${u.path} must be a holder's, owned by uid ${USERNS_OWNER_BASE} + its pid`;
  if (joined.length !== 1 || joined[0]?.path !== u.path) return `the user namespace must be joined at ${u.path}`;
  return null;
}

/**
 * Every limit of SANDBOX_RLIMITS, none above it (a runtime sets what the config says). runc
 * alone gets none in its config: AEGIS starts it under `prlimit` with SANDBOX_RLIMITS and the
 * agent inherits them (src/sandbox/drivers/runc.ts).
 */
function rlimitsBounded(b: CompiledBundle, o: CompileOptions): string | null {
  const have = b.config.process.rlimits;
  if (o.isolation === 'runc') return have.length === 0 ? null : 'runc must get no rlimits in its config (they are inherited)';
  for (const want of SANDBOX_RLIMITS) {
    const r = have.filter((x) => x.type === want.type);
    if (r.length !== 1 || r[0] === undefined) return `${want.type} must be set once`;
    if (r[0].hard > want.hard || r[0].soft > r[0].hard || r[0].hard < 0 || r[0].soft < 0)
      return `${want.type} must be at most ${want.hard} (soft <= hard)`;
  }
  return null;
}

const CHECKS: readonly Check[] = [
  (b) => (b.config.process.user.uid === 0 || b.config.process.user.gid === 0 ? 'the agent must not run as uid/gid 0' : null),
  (b) => {
    const c = b.config.process.capabilities;
    return [c.bounding, c.effective, c.inheritable, c.permitted, c.ambient].some((s) => s.length > 0)
      ? 'the agent must have no capabilities'
      : null;
  },
  (b) => (b.config.process.noNewPrivileges ? null : 'noNewPrivileges must be set'),
  (b) => (b.config.root.readonly ? null : 'the root filesystem must be read-only'),
  (b, o) => {
    const have = new Set(b.config.linux.namespaces.map((n) => n.type));
    if (gvisorWithoutUserns(b, o)) have.add('user');
    const missing = REQUIRED_NS.filter((n) => !have.has(n));
    return missing.length > 0 ? `missing namespaces: ${missing.join(', ')}` : null;
  },
  (b) =>
    b.config.linux.namespaces.some((n) => n.type !== 'network' && n.type !== 'user' && n.path !== undefined)
      ? 'only the network and user namespaces may be joined'
      : null,
  usernsOwnership,
  rlimitsBounded,
  (b, o) => {
    if (gvisorWithoutUserns(b, o)) return null;
    const m = b.config.linux.uidMappings.concat(b.config.linux.gidMappings);
    return m.length === 0 || m.some((x) => x.hostID === 0 || x.hostID < 1000) ? 'ids must map to an unprivileged host range' : null;
  },
  (b) => (b.config.linux.seccomp.defaultAction === 'SCMP_ACT_ERRNO' ? null : 'seccomp must deny by default'),
  // No rule may allow what the default profile never allows; clone3 only under gVisor, whose
  // Sentry does not implement it (ENOSYS, so libc falls back to clone and its checked flags).
  (b, o) => {
    const allowed = b.config.linux.seccomp.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW').flatMap((r) => r.names);
    const bad = allowed.filter((n) => DENIED_ALWAYS.includes(n) || (n === 'clone3' && o.isolation !== 'gvisor'));
    return bad.length > 0 ? `seccomp allows ${[...new Set(bad)].join(', ')}` : null;
  },
  // Host facts hidden from the agent: Docker's masked and read-only paths and AEGIS's own.
  (b) => {
    const masked = new Set(b.config.linux.maskedPaths);
    const missing = [...MASKED_PATHS, ...AEGIS_MASKED_PATHS].filter((p) => !masked.has(p));
    return missing.length > 0 ? `paths not masked: ${missing.join(', ')}` : null;
  },
  (b) => {
    const ro = new Set(b.config.linux.readonlyPaths);
    const missing = READONLY_PATHS.filter((p) => !ro.has(p));
    return missing.length > 0 ? `paths not read-only: ${missing.join(', ')}` : null;
  },
  // Bind sources: the image, the code dir and the volumes, nothing else.
  (b, o) => {
    const allowed = new Map<string, string>();
    allowed.set(CODE_MOUNT, o.codeDir);
    for (const v of o.volumes ?? []) allowed.set(v.sandbox, v.host);
    if (o.network?.kind === 'netns' && o.network.resolvConf !== undefined) allowed.set(RESOLV_CONF, o.network.resolvConf);
    if (o.network?.kind === 'netns' && o.network.caBundle !== undefined) allowed.set(SANDBOX_CA_BUNDLE, o.network.caBundle);
    for (const m of b.config.mounts) {
      if (m.type !== 'bind') continue;
      const expected = allowed.get(m.destination) ?? (b.rootfs.binds.includes(m.destination) ? o.imageRootfs + m.destination : undefined);
      if (expected === undefined || m.source !== expected) return `unexpected bind mount ${m.source} -> ${m.destination}`;
      if (!m.options.includes('nosuid')) return `bind mount ${m.destination} lacks nosuid`;
    }
    return null;
  },
  // A mount inside a bind mount or a read-only mount would make the runtime create its target
  // there (on the host, or failing on a read-only filesystem): refuse.
  (b) => {
    const ms = b.config.mounts.filter((m) => !['/proc', '/dev', '/sys'].includes(m.destination) && !m.destination.startsWith('/dev/'));
    for (const inner of ms) {
      for (const outer of ms) {
        if (inner === outer || !isWithin(inner.destination, outer.destination) || inner.destination === outer.destination) continue;
        // The one file overlay: the gateway's resolv.conf over the image's own (built images
        // always have one). Inside a read-only bind, a missing target can only fail the start.
        if (
          (inner.destination === RESOLV_CONF || inner.destination === SANDBOX_CA_BUNDLE) &&
          outer.destination === '/etc' &&
          outer.type === 'bind' &&
          outer.options.includes('ro')
        )
          continue;
        if (outer.type === 'bind') return `${inner.destination} cannot be mounted inside the bind mount ${outer.destination}`;
        if (outer.options.includes('ro')) return `${inner.destination} cannot be mounted inside the read-only ${outer.destination}`;
      }
    }
    return null;
  },
  (b) => {
    const seen = new Set<string>();
    for (const m of b.config.mounts) {
      if (seen.has(m.destination)) return `two mounts at ${m.destination}`;
      seen.add(m.destination);
    }
    return null;
  },
];

/** Throws SandboxError('sandbox.invalid_spec') listing every failed check. */
export function validateBundle(bundle: CompiledBundle, opts: CompileOptions): void {
  const problems = CHECKS.map((c) => c(bundle, opts)).filter((p): p is string => p !== null);
  if (problems.length > 0) throw new SandboxError('sandbox.invalid_spec', `unsafe bundle: ${problems.join('; ')}`);
}

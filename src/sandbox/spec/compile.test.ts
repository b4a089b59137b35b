import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Policy } from '../../policy/types.js';
import { SandboxError } from '../errors.js';
import { RuncDriver } from '../drivers/runc.js';
import {
  AEGIS_MASKED_PATHS,
  MASKED_PATHS,
  READONLY_PATHS,
  compileBundle,
  dirsToList,
  mountTargets,
  SANDBOX_RLIMITS,
  USERNS_OWNER_BASE,
  usernsFor,
  type CompileOptions,
  type ResolvedVolume,
} from './compile.js';
import type { ImageEntry } from './rootfs.js';
import { validateBundle } from './validate.js';
import { hasCode } from '../../test-support/errors.js';

function policy(fs: Partial<Policy['fs']> = {}, deny: string[] = []): Policy {
  return {
    version: '1.0',
    agent: {
      name: 'a',
      runtime: { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' },
      entrypoint: ['python3', 'main.py'],
      env: { MODE: 'test' },
      secretRefs: {},
      isolation: null,
      code: '.',
    },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: fs.read ?? [], write: fs.write ?? [] },
    limits: { timeoutMs: 1000, memoryBytes: 1 << 27, cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 }, pids: 64 },
    syscalls: { deny },
  };
}

const ROOT: ImageEntry[] = [
  { name: 'usr', type: 'dir' },
  { name: 'etc', type: 'dir' },
  { name: 'bin', type: 'symlink', target: 'usr/bin' },
  { name: 'tmp', type: 'dir' },
];

function options(p: Policy, extra: Partial<CompileOptions> = {}): CompileOptions {
  const volumes = extra.volumes ?? [];
  const listing = new Map(dirsToList(mountTargets(p, volumes).top).map((d) => [d, d === '/' ? ROOT : ('missing' as const)]));
  const o: CompileOptions = {
    imageRootfs: '/images/py/rootfs',
    imageListing: listing,
    codeDir: '/home/u/agent',
    cgroupsPath: '/aegis/x/c',
    isolation: 'crun',
    ...extra,
  };
  // crun and runc join the user namespace of a holder process (src/sandbox/userns.ts).
  const runcBehindGateway = o.isolation === 'runc' && o.network?.kind === 'netns';
  return o.isolation === 'gvisor' || runcBehindGateway || 'userns' in extra ? o : { ...o, userns: usernsFor(4242) };
}

function compile(p: Policy, extra: Partial<CompileOptions> = {}) {
  const o = options(p, extra);
  const b = compileBundle(p, o);
  validateBundle(b, o);
  return b;
}

const invalid = hasCode(SandboxError, 'sandbox.invalid_spec');

describe('compileBundle', () => {
  it('is deterministic (same input, same bundle)', () => {
    assert.deepEqual(compile(policy({ write: ['/data/outputs'] })), compile(policy({ write: ['/data/outputs'] })));
  });
  it('runs the agent unprivileged in every namespace, with no capabilities', () => {
    const c = compile(policy()).config;
    assert.deepEqual(c.process.user, { uid: 1000, gid: 1000, additionalGids: [] });
    assert.equal(c.process.noNewPrivileges, true);
    assert.deepEqual(Object.values(c.process.capabilities).flat(), []);
    assert.deepEqual(c.linux.namespaces.map((n) => n.type).sort(), ['cgroup', 'ipc', 'mount', 'network', 'pid', 'user', 'uts']);
    assert.deepEqual(c.linux.uidMappings, [{ containerID: 0, hostID: 100_000, size: 65_536 }]);
    assert.equal(c.root.readonly, true);
    assert.equal(c.process.cwd, '/agent');
    assert.ok(c.linux.maskedPaths.includes('/proc/kcore') && c.linux.readonlyPaths.includes('/proc/sys'));
  });
  it("masks Docker's paths and the host facts an agent has no use for (regression: /proc/cmdline, boot_id and /sys/block were readable)", () => {
    const c = compile(policy()).config;
    for (const p of [
      ...MASKED_PATHS,
      '/proc/cmdline',
      '/proc/sys/kernel/random/boot_id',
      '/sys/block',
      '/sys/class/block',
      '/sys/dev/block',
      '/sys/devices/virtual/dmi',
    ]) {
      assert.ok(c.linux.maskedPaths.includes(p), `${p} masked`);
    }
    assert.deepEqual(new Set(c.linux.readonlyPaths), new Set(READONLY_PATHS));
    assert.deepEqual(new Set(c.linux.maskedPaths), new Set([...MASKED_PATHS, ...AEGIS_MASKED_PATHS]));
  });
  it('mounts the code read-only at /agent, a sized tmpfs at /tmp, and binds only image paths', () => {
    const c = compile(policy()).config;
    const binds = c.mounts.filter((m) => m.type === 'bind');
    assert.deepEqual(
      binds.map((m) => [m.source, m.destination, m.options.includes('ro')]),
      [
        ['/images/py/rootfs/usr', '/usr', true],
        ['/images/py/rootfs/etc', '/etc', true],
        ['/home/u/agent', '/agent', true],
      ],
    );
    const tmp = c.mounts.find((m) => m.destination === '/tmp');
    assert.equal(tmp?.type, 'tmpfs');
    assert.ok(tmp?.options.some((o) => o.startsWith('size=')));
  });
  it('makes declared paths without a volume tmpfs, read-only for read grants', () => {
    const c = compile(policy({ read: ['/data/in'], write: ['/data/out'] })).config;
    assert.ok(c.mounts.find((m) => m.destination === '/data/out')?.options.includes('rw') === false);
    assert.equal(c.mounts.find((m) => m.destination === '/data/out')?.type, 'tmpfs');
    // The line above also holds for a read-only tmpfs: the write grant must be writable (no `ro`),
    // world-writable with the sticky bit like /tmp, and sized like /tmp.
    const out = c.mounts.find((m) => m.destination === '/data/out');
    const tmp = c.mounts.find((m) => m.destination === '/tmp');
    assert.equal(out?.options.includes('ro'), false, 'a write grant is not a read-only tmpfs');
    assert.ok(out?.options.includes('mode=1777'));
    assert.equal(
      out?.options.find((o) => o.startsWith('size=')),
      tmp?.options.find((o) => o.startsWith('size=')),
    );
    assert.ok(c.mounts.find((m) => m.destination === '/data/in')?.options.includes('ro'));
  });
  it('replaces a declared tmpfs by its volume, with the requested mode', () => {
    const volumes: ResolvedVolume[] = [{ host: '/srv/out', sandbox: '/data/out', mode: 'rw' }];
    const c = compile(policy({ write: ['/data/out'] }), { volumes }).config;
    const at = c.mounts.filter((m) => m.destination === '/data/out');
    assert.deepEqual(at, [{ destination: '/data/out', type: 'bind', source: '/srv/out', options: ['rbind', 'rw', 'nosuid', 'nodev'] }]);
  });
  it('adds extra environment after the manifest, and extra arguments after the entrypoint', () => {
    const c = compile(policy(), { extraEnv: { HTTPS_PROXY: 'http://10.0.0.1:3128' }, extraArgs: ['--x'] }).config;
    assert.ok(c.process.env.includes('MODE=test') && c.process.env.includes('HTTPS_PROXY=http://10.0.0.1:3128'));
    assert.deepEqual(c.process.args, ['python3', 'main.py', '--x']);
  });
  it('joins a given network namespace, or creates an empty one', () => {
    assert.deepEqual(
      compile(policy()).config.linux.namespaces.find((n) => n.type === 'network'),
      { type: 'network' },
    );
    const joined = compile(policy(), { network: { kind: 'netns', path: '/run/netns/aegis-1' } }).config;
    assert.deepEqual(
      joined.linux.namespaces.find((n) => n.type === 'network'),
      { type: 'network', path: '/run/netns/aegis-1' },
    );
    // sysfs needs a network namespace owned by the sandbox's user namespace: empty /sys otherwise.
    assert.equal(compile(policy()).config.mounts.find((m) => m.destination === '/sys')?.type, 'sysfs');
    assert.equal(joined.mounts.find((m) => m.destination === '/sys')?.type, 'tmpfs');
  });
  it("mounts the gateway's resolv.conf read-only over the image's, and nothing else inside /etc", () => {
    const net = { kind: 'netns' as const, path: '/run/netns/aegis-1', resolvConf: '/run/aegis/net/1/resolv.conf' };
    const c = compile(policy(), { network: net }).config;
    assert.deepEqual(
      c.mounts.find((m) => m.destination === '/etc/resolv.conf'),
      {
        destination: '/etc/resolv.conf',
        type: 'bind',
        source: '/run/aegis/net/1/resolv.conf',
        options: ['rbind', 'ro', 'nosuid', 'nodev'],
      },
    );
    const o = options(policy(), { network: net });
    const b = compileBundle(policy(), o);
    const forged = {
      ...b,
      config: {
        ...b.config,
        mounts: [
          ...b.config.mounts,
          { destination: '/etc/passwd', type: 'bind', source: '/etc/passwd', options: ['rbind', 'ro', 'nosuid', 'nodev'] },
        ],
      },
    };
    assert.throws(() => validateBundle(forged, o), invalid);
    const swapped = {
      ...b,
      config: {
        ...b.config,
        mounts: b.config.mounts.map((m) => (m.destination === '/etc/resolv.conf' ? { ...m, source: '/etc/shadow' } : m)),
      },
    };
    assert.throws(() => validateBundle(swapped, o), invalid);
  });
  it('allows a bundle without a user namespace only for gVisor in a joined namespace, with unprivileged host ids', () => {
    const net = { kind: 'netns' as const, path: '/run/netns/aegis-1' };
    const withoutUserns = (o: CompileOptions, uid: number) => {
      const b = compileBundle(policy(), o);
      const c = b.config;
      return {
        ...b,
        config: {
          ...c,
          process: { ...c.process, user: { ...c.process.user, uid, gid: uid } },
          linux: { ...c.linux, namespaces: c.linux.namespaces.filter((n) => n.type !== 'user'), uidMappings: [], gidMappings: [] },
        },
      };
    };
    const gv = options(policy(), { network: net, isolation: 'gvisor' });
    assert.doesNotThrow(() => validateBundle(withoutUserns(gv, 101000), gv));
    assert.throws(() => validateBundle(withoutUserns(gv, 1000), gv), invalid, 'a host account uid');
    const crun = options(policy(), { network: net, isolation: 'crun' });
    assert.throws(() => validateBundle(withoutUserns(crun, 101000), crun), invalid, 'only gVisor');
    const fresh = options(policy(), { isolation: 'gvisor' });
    assert.throws(() => validateBundle(withoutUserns(fresh, 101000), fresh), invalid, 'only with a joined namespace');
  });
  it('omits cgroupsPath for runtimes started inside the run cgroup', () => {
    assert.equal(compile(policy()).config.linux.cgroupsPath, '/aegis/x/c');
    assert.ok(!('cgroupsPath' in compile(policy(), { cgroupsPath: null }).config.linux));
  });
  it('treats grants of /tmp and a read grant of /agent as already provided', () => {
    const c = compile(policy({ read: ['/agent'], write: ['/tmp'] })).config;
    assert.equal(c.mounts.filter((m) => m.destination === '/tmp').length, 1);
    assert.equal(c.mounts.filter((m) => m.destination === '/agent').length, 1);
  });
  it('carries syscalls.deny into the seccomp profile', () => {
    const c = compile(policy({}, ['mkdir'])).config;
    assert.ok(!c.linux.seccomp.syscalls.some((r) => r.action === 'SCMP_ACT_ALLOW' && r.names.includes('mkdir')));
  });
  describe('when a mount would land inside a read-only or host mount', () => {
    it('refuses a write grant nested in a read grant', () => {
      assert.throws(() => compile(policy({ read: ['/data'], write: ['/data/out'] })), invalid);
    });
    for (const p of ['/', '/proc', '/proc/sys', '/dev/shm', '/sys']) {
      it(`refuses a grant of ${p}`, () => assert.throws(() => compile(policy({ write: [p] })), invalid));
    }
    it('refuses a write grant of /agent (the code is read-only)', () =>
      assert.throws(() => compile(policy({ write: ['/agent'] })), invalid));
    it('refuses a declared path inside /agent', () => {
      assert.throws(() => compile(policy({ write: ['/agent/out'] })), invalid);
    });
  });
});

describe('validateBundle', () => {
  it('lists every broken property of a tampered bundle', () => {
    const p = policy();
    const o = options(p);
    const b = compileBundle(p, o);
    b.config.process.user.uid = 0;
    b.config.process.capabilities.bounding.push('CAP_SYS_ADMIN');
    b.config.linux.namespaces = b.config.linux.namespaces.filter((n) => n.type !== 'user');
    b.config.mounts.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind', 'rw'] });
    assert.throws(
      () => validateBundle(b, o),
      (e) =>
        invalid(e) &&
        /uid\/gid 0/.test((e as Error).message) &&
        /capabilities/.test((e as Error).message) &&
        /user/.test((e as Error).message) &&
        /unexpected bind/.test((e as Error).message),
    );
  });
  it('refuses a seccomp rule that allows what the default never does (clone3 only under gVisor)', () => {
    const p = policy();
    const o = options(p);
    const b = compileBundle(p, o);
    b.config.linux.seccomp.syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ALLOW' }, { names: ['unshare'], action: 'SCMP_ACT_ALLOW' });
    assert.throws(
      () => validateBundle(b, o),
      (e) => invalid(e) && (e as Error).message.includes('seccomp allows clone3, unshare'),
    );
  });
  describe('when a host path is left visible', () => {
    for (const p of ['/proc/kcore', '/proc/cmdline', '/proc/sys/kernel/random/boot_id', '/sys/block', '/sys/firmware']) {
      it(`refuses a bundle that does not mask ${p}`, () => {
        const pol = policy();
        const o = options(pol);
        const b = compileBundle(pol, o);
        b.config.linux.maskedPaths = b.config.linux.maskedPaths.filter((m) => m !== p);
        assert.throws(
          () => validateBundle(b, o),
          (e) => invalid(e) && (e as Error).message.includes(`paths not masked: ${p}`),
        );
      });
    }
    it('refuses a bundle where /proc/sys is writable', () => {
      const pol = policy();
      const o = options(pol);
      const b = compileBundle(pol, o);
      b.config.linux.readonlyPaths = b.config.linux.readonlyPaths.filter((m) => m !== '/proc/sys');
      assert.throws(
        () => validateBundle(b, o),
        (e) => invalid(e) && (e as Error).message.includes('paths not read-only: /proc/sys'),
      );
    });
    it('accepts the compiled bundle', () => {
      const pol = policy();
      const o = options(pol);
      assert.doesNotThrow(() => validateBundle(compileBundle(pol, o), o));
    });
  });
});

describe('per-user kernel counters (issue 8)', () => {
  const withNs = (o: CompileOptions, ns: { type: string; path?: string }[]) => {
    const b = compileBundle(policy(), o);
    return { ...b, config: { ...b.config, linux: { ...b.config.linux, namespaces: ns as typeof b.config.linux.namespaces } } };
  };
  it('joins the user namespace of the holder, owned by base + its pid, keeping the id mappings', () => {
    const c = compile(policy()).config;
    assert.deepEqual(
      c.linux.namespaces.find((n) => n.type === 'user'),
      { type: 'user', path: '/proc/4242/ns/user' },
    );
    assert.deepEqual(c.linux.uidMappings, [{ containerID: 0, hostID: 100_000, size: 65_536 }]);
    assert.equal(c.annotations['org.aegis.userns_owner'], String(USERNS_OWNER_BASE + 4242));
    assert.deepEqual(usernsFor(7), { path: '/proc/7/ns/user', ownerUid: USERNS_OWNER_BASE + 7 });
    const dry = options(policy(), { userns: usernsFor(0) });
    assert.doesNotThrow(() => validateBundle(compileBundle(policy(), dry), dry), 'the --dry-run placeholder (pid 0: cannot be joined)');
  });
  it('sets low per-sandbox limits for the counters checked against rlimits', () => {
    const r = compile(policy()).config.process.rlimits;
    for (const t of ['RLIMIT_MSGQUEUE', 'RLIMIT_SIGPENDING', 'RLIMIT_MEMLOCK', 'RLIMIT_NOFILE', 'RLIMIT_CORE'])
      assert.ok(
        r.some((x) => x.type === t),
        t,
      );
    assert.deepEqual(r, SANDBOX_RLIMITS);
    assert.ok(
      r.every((x) => x.soft <= x.hard && x.hard <= 1024 * 1024),
      'lowering only: below any host default',
    );
  });
  describe('when crun or runc would create the user namespace as root', () => {
    for (const isolation of ['crun', 'runc'] as const) {
      it(`refuses ${isolation} without a holder's namespace`, () => {
        const o = options(policy(), { isolation, userns: undefined });
        const b = compileBundle(policy(), o);
        assert.throws(
          () => validateBundle(isolation === 'runc' ? { ...b, config: new RuncDriver('runc').adapt(b.config) } : b, o),
          (e) => invalid(e) && /dedicated uid/.test((e as Error).message),
        );
      });
    }
    it('refuses an owner that is not base + the holder pid, or root', () => {
      for (const ownerUid of [0, USERNS_OWNER_BASE, USERNS_OWNER_BASE + 4243, 101_000]) {
        const o = options(policy(), { userns: { path: '/proc/4242/ns/user', ownerUid } });
        assert.throws(() => validateBundle(compileBundle(policy(), o), o), invalid, String(ownerUid));
      }
    });
    it('refuses namespace paths other than /proc/<pid>/ns/user', () => {
      for (const path of [
        '/proc/self/ns/user',
        '/proc/1/../1/ns/user',
        '/run/userns',
        '/proc/4242/ns/user/',
        '/proc/04242/ns/user',
        '/proc/99999999/ns/user',
      ]) {
        const o = options(policy(), { userns: { path, ownerUid: USERNS_OWNER_BASE + 4242 } });
        assert.throws(() => validateBundle(compileBundle(policy(), o), o), invalid, path);
      }
    });
    it('refuses a bundle joining another user namespace than the holder, or two', () => {
      const o = options(policy());
      const base = compileBundle(policy(), o).config.linux.namespaces.filter((n) => n.type !== 'user');
      assert.throws(() => validateBundle(withNs(o, [...base, { type: 'user', path: '/proc/1/ns/user' }]), o), invalid);
      assert.throws(() => validateBundle(withNs(o, [...base, { type: 'user' }]), o), invalid);
      assert.throws(
        () =>
          validateBundle(withNs(o, [...base, { type: 'user', path: '/proc/4242/ns/user' }, { type: 'user', path: '/proc/1/ns/user' }]), o),
        invalid,
      );
      assert.throws(
        () =>
          validateBundle(
            withNs(o, [
              ...base.filter((n) => n.type !== 'pid'),
              { type: 'pid', path: '/proc/1/ns/pid' },
              { type: 'user', path: '/proc/4242/ns/user' },
            ]),
            o,
          ),
        invalid,
        'other namespaces stay fresh',
      );
    });
    it('lets runc create the user namespace only in a joined network namespace (runc 1.1 cannot join both)', () => {
      const net = { kind: 'netns' as const, path: '/run/netns/aegis-1' };
      const d = new RuncDriver('runc');
      const check = (o: CompileOptions) => {
        const b = compileBundle(policy(), o);
        validateBundle({ ...b, config: d.adapt(b.config) }, o);
      };
      assert.doesNotThrow(() => check(options(policy(), { isolation: 'runc', network: net })));
      assert.throws(() => check(options(policy(), { isolation: 'runc', network: net, userns: usernsFor(4242) })), invalid);
      assert.throws(() => check(options(policy(), { isolation: 'crun', network: net, userns: undefined })), invalid, 'crun joins both');
    });
    it('refuses a joined user namespace for gVisor (its own kernel serves these counters)', () => {
      const o = options(policy(), { isolation: 'gvisor' });
      assert.doesNotThrow(() => validateBundle(compileBundle(policy(), o), o));
      const ou = { ...o, userns: usernsFor(4242) };
      assert.throws(() => validateBundle(compileBundle(policy(), ou), ou), invalid);
    });
  });
  describe('when rlimits are missing or raised', () => {
    const o = options(policy());
    const withLimits = (f: (r: { type: string; hard: number; soft: number }[]) => { type: string; hard: number; soft: number }[]) => {
      const b = compileBundle(policy(), o);
      return { ...b, config: { ...b.config, process: { ...b.config.process, rlimits: f(b.config.process.rlimits) } } };
    };
    for (const t of ['RLIMIT_MSGQUEUE', 'RLIMIT_SIGPENDING', 'RLIMIT_MEMLOCK']) {
      it(`refuses a bundle without ${t}, with it raised, or with soft above hard`, () => {
        assert.throws(
          () =>
            validateBundle(
              withLimits((r) => r.filter((x) => x.type !== t)),
              o,
            ),
          invalid,
        );
        assert.throws(
          () =>
            validateBundle(
              withLimits((r) => r.map((x) => (x.type === t ? { ...x, hard: x.hard * 2, soft: x.hard * 2 } : x))),
              o,
            ),
          invalid,
        );
        assert.throws(
          () =>
            validateBundle(
              withLimits((r) => r.map((x) => (x.type === t ? { ...x, soft: x.hard + 1 } : x))),
              o,
            ),
          invalid,
        );
        assert.throws(
          () =>
            validateBundle(
              withLimits((r) => [...r, { type: t, hard: 1, soft: 1 }]),
              o,
            ),
          invalid,
          'twice',
        );
      });
    }
    it('gives runc no rlimits in its config (inherited from prlimit) and refuses them there', () => {
      const d = new RuncDriver('runc');
      assert.equal(d.rlimitsInherited, true);
      const or = options(policy(), { isolation: 'runc' });
      const b = compileBundle(policy(), or);
      const adapted = { ...b, config: d.adapt(b.config) };
      assert.deepEqual(adapted.config.process.rlimits, []);
      assert.doesNotThrow(() => validateBundle(adapted, or));
      assert.throws(() => validateBundle(b, or), invalid);
      assert.throws(() => validateBundle(adapted, o), invalid, 'crun must set them');
    });
  });
});

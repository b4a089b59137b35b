import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Policy } from '../../policy/types.js';
import { hasCode } from '../../test-support/errors.js';
import { DockerDriver } from '../drivers/docker.js';
import { SandboxError } from '../errors.js';
import { AEGIS_MASKED_PATHS, compileBundle, dirsToList, mountTargets, type CompileOptions } from '../spec/compile.js';
import type { OciConfig } from '../spec/oci.js';
import { validateBundle } from '../spec/validate.js';
import {
  containerOptions,
  dnsOptions,
  holderOptions,
  keeperOptions,
  LABEL_OWNER_PID,
  LABEL_RUN,
  limitsNotKept,
  MAX_REMOTE_VOLUME_INODES,
  missingLimitSupport,
  rwEngineBytes,
  rwEngineInodes,
  volumeOptions,
  type ContainerFacts,
} from './options.js';
import { NETNS_MOUNT, netnsHolderElf } from './netns-holder-elf.js';

function policy(fs: Partial<Policy['fs']> = {}): Policy {
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
    syscalls: { deny: [] },
  };
}

const IMAGE = '/var/lib/aegis/images/sha256/' + 'e'.repeat(64) + '/rootfs';

/** A docker bundle as run.ts makes it: compiled, adapted by the driver, validated. */
function dockerConfig(p: Policy, extra: Partial<CompileOptions> = {}): OciConfig {
  const listing = new Map(
    dirsToList(mountTargets(p, extra.volumes ?? []).top).map((d) => [
      d,
      d === '/'
        ? [
            { name: 'usr', type: 'dir' as const },
            { name: 'etc', type: 'dir' as const },
          ]
        : ('missing' as const),
    ]),
  );
  const o: CompileOptions = {
    imageRootfs: IMAGE,
    imageListing: listing,
    codeDir: '/srv/agent',
    cgroupsPath: '/aegis/x/c',
    isolation: 'docker',
    ...extra,
  };
  const b = compileBundle(p, o);
  const adapted = { ...b, config: new DockerDriver().adapt(b.config) };
  validateBundle(adapted, o);
  return adapted.config;
}

const FACTS: ContainerFacts = {
  id: 'aegis-0123456789abcdef',
  image: 'sha256:' + 'a'.repeat(64),
  imageRootfs: IMAGE,
  cgroupParent: '/aegis/aegis-0123456789abcdef',
  network: { kind: 'none' },
  limits: { memoryBytes: 1 << 27, cpuQuotaUs: 50_000, cpuPeriodUs: 100_000, pids: 64 },
  owner: { pid: 4242, startTime: '123456' },
};

describe('docker: bundle -> engine options for a remote engine (API only)', () => {
  const volumes = [{ host: '/srv/out-staged', sandbox: '/data/outputs', mode: 'rw' as const, sizeBytes: 1 << 26 }];
  const remote = (provided: string[] = []): ContainerFacts => ({
    ...FACTS,
    cgroupParent: undefined,
    engine: { kind: 'remote', volumes: { '/agent': 'aegis-x-v0', '/data/outputs': 'aegis-x-v1' }, provided },
  });
  it('limits in HostConfig alone, exactly; no cgroup parent; every bind an engine volume, NoCopy, in its mode', () => {
    const config = dockerConfig(policy({ write: ['/data/outputs'] }), { volumes });
    const o = containerOptions(config, remote());
    const h = o.HostConfig!;
    assert.equal(h.CgroupParent, undefined);
    assert.deepEqual(
      [h.Memory, h.MemorySwap, h.PidsLimit, h.CpuPeriod, h.CpuQuota],
      [1 << 27, 1 << 27, 64, 100_000, 50_000],
      'memory without swap, the pids limit itself, the CFS quota',
    );
    const mounts = (h.Mounts ?? []).map((m) => [m.Type, m.Source, m.Target, m.ReadOnly, m.VolumeOptions?.NoCopy]);
    assert.deepEqual(mounts, [
      ['volume', 'aegis-x-v0', '/agent', true, true],
      ['volume', 'aegis-x-v1', '/data/outputs', false, true],
    ]);
    assert.ok(!(h.Mounts ?? []).some((m) => m.Type === 'bind'), 'no host path');
  });
  it('refuses a bind it has no volume for, and a provided file only when read-only', () => {
    const config = dockerConfig(policy({ write: ['/data/outputs'] }), { volumes });
    const noCode: ContainerFacts = { ...remote(), engine: { kind: 'remote', volumes: { '/data/outputs': 'v1' }, provided: [] } };
    assert.throws(() => containerOptions(config, noCode), hasCode(SandboxError, 'sandbox.docker_refused'));
    const providedRw: ContainerFacts = {
      ...remote(),
      engine: { kind: 'remote', volumes: { '/agent': 'v0' }, provided: ['/data/outputs'] },
    };
    assert.throws(() => containerOptions(config, providedRw), hasCode(SandboxError, 'sandbox.docker_refused'));
  });
  it('a local run needs its cgroup; impossible limits are refused', () => {
    const config = dockerConfig(policy());
    assert.throws(() => containerOptions(config, { ...FACTS, cgroupParent: undefined }), hasCode(SandboxError, 'sandbox.docker_refused'));
    for (const limits of [
      { ...FACTS.limits, memoryBytes: 0 },
      { ...FACTS.limits, pids: -1 },
      { ...FACTS.limits, cpuPeriodUs: 1.5 },
    ])
      assert.throws(() => containerOptions(config, { ...remote(), limits }), hasCode(SandboxError, 'sandbox.docker_refused'));
  });
  it('rw volumes are bounded tmpfs volumes owned by the agent; read-only content plain volumes', () => {
    const v = volumeOptions({
      name: 'n',
      id: FACTS.id,
      owner: FACTS.owner,
      tmpfs: { bytes: 1 << 26, inodes: 4080, uid: 101000, gid: 101000 },
    });
    assert.deepEqual(v.DriverOpts, {
      type: 'tmpfs',
      device: 'tmpfs',
      o: `size=${1 << 26},nr_inodes=4080,uid=101000,gid=101000,mode=0700,nosuid,nodev`,
    });
    assert.equal(rwEngineInodes(4096), 4080, "the staged filesystem's free inodes, less a margin");
    assert.equal(rwEngineInodes(16_000_000), MAX_REMOTE_VOLUME_INODES);
    assert.equal(rwEngineInodes(3), 1);
    assert.equal(v.Labels?.[LABEL_RUN], FACTS.id);
    assert.equal(volumeOptions({ name: 'n', id: FACTS.id, owner: FACTS.owner }).DriverOpts, undefined);
    assert.throws(
      () => volumeOptions({ name: 'n', id: FACTS.id, owner: FACTS.owner, tmpfs: { bytes: 1.5, inodes: 1, uid: 0, gid: 0 } }),
      hasCode(SandboxError, 'sandbox.docker_refused'),
    );
  });
  it("an rw volume's engine size leaves room for the staged filesystem's own blocks", () => {
    const mib = 1024 * 1024;
    assert.equal(rwEngineBytes(16 * mib, 16 * mib), 15 * mib);
    assert.equal(rwEngineBytes(1024 * mib, 1024 * mib), 1008 * mib);
    assert.equal(rwEngineBytes(1024 * mib, 8 * mib), 8 * mib, 'never more than asked');
    assert.equal(rwEngineBytes(100, 100), 4096, 'at least a page (the read-back then fails rather than overflows)');
  });
  it('refuses an engine that says it cannot enforce a limit, and notices a limit the engine dropped', () => {
    const ok = { MemoryLimit: true, SwapLimit: true, CpuCfsQuota: true, CpuCfsPeriod: true, PidsLimit: true };
    assert.deepEqual(missingLimitSupport(ok), []);
    assert.deepEqual(missingLimitSupport({ ...ok, SwapLimit: false, PidsLimit: undefined }), ['SwapLimit', 'PidsLimit']);
    const config = dockerConfig(policy({ write: ['/data/outputs'] }), { volumes });
    const asked = containerOptions(config, remote()).HostConfig;
    assert.deepEqual(limitsNotKept(asked, { ...asked }), []);
    assert.deepEqual(limitsNotKept(asked, { ...asked, PidsLimit: 0, MemorySwap: -1 }), ['MemorySwap', 'PidsLimit']);
    assert.deepEqual(limitsNotKept(asked, undefined).sort(), ['CpuPeriod', 'CpuQuota', 'Memory', 'MemorySwap', 'PidsLimit']);
  });
  it('the keeper: nobody, no capability, no network, read-only root, the volumes rw', () => {
    const k = keeperOptions({ id: FACTS.id, image: FACTS.image, volumes: ['a', 'b'], owner: FACTS.owner });
    assert.equal(k.User, '65534:65534');
    const h = k.HostConfig!;
    assert.deepEqual([h.CapDrop, h.CapAdd, h.Privileged, h.NetworkMode, h.ReadonlyRootfs], [['ALL'], [], false, 'none', true]);
    assert.deepEqual(
      (h.Mounts ?? []).map((m) => [m.Source, m.Target, m.ReadOnly]),
      [
        ['a', '/v/0', false],
        ['b', '/v/1', false],
      ],
    );
  });
  it("the gateway's resolv.conf as engine DNS options; anything else refused", () => {
    assert.deepEqual(dnsOptions('# written by the AEGIS gateway\nnameserver 10.200.0.1\noptions timeout:2 attempts:2\n'), {
      Dns: ['10.200.0.1'],
      DnsSearch: [],
      DnsOptions: ['timeout:2', 'attempts:2'],
    });
    for (const bad of ['', 'nameserver 1.2.3.4 5.6.7.8', 'domain x', 'nameserver $(x)', 'sortlist 1.2.3.4'])
      assert.throws(() => dnsOptions(bad), hasCode(SandboxError, 'sandbox.docker_refused'), bad);
  });
});

describe('docker: bundle -> engine options', () => {
  it('maps every property of the bundle to the option that enforces it', () => {
    const config = dockerConfig(policy({ write: ['/data/outputs'], read: ['/data/inputs'] }), {
      volumes: [{ host: '/srv/in', sandbox: '/data/in', mode: 'ro' }],
    });
    const o = containerOptions(config, FACTS);
    const h = o.HostConfig!;
    assert.equal(o.Image, FACTS.image, 'created from the engine id, never a name');
    assert.equal(o.User, '101000:101000', 'the unprivileged host ids, no user namespace');
    assert.deepEqual([o.Entrypoint, o.Cmd, o.WorkingDir], [['python3'], ['main.py'], '/agent']);
    assert.ok(o.Env?.includes('MODE=test'));
    assert.equal(h.Privileged, false);
    assert.equal(h.ReadonlyRootfs, true);
    assert.deepEqual([h.CapDrop, h.CapAdd], [['ALL'], []]);
    assert.equal(h.SecurityOpt?.[0], 'no-new-privileges:true');
    assert.deepEqual(JSON.parse(h.SecurityOpt![1]!.replace(/^seccomp=/, '')), config.linux.seccomp, "AEGIS's own profile, as is");
    assert.deepEqual([h.Memory, h.MemorySwap, h.PidsLimit], [1 << 27, 1 << 27, 65]);
    assert.equal(h.CgroupParent, FACTS.cgroupParent);
    assert.equal(h.NetworkMode, 'none');
    assert.deepEqual(
      h.Mounts?.map((m) => [m.Target, m.Source, m.ReadOnly]),
      [
        ['/agent', '/srv/agent', true],
        ['/data/in', '/srv/in', true],
      ],
    );
    assert.match(h.Tmpfs?.['/tmp'] ?? '', /size=\d+/);
    assert.match(h.Tmpfs?.['/data/outputs'] ?? '', /size=/);
    assert.match(h.Tmpfs?.['/data/inputs'] ?? '', /(^|,)ro(,|$)/);
    for (const p of AEGIS_MASKED_PATHS) assert.ok(h.MaskedPaths?.includes(p), p);
    assert.ok(h.MaskedPaths?.includes('/sys/fs/cgroup'), "the engine's extra cgroup mount is masked");
    assert.match(h.Tmpfs?.['/tmp'] ?? '', /(^|,)exec(,|$)/, "the engine's default noexec is not added to what the bundle allows");
    assert.deepEqual(
      h.Ulimits?.find((u) => u.Name === 'nofile'),
      { Name: 'nofile', Soft: 1024, Hard: 1024 },
    );
    assert.deepEqual(h.LogConfig, { Type: 'none', Config: {} });
    assert.equal(o.Labels?.[LABEL_RUN], FACTS.id);
    assert.equal(o.Labels?.[LABEL_OWNER_PID], '4242');
  });

  it("joins the holder's network (and takes its hostname) when the bundle joins a namespace", () => {
    const config = dockerConfig(policy(), {
      network: { kind: 'netns', path: '/run/netns/aegis-x', resolvConf: '/run/aegis/net/x/resolv.conf' },
    });
    const o = containerOptions(config, { ...FACTS, network: { kind: 'container', holder: 'c0ffee' } });
    assert.equal(o.HostConfig?.NetworkMode, 'container:c0ffee');
    assert.equal(o.Hostname, undefined);
    assert.ok(o.HostConfig?.Mounts?.some((m) => m.Target === '/etc/resolv.conf' && m.ReadOnly));
    assert.match(o.HostConfig?.Tmpfs?.['/sys'] ?? '', /ro/);
    // A namespace path without a holder (or a holder without a path) is refused.
    assert.throws(() => containerOptions(config, FACTS), hasCode(SandboxError, 'sandbox.docker_refused'));
  });

  it('refuses what the engine cannot express instead of running weaker', () => {
    const base = dockerConfig(policy());
    const cases: [string, OciConfig][] = [
      [
        'a capability',
        { ...base, process: { ...base.process, capabilities: { ...base.process.capabilities, bounding: ['CAP_NET_RAW'] } } },
      ],
      ['no no-new-privileges', { ...base, process: { ...base.process, noNewPrivileges: false } }],
      ['a writable root', { ...base, root: { ...base.root, readonly: false } }],
      ['root', { ...base, process: { ...base.process, user: { uid: 0, gid: 0, additionalGids: [] } } }],
      ['a user namespace', { ...base, linux: { ...base.linux, namespaces: [...base.linux.namespaces, { type: 'user' }] } }],
      ['no pid namespace', { ...base, linux: { ...base.linux, namespaces: base.linux.namespaces.filter((n) => n.type !== 'pid') } }],
      ['an overlay mount', { ...base, mounts: [...base.mounts, { destination: '/x', type: 'overlay', source: 'o', options: [] }] }],
      [
        'a tmpfs without size',
        { ...base, mounts: [...base.mounts, { destination: '/y', type: 'tmpfs', source: 'tmpfs', options: ['nosuid'] }] },
      ],
      [
        'an odd tmpfs option',
        { ...base, mounts: [...base.mounts, { destination: '/z', type: 'tmpfs', source: 'tmpfs', options: ['size=1k', 'exec'] }] },
      ],
    ];
    for (const [what, c] of cases) assert.throws(() => containerOptions(c, FACTS), hasCode(SandboxError, 'sandbox.docker_refused'), what);
  });

  it('validates the docker bundle: no user namespace, but only with the unprivileged host ids', () => {
    const p = policy();
    const listing = new Map(dirsToList(mountTargets(p).top).map((d) => [d, d === '/' ? [] : ('missing' as const)]));
    const o: CompileOptions = { imageRootfs: IMAGE, imageListing: listing, codeDir: '/srv/agent', cgroupsPath: null, isolation: 'docker' };
    const b = compileBundle(p, o);
    const adapted = new DockerDriver().adapt(b.config);
    assert.doesNotThrow(() => validateBundle({ ...b, config: adapted }, o));
    const asHostUser = { ...adapted, process: { ...adapted.process, user: { uid: 1000, gid: 1000, additionalGids: [] } } };
    assert.throws(() => validateBundle({ ...b, config: asHostUser }, o), hasCode(SandboxError, 'sandbox.invalid_spec'));
    // crun may not drop its user namespace that way.
    assert.throws(
      () => validateBundle({ ...b, config: adapted }, { ...o, isolation: 'crun' }),
      hasCode(SandboxError, 'sandbox.invalid_spec'),
    );
  });

  it('the holder: CAP_SYS_ADMIN only, no network of its own, the namespace and the program read-only', () => {
    const h = holderOptions({
      id: FACTS.id,
      image: FACTS.image,
      program: '/run/aegis/bin/aegis-netns-holder',
      programTarget: '/aegis-netns-holder',
      netnsPath: '/run/netns/aegis-x',
      netnsTarget: NETNS_MOUNT,
      hostname: 'aegis',
      cgroupParent: FACTS.cgroupParent!,
      owner: FACTS.owner,
    });
    assert.deepEqual([h.HostConfig?.CapDrop, h.HostConfig?.CapAdd, h.HostConfig?.Privileged], [['ALL'], ['SYS_ADMIN'], false]);
    assert.equal(h.HostConfig?.NetworkMode, 'none');
    assert.ok(h.HostConfig?.Mounts?.every((m) => m.ReadOnly));
    assert.equal(h.Labels?.[LABEL_RUN], FACTS.id);
  });

  it('the holder program: a static x86-64 ELF that opens the mounted namespace', () => {
    const elf = netnsHolderElf();
    assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(elf.readUInt16LE(18), 0x3e);
    assert.ok(elf.includes(Buffer.from(NETNS_MOUNT + '\0')));
    assert.ok(elf.length < 512, `${elf.length} bytes`);
  });
});

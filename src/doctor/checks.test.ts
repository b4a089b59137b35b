import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cgroupLayout, type Check, evaluate, type HostFacts, type MicrovmFacts, planFixes, userAccess } from './checks.js';

// Captured on the AEGIS build hosts (Debian 12, 2026-11): /proc/self/mountinfo cgroup lines
// before the hugetlb fix, and /proc/cgroups.
const HYBRID_MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const HUGETLB_FIXED = `${HYBRID_MOUNTINFO}43 31 0:40 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb\n`;
/** After `mount -t tracefs tracefs /sys/kernel/tracing` (the runtime monitor). */
const TRACEFS = '1185 25 0:14 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw\n';
const PROC_CGROUPS = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	2	1	1
blkio	7	1	1
memory	4	25	1
devices	5	1	1
freezer	6	1	1
net_cls	0	1	1
perf_event	0	1	1
net_prio	0	1	1
hugetlb	0	1	1
pids	8	1	1
`;
const V2_MOUNTINFO = '30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n';

const ALL_TOOLS = Object.fromEntries(
  ['crun', 'runc', 'runsc', 'nft', 'ip', 'debootstrap', 'mkfs.ext4', 'bpftrace'].map((n) => [
    n,
    { path: `/usr/bin/${n}`, version: `${n} 1.0` },
  ]),
);

const DOCKER_OK = {
  host: 'unix:///var/run/docker.sock',
  unreachable: null,
  version: '20.10.24+dfsg1',
  apiVersion: '1.41',
  cgroupDriver: 'cgroupfs',
  cgroupVersion: '1',
  sameKernel: true,
  seccompRun: 'ok',
} as const;

function facts(over: Partial<HostFacts> = {}): HostFacts {
  return {
    euid: 0,
    os: { id: 'debian', versionId: '12' },
    commands: ALL_TOOLS,
    mountinfo: HUGETLB_FIXED + TRACEFS,
    btf: true,
    procCgroups: PROC_CGROUPS,
    v2Controllers: '',
    maxUserNamespaces: 96365,
    kvm: true,
    images: {
      dir: '/var/lib/aegis/images',
      storeExists: true,
      defaultRef: 'python:3.11',
      defaultImage: { ok: true, digest: `sha256:${'a'.repeat(64)}` },
    },
    docker: DOCKER_OK,
    ...over,
  };
}

const byId = (cs: Check[], id: string) => cs.find((c) => c.id === id);
const failing = (cs: Check[]) => cs.filter((c) => c.status === 'fail').map((c) => c.id);

describe('aegis doctor checks', () => {
  it('a prepared Debian 12 host passes every check', () => {
    const cs = evaluate(facts());
    assert.deepEqual(failing(cs), []);
    assert.deepEqual(planFixes(cs), []);
    assert.match(byId(cs, 'cgroup.layout')!.summary, /^cgroup hybrid/);
  });

  it('reads the hybrid layout of the build hosts', () => {
    const l = cgroupLayout(HYBRID_MOUNTINFO, 'hugetlb\n');
    assert.equal(l.mode, 'hybrid');
    assert.equal(l.v1['memory'], '/sys/fs/cgroup/memory');
    assert.equal(l.v1['systemd'], undefined, 'name= hierarchies are not controllers');
    assert.equal(l.v2Mount, '/sys/fs/cgroup/unified');
    assert.deepEqual(l.v2Controllers, ['hugetlb']);
    assert.equal(cgroupLayout(V2_MOUNTINFO, 'cpuset cpu io memory pids').mode, 'v2');
    assert.equal(cgroupLayout('', null).mode, 'none');
  });

  describe('when hugetlb is still on cgroup v2 in hybrid mode (crun: "cgroups in hybrid mode not supported")', () => {
    it('fails cgroup.crun_hybrid with the v1 mount as a safe fix', () => {
      const cs = evaluate(facts({ mountinfo: HYBRID_MOUNTINFO + TRACEFS, v2Controllers: 'hugetlb\n' }));
      assert.deepEqual(failing(cs), ['cgroup.crun_hybrid']);
      assert.deepEqual(planFixes(cs), [{ kind: 'mount-cgroup-v1', controllers: ['hugetlb'] }]);
      assert.match(byId(cs, 'cgroup.crun_hybrid')!.advice!, /mount -t cgroup -o hugetlb cgroup \/sys\/fs\/cgroup\/hugetlb/);
    });
  });

  describe('when packages are missing', () => {
    it('merges them into one apt-get install; crun and the tools fail, runc/runsc only warn', () => {
      const commands = { ...ALL_TOOLS, crun: null, runsc: null, nft: null, debootstrap: null };
      const cs = evaluate(facts({ commands }));
      assert.deepEqual(failing(cs), ['runtime.crun', 'tools.nft', 'tools.debootstrap']);
      assert.equal(byId(cs, 'runtime.runsc')!.status, 'warn');
      assert.deepEqual(planFixes(cs), [{ kind: 'apt', packages: ['crun', 'debootstrap', 'nftables', 'runsc'] }]);
    });
    it('fails without mkfs.ext4 (rw volumes live on their own ext4) and installs e2fsprogs', () => {
      const cs = evaluate(facts({ commands: { ...ALL_TOOLS, 'mkfs.ext4': null } }));
      assert.deepEqual(failing(cs), ['tools.mkfs.ext4']);
      assert.deepEqual(planFixes(cs), [{ kind: 'apt', packages: ['e2fsprogs'] }]);
    });
  });

  describe('when the default image is missing or broken', () => {
    it('missing: the fix builds it', () => {
      const cs = evaluate(
        facts({
          images: {
            dir: '/x',
            storeExists: false,
            defaultRef: 'python:3.11',
            defaultImage: { ok: false, code: 'image.not_found', message: 'no' },
          },
        }),
      );
      assert.deepEqual(failing(cs), ['images.default']);
      assert.deepEqual(planFixes(cs), [{ kind: 'build-image', ref: 'python:3.11' }]);
    });
    it('tampered: no automatic fix, advice to verify and rebuild', () => {
      const cs = evaluate(
        facts({
          images: {
            dir: '/x',
            storeExists: true,
            defaultRef: 'python:3.11',
            defaultImage: { ok: false, code: 'image.digest_mismatch', message: 'changed' },
          },
        }),
      );
      assert.deepEqual(failing(cs), ['images.default']);
      assert.deepEqual(planFixes(cs), []);
      assert.match(byId(cs, 'images.default')!.advice!, /aegis image verify python:3.11/);
    });
  });

  describe('when limit controllers are unusable', () => {
    it('v2 without pids delegated: pids fails with the subtree_control advice', () => {
      const cs = evaluate(facts({ mountinfo: V2_MOUNTINFO, v2Controllers: 'cpuset cpu io memory' }));
      assert.deepEqual(failing(cs), ['cgroup.pids']);
      assert.match(byId(cs, 'cgroup.pids')!.advice!, /\+pids > \/sys\/fs\/cgroup\/cgroup.subtree_control/);
      assert.equal(byId(cs, 'cgroup.crun_hybrid'), undefined, 'no hybrid check on a v2 host');
    });
    it('no cgroup filesystem at all', () => {
      const cs = evaluate(facts({ mountinfo: '', v2Controllers: null }));
      assert.deepEqual(failing(cs), ['cgroup.layout', 'cgroup.memory', 'cgroup.cpu', 'cgroup.pids']);
    });
  });

  it('warns (does not fail) for a non-Debian host and missing user namespaces', () => {
    const cs = evaluate(facts({ os: { id: 'ubuntu', versionId: '24.04' }, maxUserNamespaces: 0 }));
    assert.deepEqual(failing(cs), []);
    assert.deepEqual(
      cs.filter((c) => c.status === 'warn').map((c) => c.id),
      ['host.os', 'kernel.userns'],
    );
  });

  describe('runtime monitor (docs/monitoring.md)', () => {
    it('warns without bpftrace, tracefs or BTF, with the package and the tracefs mount as safe fixes', () => {
      const cs = evaluate(facts({ commands: { ...ALL_TOOLS, bpftrace: null }, mountinfo: HUGETLB_FIXED, btf: false }));
      assert.deepEqual(failing(cs), [], 'monitoring is optional unless AEGIS_MONITOR=on');
      assert.deepEqual(
        cs.filter((c) => c.status === 'warn').map((c) => c.id),
        ['monitor.bpftrace', 'monitor.tracefs', 'monitor.btf'],
      );
      assert.deepEqual(planFixes(cs), [{ kind: 'apt', packages: ['bpftrace'] }, { kind: 'mount-tracefs' }]);
    });
    it('says plainly what is not seen under gVisor', () => {
      const c = byId(evaluate(facts()), 'monitor.gvisor')!;
      assert.equal(c.status, 'ok');
      assert.match(c.summary, /resource samples and fs\.changes only/);
      assert.match(c.summary, /execs, opens and refused calls/);
    });
    it('a tracefs mounted elsewhere (e.g. under debugfs) is not the one the monitor checks', () => {
      const elsewhere = '1185 25 0:14 / /sys/kernel/debug/tracing rw,relatime - tracefs tracefs rw\n';
      assert.equal(byId(evaluate(facts({ mountinfo: HUGETLB_FIXED + elsewhere })), 'monitor.tracefs')!.status, 'warn');
    });
  });

  describe('when not root (regression: "host ready" and exit 0, though nothing could run)', () => {
    it('fails host.root and says what works as this user and what needs root', () => {
      const cs = evaluate(facts({ euid: 1000 }));
      assert.deepEqual(failing(cs), ['host.root']);
      const c = byId(cs, 'host.root')!;
      assert.match(c.summary, /uid 1000, not root/);
      assert.match(c.advice!, /as root \(sudo\): aegis run, .*aegis doctor --fix; as this user: aegis validate, aegis policy test\|show/);
      assert.equal(c.fix, undefined, 'nothing for --fix to do');
    });
    it('userAccess splits the commands', () => {
      assert.deepEqual(userAccess(0).needRoot, []);
      const u = userAccess(65534);
      assert.equal(u.root, false);
      assert.ok(u.asThisUser.includes('aegis validate'));
      assert.ok(u.needRoot.includes('aegis run'));
      assert.ok(!u.asThisUser.includes('aegis run'));
    });
  });
});

describe('docker engine checks', () => {
  it('all ok for a local cgroupfs engine that ran the seccomp profile', () => {
    const cs = evaluate(facts()).filter((c) => c.id.startsWith('docker.'));
    assert.deepEqual(
      cs.map((c) => [c.id, c.status]),
      [
        ['docker.engine', 'ok'],
        ['docker.cgroup_driver', 'ok'],
        ['docker.local', 'ok'],
        ['docker.seccomp', 'ok'],
      ],
    );
  });
  it('a missing engine is a warning with what to do (docker is optional), never a failure', () => {
    const cs = evaluate(facts({ docker: { host: 'unix:///var/run/docker.sock', unreachable: 'no socket' } })).filter((c) =>
      c.id.startsWith('docker.'),
    );
    assert.equal(cs.length, 1);
    assert.equal(cs[0]?.status, 'warn');
    assert.match(cs[0]?.advice ?? '', /docker\.io/);
  });
  it('warns about a systemd cgroup driver (local engine), an engine in a VM forced local, and a refused seccomp profile', () => {
    const cs = evaluate(
      facts({ docker: { ...DOCKER_OK, cgroupDriver: 'systemd', sameKernel: false, engineMode: 'local', seccompRun: 'invalid profile' } }),
    );
    for (const id of ['docker.cgroup_driver', 'docker.local', 'docker.seccomp']) assert.equal(byId(cs, id)?.status, 'warn', id);
    assert.match(byId(cs, 'docker.seccomp')?.summary ?? '', /invalid profile/);
    assert.match(byId(cs, 'docker.local')?.advice ?? '', /unset AEGIS_DOCKER_ENGINE/);
  });
  it('an engine in a VM (auto), or one forced remote, is used as a remote engine: its cgroup driver does not matter', () => {
    for (const docker of [
      { ...DOCKER_OK, cgroupDriver: 'systemd', sameKernel: false },
      { ...DOCKER_OK, cgroupDriver: 'systemd', sameKernel: true, engineMode: 'remote' as const },
    ]) {
      const cs = evaluate(facts({ docker }));
      assert.equal(byId(cs, 'docker.local')?.status, 'ok');
      assert.match(byId(cs, 'docker.local')?.summary ?? '', /remote engine/);
      assert.equal(byId(cs, 'docker.cgroup_driver')?.status, 'ok');
    }
  });
});

describe('aegis doctor: isolation microvm', () => {
  // What probe.ts found on the AEGIS build hosts (2026-11-30): /dev/kvm opens, QEMU aborts the
  // stock guest with KVM (its real message), emulation not allowed.
  const HERE: MicrovmFacts = {
    guestDir: '/var/lib/aegis/microvm',
    guest: '/var/lib/aegis/microvm/current',
    qemu: '/usr/bin/qemu-system-x86_64',
    allowEmulation: false,
    kvm: {
      result: 'fails',
      detail:
        "a stock guest kernel did not boot with KVM (QEMU SIGABRT: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.)",
      cached: true,
    },
  };
  const status = (m: MicrovmFacts, id: string) => byId(evaluate(facts({ microvm: m })), id);

  it('says that this KVM does not run a stock guest, and that runs are refused without emulation', () => {
    assert.equal(status(HERE, 'microvm.kvm')?.status, 'warn');
    assert.match(status(HERE, 'microvm.kvm')?.summary ?? '', /opens, but .*MSR 0x10a.*cached probe.*no proof/);
    const mode = status(HERE, 'microvm.mode');
    assert.equal(mode?.status, 'warn');
    assert.match(mode?.summary ?? '', /refused before start/);
    assert.match(mode?.advice ?? '', /AEGIS_MICROVM_ALLOW_EMULATION=1/);
    assert.deepEqual(failing(evaluate(facts({ microvm: HERE }))), [], 'microvm is optional: warnings only');
  });

  it('says runs use emulation when allowed, and KVM where the probe booted the guest', () => {
    assert.match(status({ ...HERE, allowEmulation: true }, 'microvm.mode')?.summary ?? '', /software emulation .*for testing only/);
    const works = { ...HERE, kvm: { result: 'works' as const, detail: 'booted', cached: false } };
    assert.equal(status(works, 'microvm.kvm')?.status, 'ok');
    assert.equal(status(works, 'microvm.mode')?.status, 'ok');
    assert.match(status({ ...works, allowEmulation: true }, 'microvm.mode')?.summary ?? '', /KVM works here: unset/);
  });

  it('says what to install or build when QEMU or the guest is missing (and --fix installs QEMU)', () => {
    const noQemu = evaluate(facts({ microvm: { ...HERE, qemu: null } }));
    assert.equal(byId(noQemu, 'microvm.qemu')?.status, 'warn');
    assert.deepEqual(planFixes(noQemu), [{ kind: 'apt', packages: ['qemu-system-x86'] }]);
    assert.match(byId(noQemu, 'microvm.mode')?.summary ?? '', /QEMU is missing/);
    const noGuest = status({ ...HERE, guest: null }, 'microvm.guest');
    assert.equal(noGuest?.status, 'warn');
    assert.match(noGuest?.advice ?? '', /build-guest\.sh \/var\/lib\/aegis\/microvm/);
    const old = status({ ...HERE, guestProblem: 'the guest speaks protocol "1", this AEGIS 2' }, 'microvm.guest');
    assert.equal(old?.status, 'warn');
    assert.match(old?.summary ?? '', /cannot be used: .*protocol "1"/);
    assert.match(status({ ...HERE, guestProblem: 'x' }, 'microvm.mode')?.summary ?? '', /must be rebuilt/);
    assert.match(
      status({ ...HERE, kvm: { result: 'no_device', detail: '/dev/kvm is absent', cached: false } }, 'microvm.kvm')?.summary ?? '',
      /no usable KVM/,
    );
  });
});

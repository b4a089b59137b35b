import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { OciConfig } from '../spec/oci.js';
import { GUEST_LINK } from '../../gateway/netns/plan.js';
import {
  guestProtocolProblem,
  MICROVM_GUEST_PROTOCOL,
  parseGuestStatus,
  planKvmProbe,
  planMicrovm,
  shellQuote,
  tapSetupScript,
  tapTeardownScript,
  type MicrovmPlanInput,
} from './microvm-plan.js';

function config(over: Partial<OciConfig['process']> = {}, mounts: OciConfig['mounts'] = []): OciConfig {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 1000, gid: 1000, additionalGids: [] },
      args: ['python3', 'main.py'],
      env: ['PATH=/usr/bin:/bin', 'HOME=/tmp'],
      cwd: '/agent',
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
      ...over,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'sandbox',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: [] },
      { destination: '/usr', type: 'bind', source: '/img/rootfs/usr', options: ['rbind', 'ro', 'nosuid', 'nodev'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', 'size=67108864'] },
      { destination: '/data/out', type: 'bind', source: '/run/vol,0', options: ['rbind', 'nosuid', 'nodev'] },
      ...mounts,
    ],
    linux: {
      uidMappings: [],
      gidMappings: [],
      namespaces: [],
      seccomp: { defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 1, architectures: [], syscalls: [] },
      maskedPaths: [],
      readonlyPaths: [],
    },
    annotations: {},
  } as OciConfig;
}

const input = (c: OciConfig, accel: 'kvm' | 'tcg' = 'tcg', network = false): MicrovmPlanInput => ({
  config: c,
  bundleDir: '/run/aegis/runs/x/bundle',
  specDir: '/run/aegis/runs/x/bundle/microvm-spec',
  kernel: '/g/vmlinuz',
  initrd: '/g/initramfs.cpio.gz',
  sockets: { stdin: '/b/vm.i', stdout: '/b/vm.o', stderr: '/b/vm.e', status: '/b/vm.s', control: '/b/vm.c' },
  consoleFile: '/b/console.log',
  accel,
  guestMemoryBytes: 128 * 1024 * 1024,
  agentMemoryBytes: 64 * 1024 * 1024,
  guestPids: 64,
  seccompFile: 'seccomp.bpf',
  runAs: { uid: 101000, gid: 101000 },
  tscKhz: 2_596_122,
  fileSources: new Set(['/img/rootfs/etc/.pwd.lock']),
  network,
});

describe('planMicrovm', () => {
  it('shares each bind mount read-only unless the bundle mounts it rw, and nothing else of the host', () => {
    const p = planMicrovm(input(config()));
    assert.ok(!('error' in p));
    const fsdevs = p.qemuArgs.filter((_a, i) => p.qemuArgs[i - 1] === '-fsdev');
    assert.deepEqual(fsdevs, [
      'local,id=aegis_skel,path=/run/aegis/runs/x/bundle/rootfs,security_model=none,readonly=on',
      'local,id=aegis_m1,path=/img/rootfs/usr,security_model=none,readonly=on',
      // QEMU's comma escape: the path is not cut at the comma.
      'local,id=aegis_m2,path=/run/vol,,0,security_model=none',
      'local,id=aegis_spec,path=/run/aegis/runs/x/bundle/microvm-spec,security_model=none,readonly=on',
    ]);
    assert.match(p.specScript, /^ {2}share aegis_m1 '\/usr' ro$/m);
    assert.match(p.specScript, /^ {2}share aegis_m2 '\/data\/out' rw$/m);
    assert.match(p.specScript, /^ {2}tmp '\/tmp' '67108864' '1777'$/m);
  });

  it('shares a bind-mounted file through its folder, read-only, and refuses a writable one', () => {
    const f = { destination: '/etc/.pwd.lock', type: 'bind', source: '/img/rootfs/etc/.pwd.lock', options: ['rbind', 'ro'] };
    const p = planMicrovm(input(config({}, [f])));
    assert.ok(!('error' in p));
    assert.ok(p.qemuArgs.includes('local,id=aegis_d3,path=/img/rootfs/etc,security_model=none,readonly=on'));
    assert.match(p.specScript, /^ {2}file aegis_d3 '.pwd.lock' '\/etc\/.pwd.lock'$/m);
    const rw = planMicrovm(input(config({}, [{ ...f, options: ['rbind'] }])));
    assert.ok('error' in rw && /read-write file bind/.test(rw.error));
  });

  it('shares the image once for its read-only folders (24 virtio-mmio slots), each folder bound from it', () => {
    const dirs = ['etc', 'var', 'opt'].map((d) => ({
      destination: `/${d}`,
      type: 'bind',
      source: `/img/rootfs/${d}`,
      options: ['rbind', 'ro'],
    }));
    const p = planMicrovm(input(config({}, dirs)));
    assert.ok(!('error' in p));
    const fsdevs = p.qemuArgs.filter((_a, n) => p.qemuArgs[n - 1] === '-fsdev');
    assert.equal(fsdevs.filter((f) => f.includes('path=/img/rootfs,')).length, 1);
    assert.ok(!fsdevs.some((f) => f.includes('path=/img/rootfs/etc')));
    assert.match(p.specScript, /^ {2}subdir aegis_d\d+ 'etc' '\/etc'$/m);
    assert.match(p.specScript, /^ {2}subdir aegis_d\d+ 'usr' '\/usr'$/m);
  });

  it('has no NIC, no defaults, the seccomp sandbox, an unprivileged uid and the guest memory asked for', () => {
    const p = planMicrovm(input(config()));
    assert.ok(!('error' in p));
    const a = p.qemuArgs;
    const after = (flag: string): string | undefined => a[a.indexOf(flag) + 1];
    assert.equal(after('-nic'), 'none');
    assert.ok(a.includes('-nodefaults') && a.includes('-no-user-config') && a.includes('-no-reboot'));
    assert.match(after('-sandbox') ?? '', /^on,.*spawn=deny/);
    assert.equal(after('-runas'), '101000:101000');
    assert.equal(after('-m'), '128M');
    assert.equal(after('-accel'), 'tcg,tb-size=32');
    assert.match(after('-append') ?? '', /tsc_early_khz=2596122/);
    assert.ok(!a.some((x) => /virtio-net|-netdev|tap|pci/.test(x)), 'no network device, no PCI');
    assert.match(p.specScript, /^AEGIS_NET_ADDR=''$/m);
  });

  describe('when the run has a network (the gateway namespace)', () => {
    it('gets exactly one virtio-net device on the namespace tap, addressed on the guest link, IPv6 off', () => {
      const p = planMicrovm(input(config(), 'tcg', true));
      assert.ok(!('error' in p));
      const a = p.qemuArgs;
      assert.deepEqual(
        a.filter((_x, n) => a[n - 1] === '-netdev'),
        [`tap,id=net0,ifname=${GUEST_LINK.tap},script=no,downscript=no,vhost=off`],
      );
      assert.equal(a.filter((x) => x.startsWith('virtio-net-device,')).length, 1);
      assert.equal(a[a.indexOf('-nic') + 1], 'none', 'no default NIC besides it');
      assert.match(a[a.indexOf('-append') + 1] ?? '', /ipv6\.disable=1/);
      assert.match(p.specScript, new RegExp(`^AEGIS_NET_ADDR='${GUEST_LINK.guest}/30'$`, 'm'));
      assert.match(p.specScript, new RegExp(`^AEGIS_NET_GW='${GUEST_LINK.namespace}'$`, 'm'));
    });

    it('leaves one virtio-mmio slot fewer for shares', () => {
      const many = Array.from({ length: 19 }, (_x, n) => ({
        destination: `/v${n}`,
        type: 'bind',
        source: `/vols/v${n}`,
        options: ['rbind', 'nosuid', 'nodev'],
      }));
      // skeleton + /usr + /data/out + 19 + spec = 23: room without a NIC, one too many with it.
      assert.ok(!('error' in planMicrovm(input(config({}, many)))));
      const p = planMicrovm(input(config({}, many), 'tcg', true));
      assert.ok('error' in p && /room for 22/.test(p.error), JSON.stringify(p));
    });

    it('makes the tap in the namespace and forwards only where the gateway filters (guest_out)', () => {
      const s = tapSetupScript({ ip: '/sbin/ip', nft: '/usr/sbin/nft' });
      assert.match(s, /^set -e$/m);
      assert.match(s, new RegExp(`^/sbin/ip tuntap add dev ${GUEST_LINK.tap} mode tap$`, 'm'));
      assert.match(
        s,
        /^if \/usr\/sbin\/nft list chain inet aegis guest_out >\/dev\/null 2>&1; then echo 1 > \/proc\/sys\/net\/ipv4\/ip_forward; fi$/m,
      );
      assert.match(tapTeardownScript({ ip: '/sbin/ip' }), /^echo 0 > \/proc\/sys\/net\/ipv4\/ip_forward$/m);
      assert.throws(() => tapSetupScript({ ip: '/sbin/ip; reboot', nft: 'nft' }));
    });
  });

  it("gives the guest's init the agent's limits, its seccomp program, and the stdin and control ports", () => {
    const p = planMicrovm(input(config()));
    assert.ok(!('error' in p));
    assert.match(p.specScript, /^AEGIS_MEMORY=67108864$/m);
    assert.match(p.specScript, /^AEGIS_NPROC=64$/m);
    assert.match(p.specScript, /^AEGIS_SECCOMP='\/mnt\/spec\/seccomp.bpf'$/m);
    const ports = p.qemuArgs.filter((x) => x.startsWith('virtserialport,'));
    assert.deepEqual(
      ports.map((x) => /name=(aegis\.\w+)/.exec(x)?.[1]),
      ['aegis.stdout', 'aegis.stderr', 'aegis.status', 'aegis.stdin', 'aegis.control'],
    );
    assert.ok(p.qemuArgs.includes('socket,id=stdin,path=/b/vm.i') && p.qemuArgs.includes('socket,id=control,path=/b/vm.c'));
    const bad = planMicrovm({ ...input(config()), seccompFile: '../x' });
    assert.ok('error' in bad);
  });

  it('quotes the environment and arguments for the guest shell (no expansion, no injection)', () => {
    const evil = `$(reboot -f)'; echo pwned; '`;
    const p = planMicrovm(input(config({ args: ['python3', '-c', evil], env: ['A=b c', `B=${evil}`] })));
    assert.ok(!('error' in p));
    assert.match(p.specScript, /^AEGIS_NENV=2$/m);
    const set = p.specScript.split('\n').find((l) => l.startsWith('set -- '));
    assert.equal(set, `set -- 'A=b c' ${shellQuote(`B=${evil}`)} 'python3' '-c' ${shellQuote(evil)}`);
    assert.equal(shellQuote(`a'b`), `'a'\\''b'`);
  });

  it('refuses what the guest cannot apply (fail secure)', () => {
    for (const [c, why] of [
      [config({}, [{ destination: '/x', type: 'overlay', source: 'o', options: [] }]), /mount type "overlay"/],
      [config({}, [{ destination: 'rel', type: 'tmpfs', source: 't', options: [] }]), /not a plain absolute path/],
      [config({}, [{ destination: '/a/../b', type: 'tmpfs', source: 't', options: [] }]), /not a plain absolute path/],
      [config({ args: [] }), /entrypoint is empty/],
      [config({ env: ['NOEQUALS'] }), /NAME=value/],
    ] as const) {
      const p = planMicrovm(input(c));
      assert.ok('error' in p);
      assert.match(p.error, why);
    }
  });
});

describe('parseGuestStatus (the status port, untrusted text)', () => {
  it('reads started, exit, oom and pids lines', () => {
    assert.deepEqual(parseGuestStatus('started\noom\nexit 137\n'), {
      started: true,
      exit: 137,
      fail: null,
      oom: true,
      pidsLimitHit: false,
    });
    assert.deepEqual(parseGuestStatus('started\npids\nexit 0\n'), { started: true, exit: 0, fail: null, oom: false, pidsLimitHit: true });
    assert.deepEqual(parseGuestStatus('fail spec\n'), { started: false, exit: null, fail: 'spec', oom: false, pidsLimitHit: false });
  });
  it('keeps the first exit and ignores malformed lines', () => {
    const s = parseGuestStatus('exit 3\nexit 4\nexit 256\nexit -1\nexit 01\n started\nOOM\nexit 7x');
    assert.equal(s.exit, 3);
    assert.equal(s.started, false);
    assert.equal(s.oom, false);
    assert.equal(parseGuestStatus('exit 256\nexit 01\n').exit, null);
    assert.equal(parseGuestStatus('exit 255').exit, 255);
    assert.equal(parseGuestStatus(''.padEnd(10, 'x')).exit, null);
  });
});

describe('guestProtocolProblem', () => {
  it('accepts only a guest built from an init of this protocol (an older init would skip the seccomp filter and limits)', () => {
    assert.equal(guestProtocolProblem(`${MICROVM_GUEST_PROTOCOL}\n`), null);
    assert.match(guestProtocolProblem(null) ?? '', /no protocol file/);
    assert.match(guestProtocolProblem('1\n') ?? '', /protocol "1"/);
    assert.match(guestProtocolProblem('') ?? '', /protocol ""/);
  });
});

describe('planKvmProbe', () => {
  it("boots the run's guest with the run's KVM machine and CPU options, and nothing shared", () => {
    const probe = planKvmProbe({ kernel: '/g/vmlinuz', initrd: '/g/initramfs.cpio.gz', runAs: { uid: 101000, gid: 101000 } });
    const run = planMicrovm(input(config(), 'kvm'));
    assert.ok(!('error' in run));
    const after = (a: string[], flag: string): string | undefined => a[a.indexOf(flag) + 1];
    for (const flag of ['-M', '-accel', '-cpu', '-kernel', '-initrd', '-sandbox', '-runas'])
      assert.equal(after(probe, flag), after(run.qemuArgs, flag), flag);
    assert.match(after(probe, '-append') ?? '', /(^| )aegis\.probe=1( |$)/);
    assert.ok(!probe.some((x) => /fsdev|virtio|socket|netdev/.test(x)), 'no share, no port, no NIC');
    const tcg = planKvmProbe({ kernel: 'k', initrd: 'i', runAs: { uid: 1, gid: 1 }, accel: 'tcg', tscKhz: 2_596_122 });
    assert.ok(!tcg.includes('-cpu'));
    assert.match(after(tcg, '-append') ?? '', /tsc_early_khz=2596122/);
  });
});

/**
 * The microVM plan (pure): how a validated OCI bundle becomes a QEMU `microvm` command line and
 * the spec script the guest's init reads (scripts/microvm/init). No I/O, no clock, no env: the
 * launcher (microvm-launcher.ts) resolves paths and limits and runs the plan.
 *
 * ARCHITECTURE NOTE (device model): `-M microvm` with no PCI bus, no ACPI tables beyond the
 * machine's own, `-nodefaults -no-user-config`, no default NIC (`-nic none`), no USB, no display.
 * Devices: one virtio-serial (five ports: the agent's stdin, stdout and stderr, init's status
 * line, the host's control line to init), one virtio-9p device per shared directory (the bundle's
 * skeleton, each bind mount, the spec), the ISA serial console to a log file, and ONLY when the
 * run has a network (the gateway's namespace) one virtio-net device on the tap GUEST_LINK.tap of
 * that namespace. Everything the guest sees of the host is those shares, each read-only unless
 * the bundle mounts it read-write, and that link.
 */
import { GUEST_LINK } from '../../gateway/netns/plan.js';
import type { OciConfig } from '../spec/oci.js';

/** Host memory the VMM needs above the guest's RAM (QEMU with TCG, tb-size 32 MiB), counted in the run's cgroup. */
export const MICROVM_VMM_OVERHEAD_BYTES = 160 * 1024 * 1024;
/**
 * Guest RAM above the agent's memory limit, for the guest kernel and its init: the guest gets the
 * manifest's memory plus this, and the agent's own cgroup inside the guest is held to the
 * manifest's memory (an OOM there is reported as `oom`).
 */
export const MICROVM_GUEST_KERNEL_BYTES = 64 * 1024 * 1024;
/** Guest RAM below which the guest kernel and init do not boot. */
export const MICROVM_MIN_GUEST_BYTES = 96 * 1024 * 1024;
/** Host tasks of QEMU in the run's cgroup (main loop, vCPU, RCU, worker threads of 9p). */
export const MICROVM_PIDS_OVERHEAD = 64;

/**
 * The host/guest protocol this plan and launcher speak (the ports, the spec script's variables,
 * aegis-exec's arguments): scripts/microvm/init declares it (`# aegis-guest-protocol: N`) and
 * build-guest.sh writes it to the guest's `protocol` file. A guest built from another init is
 * refused (fail secure: an older init would run the agent without its seccomp filter or limits).
 * 3: the guest's network (AEGIS_NET_ADDR/AEGIS_NET_GW, net_up; virtio_net in the initramfs).
 */
export const MICROVM_GUEST_PROTOCOL = 3;

/** Why the guest's `protocol` file (its text, or null when missing) does not match, or null when it does. */
export function guestProtocolProblem(text: string | null): string | null {
  if (text === null) return 'the guest has no protocol file (built by an older build-guest.sh)';
  const v = text.trim();
  if (v !== String(MICROVM_GUEST_PROTOCOL))
    return `the guest speaks protocol ${JSON.stringify(v.slice(0, 20))}, this AEGIS ${MICROVM_GUEST_PROTOCOL}`;
  return null;
}

/** Files of the bundle the launcher writes and the driver reads (microvm-launcher.ts, microvm.ts). */
export const MICROVM_RELAY_SOCKET = 'vm.k';
export const MICROVM_GUEST_REPORT = 'microvm-guest.json';

export type MicrovmAccel = 'kvm' | 'tcg';

export interface MicrovmPlanInput {
  readonly config: OciConfig;
  /** Absolute path of the bundle (root.path is relative to it). */
  readonly bundleDir: string;
  /** Host directory the spec script is written to (shared read-only as `aegis_spec`). */
  readonly specDir: string;
  readonly kernel: string;
  readonly initrd: string;
  /**
   * Unix sockets the launcher listens on, one per port (QEMU connects as a client): the agent's
   * stdin, stdout and stderr, the init's status lines, and the host's control messages to the
   * init (`term`). The console goes to a log file.
   */
  readonly sockets: {
    readonly stdin: string;
    readonly stdout: string;
    readonly stderr: string;
    readonly status: string;
    readonly control: string;
  };
  readonly consoleFile: string;
  readonly accel: MicrovmAccel;
  readonly guestMemoryBytes: number;
  /** The agent's memory limit inside the guest (its cgroup's memory.max): the manifest's memory. */
  readonly agentMemoryBytes: number;
  /** The agent's task limit inside the guest (its cgroup's pids.max): the manifest's pids. */
  readonly guestPids: number;
  /** File name, in the spec share, of the compiled seccomp program (seccomp-bpf.ts) the agent runs under. */
  readonly seccompFile: string;
  /** Host uid:gid QEMU drops to after opening its files (`-runas`). */
  readonly runAs: { readonly uid: number; readonly gid: number };
  /** The host CPU's TSC rate in kHz (/proc/cpuinfo), or null when unknown. */
  readonly tscKhz: number | null;
  /** Bind sources that are files, not directories (9p shares directories: their folder is shared). */
  readonly fileSources: ReadonlySet<string>;
  /**
   * The run joins a network namespace (the gateway's): QEMU runs in it and the guest gets one
   * virtio-net device on the tap GUEST_LINK.tap there, addressed GUEST_LINK.guest. False: no NIC.
   */
  readonly network: boolean;
}

export interface MicrovmPlan {
  readonly qemuArgs: string[];
  /** The spec script (`run.sh`) for the guest's init. */
  readonly specScript: string;
}

export type MicrovmPlanError = { readonly error: string };

/** Single-quoted for a POSIX shell: nothing inside is interpreted. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A QEMU option value: commas are doubled (QEMU's escape), anything else is passed as is. */
function qemuValue(s: string): string {
  return s.replace(/,/g, ',,');
}

const SAFE_ABSOLUTE = /^\/[^\0\n]*$/;
/** virtio-mmio slots of the microvm machine (24) minus the virtio-serial device (and the NIC, when there is one). */
const MAX_SHARES = 23;
/** The guest NIC's MAC address (locally administered; one NIC per VM, alone on its link). */
export const MICROVM_GUEST_MAC = '52:54:00:a3:91:02';

function sizeOf(options: readonly string[], fallback: string): string {
  const o = options.find((x) => x.startsWith('size='));
  return o === undefined ? fallback : o.slice('size='.length);
}

function modeOf(options: readonly string[], fallback: string): string {
  const o = options.find((x) => x.startsWith('mode='));
  return o === undefined ? fallback : o.slice('mode='.length);
}

/** Guest-side handling of the mounts the guest builds itself (proc, sys, dev and its children). */
const GUEST_OWN = new Set(['/proc', '/sys', '/dev', '/dev/pts', '/dev/shm', '/dev/mqueue']);

/**
 * QEMU's own seccomp filter for every QEMU AEGIS starts (the run and the KVM probe): no obsolete
 * calls, no spawning, no resource control (`elevateprivileges=deny` would kill it at -runas).
 */
const QEMU_SANDBOX = 'on,obsolete=deny,spawn=deny,resourcecontrol=deny';

/**
 * Builds the plan, or says why the bundle cannot run in a microVM (fail secure: an unknown mount
 * type, a relative destination or an argument the guest cannot pass refuses the run).
 */
export function planMicrovm(i: MicrovmPlanInput): MicrovmPlan | MicrovmPlanError {
  const c = i.config;
  const shares: { tag: string; path: string; readonly: boolean }[] = [];
  const lines: string[] = [];
  const rootSize = 64 * 1024 * 1024;
  lines.push(`root_tmpfs ${rootSize}`);
  const skel = c.root.path.startsWith('/') ? c.root.path : `${i.bundleDir}/${c.root.path}`;
  shares.push({ tag: 'aegis_skel', path: skel, readonly: true });
  lines.push('skeleton aegis_skel');
  lines.push('proc_sys');
  // ARCHITECTURE NOTE: the microvm machine has 24 virtio-mmio slots (one is the serial device), so
  // read-only directory binds of one parent folder (the image's /usr, /etc, /var...) share that
  // folder once and are bind-mounted from it in the guest: the guest kernel sees the whole folder
  // (the image), the agent only what the bundle mounts.
  const parentOf = (p: string): string => p.slice(0, Math.max(1, p.lastIndexOf('/')));
  const roDirParents = new Map<string, number>();
  for (const m of c.mounts)
    if (m.type === 'bind' && m.options.includes('ro') && !i.fileSources.has(m.source))
      roDirParents.set(parentOf(m.source), (roDirParents.get(parentOf(m.source)) ?? 0) + 1);
  for (const m of c.mounts) {
    if (!SAFE_ABSOLUTE.test(m.destination) || m.destination.split('/').includes('..'))
      return { error: `mount destination ${JSON.stringify(m.destination)} is not a plain absolute path` };
    if (GUEST_OWN.has(m.destination)) continue;
    if (m.type === 'bind') {
      if (!SAFE_ABSOLUTE.test(m.source)) return { error: `bind source ${JSON.stringify(m.source)} is not absolute` };
      const ro = m.options.includes('ro');
      if (ro && !i.fileSources.has(m.source) && (roDirParents.get(parentOf(m.source)) ?? 0) >= 2) {
        const dir = parentOf(m.source);
        let tag = shares.find((s) => s.path === dir && s.readonly && s.tag.startsWith('aegis_d'))?.tag;
        if (tag === undefined) {
          tag = `aegis_d${shares.length}`;
          shares.push({ tag, path: dir, readonly: true });
        }
        lines.push(`subdir ${tag} ${shellQuote(m.source.slice(dir.length + 1))} ${shellQuote(m.destination)}`);
        continue;
      }
      if (i.fileSources.has(m.source)) {
        // A file: its folder is shared read-only (only the guest kernel sees the siblings), the
        // file bind-mounted read-only at its destination. A writable file bind is refused.
        if (!ro) return { error: `a read-write file bind (${m.destination}) is not supported in a microVM` };
        const slash = m.source.lastIndexOf('/');
        const dir = m.source.slice(0, Math.max(1, slash));
        let tag = shares.find((s) => s.path === dir && s.readonly && s.tag.startsWith('aegis_d'))?.tag;
        if (tag === undefined) {
          tag = `aegis_d${shares.length}`;
          shares.push({ tag, path: dir, readonly: true });
        }
        lines.push(`file ${tag} ${shellQuote(m.source.slice(slash + 1))} ${shellQuote(m.destination)}`);
        continue;
      }
      const tag = `aegis_m${shares.length}`;
      shares.push({ tag, path: m.source, readonly: ro });
      lines.push(`share ${tag} ${shellQuote(m.destination)} ${ro ? 'ro' : 'rw'}`);
    } else if (m.type === 'tmpfs') {
      const noexec = m.options.includes('noexec') ? ' noexec' : '';
      lines.push(
        `tmp ${shellQuote(m.destination)} ${shellQuote(sizeOf(m.options, '64m'))} ${shellQuote(modeOf(m.options, '755'))}${noexec}`,
      );
    } else {
      return { error: `mount type ${JSON.stringify(m.type)} at ${m.destination} is not supported in a microVM` };
    }
  }
  const p = c.process;
  if (!/^[A-Za-z0-9._-]+$/.test(i.seccompFile)) return { error: 'the seccomp program file name is not plain' };
  if (!Number.isSafeInteger(i.agentMemoryBytes) || i.agentMemoryBytes <= 0)
    return { error: 'the agent memory limit is not a positive integer' };
  const program = p.args[0];
  if (program === undefined || program === '') return { error: 'the entrypoint is empty' };
  if ([...p.args, ...p.env, p.cwd].some((s) => s.includes('\0'))) return { error: 'an argument or variable contains NUL' };
  if (!p.env.every((e) => /^[^=]+=/.test(e))) return { error: 'an environment entry is not NAME=value' };
  const nofile = p.rlimits.find((r) => r.type === 'RLIMIT_NOFILE')?.soft ?? 1024;
  const spec = [
    '# Written by the AEGIS microVM launcher for the guest init (scripts/microvm/init). Every value is single-quoted.',
    // The agent's guest ids are the host ids the other drivers map it to (runAs, 101000): 9p shows
    // host ownership, so the agent owns its rw volumes' files exactly as under crun's mapping.
    `AEGIS_UID=${i.runAs.uid}`,
    `AEGIS_GID=${i.runAs.gid}`,
    `AEGIS_CWD=${shellQuote(p.cwd)}`,
    `AEGIS_NOFILE=${nofile}`,
    `AEGIS_NPROC=${i.guestPids}`,
    `AEGIS_MEMORY=${Math.floor(i.agentMemoryBytes)}`,
    `AEGIS_SECCOMP=${shellQuote(`/mnt/spec/${i.seccompFile}`)}`,
    `AEGIS_NENV=${p.env.length}`,
    // The guest's network (init's net_up): empty without a network, then the guest has no NIC.
    `AEGIS_NET_ADDR=${i.network ? shellQuote(`${GUEST_LINK.guest}/${GUEST_LINK.prefix}`) : "''"}`,
    `AEGIS_NET_GW=${i.network ? shellQuote(GUEST_LINK.namespace) : "''"}`,
    'aegis_mounts() {',
    ...lines.map((l) => `  ${l}`),
    '}',
    // The environment, then the command line (aegis-exec takes AEGIS_NENV variables, then the program).
    `set -- ${[...p.env, ...p.args].map(shellQuote).join(' ')}`,
    '',
  ].join('\n');

  const mib = Math.floor(i.guestMemoryBytes / (1024 * 1024));
  // tsc_early_khz, lpj, no_timer_check: under TCG on a loaded host the kernel's TSC calibration
  // against the PIT fails ("Unable to calibrate against PIT"), the clock stands still and the boot
  // hangs (seen here in about half the boots); the host's TSC rate skips that calibration.
  const append = [
    'console=ttyS0',
    'quiet',
    'loglevel=1',
    'panic=-1',
    'oops=panic',
    'rdinit=/init',
    'random.trust_cpu=on',
    'no_timer_check',
    'lpj=2000000',
    // IPv6 off in the guest kernel: the sandbox's namespace forwards no IPv6 (an IPv6 socket fails
    // with EAFNOSUPPORT in the guest, where crun's agent gets a refused, counted packet).
    ...(i.network ? ['ipv6.disable=1'] : []),
    ...(i.tscKhz !== null ? [`tsc_early_khz=${i.tscKhz}`] : []),
  ].join(' ');
  const args = [
    '-M',
    // The guest's wall clock: under KVM from kvm-clock; under TCG from the ISA RTC (rtc=on), read
    // by the guest kernel at boot. Without it the guest starts in 1970 and every TLS certificate
    // is "not yet valid" (seen with the first network runs).
    i.accel === 'kvm'
      ? 'microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on'
      : 'microvm,x-option-roms=off,rtc=on,isa-serial=on',
    '-accel',
    i.accel === 'kvm' ? 'kvm' : 'tcg,tb-size=32',
    // Under TCG the default CPU model: with `-cpu max` this kernel hangs calibrating the TSC.
    ...(i.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp',
    '1',
    '-m',
    `${mib}M`,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-sandbox',
    QEMU_SANDBOX,
    '-runas',
    `${i.runAs.uid}:${i.runAs.gid}`,
    '-kernel',
    i.kernel,
    '-initrd',
    i.initrd,
    '-append',
    append,
    '-chardev',
    `file,id=con,path=${qemuValue(i.consoleFile)}`,
    '-serial',
    'chardev:con',
    '-device',
    'virtio-serial-device,max_ports=8',
  ];
  for (const [id, path] of [
    ['stdout', i.sockets.stdout],
    ['stderr', i.sockets.stderr],
    ['status', i.sockets.status],
    ['stdin', i.sockets.stdin],
    ['control', i.sockets.control],
  ] as const) {
    args.push('-chardev', `socket,id=${id},path=${qemuValue(path)}`, '-device', `virtserialport,chardev=${id},name=aegis.${id}`);
  }
  if (i.network) {
    // ARCHITECTURE NOTE: the tap exists already (the launcher made it in the run's namespace, where
    // QEMU runs) and QEMU opens it before -runas; no helper script, no vhost (no /dev/vhost-net).
    args.push(
      '-netdev',
      `tap,id=net0,ifname=${GUEST_LINK.tap},script=no,downscript=no,vhost=off`,
      '-device',
      `virtio-net-device,netdev=net0,mac=${MICROVM_GUEST_MAC}`,
    );
  }
  const all = [...shares, { tag: 'aegis_spec', path: i.specDir, readonly: true }];
  const room = MAX_SHARES - (i.network ? 1 : 0);
  if (all.length > room) return { error: `the bundle needs ${all.length} shared folders; a microVM has room for ${room}` };
  for (const s of all) {
    args.push(
      '-fsdev',
      `local,id=${s.tag},path=${qemuValue(s.path)},security_model=none${s.readonly ? ',readonly=on' : ''}`,
      '-device',
      `virtio-9p-device,fsdev=${s.tag},mount_tag=${s.tag}`,
    );
  }
  return { qemuArgs: args, specScript: spec };
}

/** A word of a generated script: absolute tool paths and the plan's constants only. */
function word(w: string): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(w)) throw new Error(`refusing to put ${JSON.stringify(w)} in a generated script`);
  return w;
}

/**
 * The `sh -c` script the launcher runs inside the run's network namespace (`nsenter --net=`)
 * before QEMU starts: a tap device GUEST_LINK.tap (a leftover of the same name is removed first),
 * the namespace's end of the guest's link addressed and up, and IPv4 forwarding on in that
 * namespace alone, ONLY when the namespace holds the gateway's `guest_out` chain (the filter of
 * the guest's packets, src/gateway/netns/plan.ts). In a namespace without it (one a caller made
 * itself) nothing is forwarded: the guest reaches the namespace and nothing beyond (fail secure).
 * `set -e`: any failure fails the script, and the launcher then refuses to start the guest.
 */
export function tapSetupScript(tools: { readonly ip: string; readonly nft: string }): string {
  const ip = word(tools.ip);
  const tap = word(GUEST_LINK.tap);
  return [
    'set -e',
    `${ip} link del ${tap} 2>/dev/null || true`,
    `${ip} tuntap add dev ${tap} mode tap`,
    `${ip} addr add ${word(`${GUEST_LINK.namespace}/${GUEST_LINK.prefix}`)} dev ${tap}`,
    `${ip} link set ${tap} up`,
    `if ${word(tools.nft)} list chain inet aegis guest_out >/dev/null 2>&1; then echo 1 > /proc/sys/net/ipv4/ip_forward; fi`,
    '',
  ].join('\n');
}

/** After the VM: forwarding off and the tap gone, so the namespace is as the gateway made it. */
export function tapTeardownScript(tools: { readonly ip: string }): string {
  return [`echo 0 > /proc/sys/net/ipv4/ip_forward`, `${word(tools.ip)} link del ${word(GUEST_LINK.tap)}`, ''].join('\n');
}

/** What the guest's init reported on the status port (scripts/microvm/init), read as untrusted text. */
export interface GuestStatus {
  /** aegis-exec found the entrypoint executable and is about to exec it. */
  readonly started: boolean;
  /** The agent's exit code, once it has exited. */
  readonly exit: number | null;
  /** Why the init could not start the agent (`fail <step>`). */
  readonly fail: string | null;
  /** The agent's cgroup in the guest had an OOM kill (memory.events oom_kill). */
  readonly oom: boolean;
  /** The agent's cgroup in the guest refused a fork at pids.max (pids.events max). */
  readonly pidsLimitHit: boolean;
}

/**
 * Parses the status port's lines: `started`, `oom`, `pids`, `exit <0-255>`, `fail <text>`.
 * Anything else is ignored; the first `exit` and `fail` count. The guest can only lie about its
 * own run (the agent cannot write to the port: it is not in its /dev).
 */
export function parseGuestStatus(text: string): GuestStatus {
  let exit: number | null = null;
  let fail: string | null = null;
  let started = false;
  let oom = false;
  let pidsLimitHit = false;
  for (const line of text.split('\n')) {
    if (line === 'started') started = true;
    else if (line === 'oom') oom = true;
    else if (line === 'pids') pidsLimitHit = true;
    else if (exit === null && /^exit (0|[1-9]\d{0,2})$/.test(line) && Number(line.slice(5)) <= 255) exit = Number(line.slice(5));
    else if (fail === null && line.startsWith('fail ')) fail = line.slice(5, 205);
  }
  return { started, exit, fail, oom, pidsLimitHit };
}

/** What the guest's init prints on the console when booted with `aegis.probe=1` (scripts/microvm/init). */
export const MICROVM_PROBE_OK = 'aegis-probe-ok';

/**
 * The QEMU command line of the KVM probe (microvm-kvm.ts): the run's guest kernel and initramfs
 * booted with KVM, the console on stdout, and the init told to print MICROVM_PROBE_OK and power
 * off at once. No share, no NIC, no port: it only shows whether this host's KVM runs a stock
 * guest kernel (a /dev/kvm that opens is no proof: some hosts' KVM runs only patched guests).
 */
export function planKvmProbe(i: {
  readonly kernel: string;
  readonly initrd: string;
  readonly runAs: { uid: number; gid: number };
  /**
   * 'kvm' (default): the probe. 'tcg' only checks the guest's side of it (that its init answers),
   * with the emulation options of planMicrovm (the host's TSC rate; no `-cpu host`).
   */
  readonly accel?: MicrovmAccel;
  readonly tscKhz?: number | null;
}): string[] {
  const kvm = (i.accel ?? 'kvm') === 'kvm';
  const tcgClock = ['no_timer_check', 'lpj=2000000', ...(i.tscKhz != null ? [`tsc_early_khz=${i.tscKhz}`] : [])];
  return [
    '-M',
    kvm ? 'microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on' : 'microvm,x-option-roms=off,rtc=off,isa-serial=on',
    '-accel',
    kvm ? 'kvm' : 'tcg,tb-size=32',
    ...(kvm ? ['-cpu', 'host'] : []),
    '-smp',
    '1',
    '-m',
    '128M',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-nic',
    'none',
    '-sandbox',
    QEMU_SANDBOX,
    '-runas',
    `${i.runAs.uid}:${i.runAs.gid}`,
    '-kernel',
    i.kernel,
    '-initrd',
    i.initrd,
    '-append',
    ['console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init aegis.probe=1', ...(kvm ? [] : tcgClock)].join(' '),
    '-serial',
    'stdio',
  ];
}

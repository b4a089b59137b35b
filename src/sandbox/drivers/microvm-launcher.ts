/**
 * The microVM launcher: the `binary` of the microvm driver (run with Node.js, inside the run's
 * cgroup, like crun). It reads the bundle's config.json, sizes the guest from the run's cgroup
 * limits, writes the guest's spec script, starts QEMU (microvm-plan.ts) in namespaces of its own
 * and exits with the agent's status as the guest's init reported it on the status port.
 *
 *   node microvm-launcher.js --bundle DIR --pid-file FILE --guest DIR --accel kvm|tcg --run-as UID:GID
 *   node microvm-launcher.js --relay term --bundle DIR   (the driver's killArgs: asks the running
 *       launcher of DIR to have the guest's init send SIGTERM to the agent; see relayTerm)
 *
 * Exit status: the agent's; 125 when the guest could not start the agent (no pid file then, so
 * run.ts reports failed_to_start). The pid file holds QEMU's pid and is written only when the
 * guest's init says the agent is starting. What the guest saw of its own limits (an OOM kill or a
 * refused fork in the agent's cgroup inside the guest) is written to `microvm-guest.json` in the
 * bundle for the driver's guestUsage().
 *
 * ARCHITECTURE NOTE (VMM confinement): QEMU runs in new network (no interface but a down
 * loopback; with a network: the run's, see below), IPC and UTS namespaces (`unshare`), drops to the unprivileged host uid the other
 * drivers map the agent to (`-runas`) once its files are open, and runs under its seccomp filter
 * (`-sandbox on` with obsolete, elevateprivileges, spawn and resourcecontrol denied). Its memory
 * (the guest's RAM included) and tasks are in the run's cgroup.
 *
 * ARCHITECTURE NOTE (network): when the bundle joins a network namespace (the egress gateway's),
 * QEMU runs in THAT namespace instead of a new one (`nsenter --net=`, then `unshare --ipc --uts`),
 * and the launcher first makes the guest's tap there (tapSetupScript): the guest's only link is
 * to the sandbox's namespace, whose ruleset filters and counts its packets like a crun agent's
 * and whose only way out is the veth to the gateway, where the host table is the boundary. QEMU
 * itself (its own sockets, should it be subverted) has exactly the sandbox's network, no more.
 * Without a network namespace there is no tap and no NIC.
 */
import { spawn } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { findExecutable, runCommand } from '../../host/exec.js';
import type { OciConfig } from '../spec/oci.js';
import { compileSeccompBpf } from '../spec/seccomp-bpf.js';
import { copyUnlistableFiles, isFile } from './microvm-files.js';
import {
  MICROVM_GUEST_KERNEL_BYTES,
  MICROVM_GUEST_REPORT,
  MICROVM_MIN_GUEST_BYTES,
  MICROVM_RELAY_SOCKET,
  MICROVM_PIDS_OVERHEAD,
  MICROVM_VMM_OVERHEAD_BYTES,
  guestProtocolProblem,
  parseGuestStatus,
  planMicrovm,
  tapSetupScript,
  tapTeardownScript,
  type MicrovmAccel,
} from './microvm-plan.js';

const EXIT_NOT_STARTED = 125;
/** How long the guest may take to power off after the agent's exit status arrived. */
const GUEST_SHUTDOWN_MS = 3000;
/** The same once run.ts has asked for TERM (its grace period runs: the agent's status is what counts). */
const GUEST_SHUTDOWN_TERM_MS = 1000;
/** Guest RAM when the run's cgroup sets no memory limit. */
const DEFAULT_GUEST_BYTES = 512 * 1024 * 1024;

function die(message: string): never {
  process.stderr.write(`aegis microvm: ${message}\n`);
  process.exit(EXIT_NOT_STARTED);
}

function arg(argv: readonly string[], name: string): string {
  const i = argv.indexOf(name);
  const v = i >= 0 ? argv[i + 1] : undefined;
  if (v === undefined || v === '') die(`missing ${name}`);
  return v;
}

/** A cgroup v1 limit of this process (`memory.limit_in_bytes`, `pids.max`), or null when unlimited or unknown. */
function cgroupLimit(controller: string, file: string): number | null {
  try {
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
      const [, ctrls, path] = line.split(':');
      if (ctrls === undefined || path === undefined || !ctrls.split(',').includes(controller)) continue;
      const raw = readFileSync(join('/sys/fs/cgroup', controller, path, file), 'utf8').trim();
      const n = Number(raw);
      return Number.isSafeInteger(n) && n > 0 && n < 2 ** 50 ? n : null;
    }
  } catch {
    return null;
  }
  return null;
}

/** The host CPU's clock in kHz from /proc/cpuinfo ("cpu MHz"), or null. */
function hostTscKhz(): number | null {
  try {
    const m = /^cpu MHz\s*:\s*(\d{3,6}(?:\.\d+)?)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m?.[1] === undefined ? null : Math.round(Number(m[1]) * 1000);
  } catch {
    return null;
  }
}

/**
 * The relay (run.ts's TERM at the timeout or on abort, through the driver's killArgs): connects
 * to the launcher's relay socket in the bundle (root's, mode 0755 directory: only root can
 * connect) and asks for `term`. Exits 0 once written, 1 when no launcher listens.
 */
function relayTerm(bundleDir: string): void {
  const sock = connect(join(bundleDir, MICROVM_RELAY_SOCKET));
  sock.on('error', () => process.exit(1));
  sock.end('term\n', () => process.exit(0));
  setTimeout(() => process.exit(1), 5000).unref();
}

function main(argv: readonly string[]): void {
  if (argv[0] === '--relay') {
    if (argv[1] !== 'term') die(`--relay takes term, not ${argv[1]}`);
    return relayTerm(arg(argv, '--bundle'));
  }
  const bundleDir = arg(argv, '--bundle');
  const pidFile = arg(argv, '--pid-file');
  const guestDir = arg(argv, '--guest');
  const accelArg = arg(argv, '--accel');
  const runAsArg = arg(argv, '--run-as');
  if (accelArg !== 'kvm' && accelArg !== 'tcg') die(`--accel must be kvm or tcg, not ${accelArg}`);
  const accel: MicrovmAccel = accelArg;
  const m = /^(\d{1,9}):(\d{1,9})$/.exec(runAsArg);
  if (m === null) die(`--run-as must be UID:GID`);
  const runAs = { uid: Number(m[1]), gid: Number(m[2]) };

  let config: OciConfig;
  try {
    config = JSON.parse(readFileSync(join(bundleDir, 'config.json'), 'utf8')) as OciConfig;
  } catch (err) {
    die(`cannot read the bundle: ${(err as Error).message}`);
  }
  try {
    config = copyUnlistableFiles(config, join(bundleDir, 'microvm-files'), runAs);
  } catch (err) {
    die(`cannot copy a file the guest needs: ${(err as Error).message}`);
  }
  const qemu = findExecutable('qemu-system-x86_64');
  const unshare = findExecutable('unshare');
  if (qemu === null) die('qemu-system-x86_64 is not installed (Debian package qemu-system-x86)');
  if (unshare === null) die('unshare is not installed (Debian package util-linux)');
  const kernel = join(guestDir, 'vmlinuz');
  const initrd = join(guestDir, 'initramfs.cpio.gz');
  if (!existsSync(kernel) || !existsSync(initrd)) die(`no guest kernel in ${guestDir} (scripts/microvm/build-guest.sh)`);
  let protocolText: string | null = null;
  try {
    protocolText = readFileSync(join(guestDir, 'protocol'), 'utf8').slice(0, 100);
  } catch {
    protocolText = null;
  }
  const protocol = guestProtocolProblem(protocolText);
  if (protocol !== null) die(`${protocol}: rebuild it (scripts/microvm/build-guest.sh)`);

  // The gateway's namespace, when the run has a network (the validated bundle joins it).
  const netns = config.linux.namespaces.find((n) => n.type === 'network')?.path;
  const nsenter = findExecutable('nsenter');
  const ip = findExecutable('ip');
  const nft = findExecutable('nft');
  const sh = findExecutable('sh');
  if (netns !== undefined && (nsenter === null || ip === null || nft === null || sh === null))
    die('a microVM with a network needs nsenter, ip, nft and sh (Debian packages util-linux, iproute2, nftables, dash)');

  const memLimit = cgroupLimit('memory', 'memory.limit_in_bytes');
  const guestMemoryBytes = memLimit === null ? DEFAULT_GUEST_BYTES : memLimit - MICROVM_VMM_OVERHEAD_BYTES;
  if (guestMemoryBytes < MICROVM_MIN_GUEST_BYTES)
    die(`the memory limit leaves the guest ${guestMemoryBytes} bytes (< ${MICROVM_MIN_GUEST_BYTES})`);
  // The guest has the manifest's memory plus room for its kernel; the agent's cgroup in the guest the manifest's memory.
  const agentMemoryBytes = guestMemoryBytes - MICROVM_GUEST_KERNEL_BYTES;
  // The bundle's seccomp profile as a BPF program the guest installs on the agent (fail secure: no
  // program, no run).
  let seccomp: Uint8Array;
  try {
    seccomp = compileSeccompBpf(config.linux.seccomp);
  } catch (err) {
    die(`cannot compile the seccomp profile for the guest: ${(err as Error).message}`);
  }
  const pidsLimit = cgroupLimit('pids', 'pids.max');
  const guestPids = pidsLimit === null ? 1024 : Math.max(1, pidsLimit - MICROVM_PIDS_OVERHEAD);

  const specDir = join(bundleDir, 'microvm-spec');
  const sockets = {
    stdin: join(bundleDir, 'vm.i'),
    stdout: join(bundleDir, 'vm.o'),
    stderr: join(bundleDir, 'vm.e'),
    status: join(bundleDir, 'vm.s'),
    control: join(bundleDir, 'vm.c'),
  };
  const consoleFile = join(bundleDir, 'microvm-console.log');
  const plan = planMicrovm({
    config,
    bundleDir,
    specDir,
    kernel,
    initrd,
    sockets,
    consoleFile,
    accel,
    guestMemoryBytes,
    agentMemoryBytes,
    guestPids,
    seccompFile: 'seccomp.bpf',
    runAs,
    tscKhz: hostTscKhz(),
    fileSources: new Set(config.mounts.filter((mt) => mt.type === 'bind' && isFile(mt.source)).map((mt) => mt.source)),
    network: netns !== undefined,
  });
  if ('error' in plan) die(plan.error);
  const qemuArgs = plan.qemuArgs;
  // The spec holds the agent's environment: readable only by the uid QEMU runs as.
  mkdirSync(specDir, { mode: 0o700 });
  writeFileSync(join(specDir, 'run.sh'), plan.specScript, { mode: 0o600 });
  chownSync(join(specDir, 'run.sh'), runAs.uid, runAs.gid);
  writeFileSync(join(specDir, 'seccomp.bpf'), seccomp, { mode: 0o600 });
  chownSync(join(specDir, 'seccomp.bpf'), runAs.uid, runAs.gid);
  chownSync(specDir, runAs.uid, runAs.gid);

  let status = '';
  let started = false;
  let qemuPid = 0;
  let stopQemu: (() => void) | null = null;
  let stopTimer: NodeJS.Timeout | undefined;
  let control: Socket | null = null;
  let terminating = false;
  const onStatus = (chunk: Buffer): void => {
    status += chunk.toString('latin1');
    if (status.length > 4096) status = status.slice(-4096);
    if (!started && parseGuestStatus(status).started && qemuPid > 0) {
      started = true;
      const fd = openSync(pidFile, 'wx', 0o644);
      writeSync(fd, String(qemuPid));
      closeSync(fd);
    }
    // The agent has exited: the guest has this long to power off. Its shutdown was seen to hang
    // now and then under emulation (after the status line), so QEMU is then stopped.
    if (stopTimer === undefined && parseGuestStatus(status).exit !== null)
      stopTimer = setTimeout(() => stopQemu?.(), terminating ? GUEST_SHUTDOWN_TERM_MS : GUEST_SHUTDOWN_MS);
  };
  // TERM from run.ts (relayTerm): the guest's init signals the agent's processes and the grace
  // period runs as under crun; a guest that has not started the agent yet is stopped at once.
  const onRelay = (): void => {
    terminating = true;
    if (started && control !== null) control.write('term\n');
    else stopQemu?.();
  };
  // One listener per port; QEMU connects once at start (before -runas), the first connection wins.
  const ended: Promise<void>[] = [];
  const servers = (['stdin', 'stdout', 'stderr', 'status', 'control'] as const).map((name) => {
    const server = createServer({ allowHalfOpen: false }, (sock) => {
      server.close();
      if (name === 'status') sock.on('data', onStatus);
      else if (name === 'control') control = sock;
      // The run's stdin into the guest; at its end the socket is half-closed: QEMU then reports
      // the host side gone and the agent reads EOF once it has read everything before it.
      else if (name === 'stdin') process.stdin.pipe(sock).on('error', () => undefined);
      else sock.pipe(name === 'stdout' ? process.stdout : process.stderr, { end: false });
      ended.push(new Promise<void>((resolve) => sock.once('close', () => resolve())));
      sock.on('error', () => undefined);
    });
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sockets[name], () => resolve());
    });
  });
  const relay = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.on('data', (b: Buffer) => {
      if (b.toString('latin1').startsWith('term')) onRelay();
    });
  });
  servers.push(
    new Promise<void>((resolve, reject) => {
      relay.once('error', reject);
      relay.listen(join(bundleDir, MICROVM_RELAY_SOCKET), () => resolve());
    }),
  );
  /** A script in the run's network namespace; its failure refuses the start. */
  const inNetns = async (script: string): Promise<string | null> => {
    const argv = [nsenter as string, `--net=${netns as string}`, '--', sh as string, '-c', script];
    const r = await runCommand(argv, { timeoutMs: 10_000 }).catch((err: Error) => ({ code: null, stderr: err.message }));
    return r.code === 0 ? null : r.stderr.trim() || `status ${String(r.code)}`;
  };
  Promise.all(servers).then(
    async () => {
      if (netns !== undefined) {
        const failed = await inNetns(tapSetupScript({ ip: ip as string, nft: nft as string }));
        if (failed !== null) die(`cannot make the guest's tap in ${netns}: ${failed}`);
      }
      launch();
    },
    (err: Error) => die(`cannot listen for the guest's ports: ${err.message}`),
  );

  function launch(): void {
    // Without a network: a new, empty network namespace. With one: the run's (see the note above).
    const argv =
      netns === undefined
        ? [unshare as string, '--net', '--ipc', '--uts', '--', qemu as string, ...qemuArgs]
        : [nsenter as string, `--net=${netns}`, '--', unshare as string, '--ipc', '--uts', '--', qemu as string, ...qemuArgs];
    const child = spawn(argv[0] as string, argv.slice(1), {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    qemuPid = child.pid ?? 0;
    stopQemu = () => child.kill('SIGKILL');
    let qemuErr = '';
    child.stderr.on('data', (b: Buffer) => void (qemuErr = (qemuErr + b.toString()).slice(-2000)));
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => child.kill('SIGKILL'));
    child.on('error', (err) => die(`cannot start QEMU: ${err.message}`));
    child.on('exit', (code, signal) => {
      clearTimeout(stopTimer);
      // Everything the guest wrote is delivered before the exit (bounded: the sockets close with QEMU).
      const drained = Promise.race([Promise.all(ended), new Promise((r) => setTimeout(r, 2000))]);
      // The namespace back as the gateway made it (best effort: the gateway removes it anyway).
      const untapped = netns === undefined ? Promise.resolve(null) : inNetns(tapTeardownScript({ ip: ip as string }));
      void Promise.all([drained, untapped]).then(() => finish(code, signal, qemuErr));
    });
  }

  function finish(code: number | null, signal: NodeJS.Signals | null, qemuErr: string): void {
    onStatus(Buffer.alloc(0));
    relay.close();
    const g = parseGuestStatus(status);
    try {
      writeFileSync(join(bundleDir, MICROVM_GUEST_REPORT), JSON.stringify({ oom: g.oom, pidsLimitHit: g.pidsLimitHit }), { mode: 0o600 });
    } catch {
      /* the driver then reports only what the host saw */
    }
    if (g.exit !== null && started) process.exit(g.exit);
    if (g.fail !== null) die(`the guest could not start the agent: ${g.fail}`);
    if (g.exit !== null) die(`the entrypoint could not be executed in the guest (status ${g.exit})`);
    let tail = '';
    try {
      tail = readFileSync(consoleFile, 'utf8').split('\n').slice(-8).join('\n');
    } catch {
      /* no console */
    }
    const how = signal !== null ? `signal ${signal}` : `status ${code}`;
    process.stderr.write(
      `aegis microvm: QEMU ended (${how}) before the agent reported its exit\n${qemuErr}${tail ? `console:\n${tail}\n` : ''}`,
    );
    process.exit(started ? 137 : EXIT_NOT_STARTED);
  }
}

main(process.argv.slice(2));

/**
 * The sandbox conformance suite: every runtime driver runs exactly these cases, with real
 * sandboxes (no mocks of the runtime) and the real python:3.11 image from the image store.
 *
 * After every case: no cgroup, mount, process, runtime state or run directory of the run
 * remains. When the runtime or the image is missing, the suite fails under CI=true and skips
 * (printing why) elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../src/audit/event.js';
import { GUEST_LINK } from '../../src/gateway/netns/plan.js';
import { resolveImage } from '../../src/images/index.js';
import type { Isolation, Policy } from '../../src/policy/types.js';
import { hybridHugetlbMissing, runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { driverFor, type MicrovmSettings } from '../../src/sandbox/drivers/index.js';
import { dockerEngine } from '../../src/sandbox/docker/host.js';
import { AGENT_HOST_GID, AGENT_HOST_UID, runSandbox, type RunResult, type RunSandboxOptions } from '../../src/sandbox/run.js';
import { PID_MAX_LIMIT, USERNS_OWNER_BASE } from '../../src/sandbox/spec/compile.js';
import { sweepStaleRuns } from '../../src/sandbox/state.js';
import { DENIED_PROBES, GETEUID, syscallElf } from './sandbox-probes.js';

const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;
const DEFAULT_TEST_TIMEOUT_MS = 20_000;

export function testPolicy(over: {
  entrypoint: string[];
  fs?: Partial<Policy['fs']>;
  limits?: Partial<Policy['limits']>;
  deny?: string[];
}): Policy {
  return {
    version: '1.0',
    agent: { name: 'conformance', runtime: PY, entrypoint: over.entrypoint, env: {}, secretRefs: {}, isolation: null, code: '.' },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: over.fs?.read ?? [], write: over.fs?.write ?? ['/data/outputs'] },
    limits: {
      timeoutMs: DEFAULT_TEST_TIMEOUT_MS,
      memoryBytes: 128 * 1024 * 1024,
      cpu: { quotaUs: 100_000, periodUs: 100_000, cores: 1 },
      pids: 64,
      ...over.limits,
    },
    syscalls: { deny: over.deny ?? [] },
  };
}

/** What `aegis doctor --fix` does for crun on hybrid hosts: mount the hugetlb v1 hierarchy. */
export function ensureHugetlbMount(): void {
  if (hybridHugetlbMissing() === null) return;
  mkdirSync('/sys/fs/cgroup/hugetlb', { recursive: true });
  execFileSync('mount', ['-t', 'cgroup', '-o', 'hugetlb', 'cgroup', '/sys/fs/cgroup/hugetlb']);
}

/** Fails under CI, skips (with the reason printed) elsewhere. */
/**
 * Whether sandboxes of `isolation` with the python:3.11 image can run on this host (mounting the
 * hugetlb hierarchy crun needs on hybrid hosts first): `unavailable` says why not (for
 * `requireOrSkip`), `rootfs` is the image's root when it exists.
 */
export async function sandboxRequirements(
  isolation: Isolation = 'crun',
  microvm?: MicrovmSettings,
): Promise<{ unavailable: string | null; rootfs: string }> {
  let why: string | null = null;
  if (isolation === 'crun') {
    try {
      ensureHugetlbMount();
    } catch (e) {
      why = `cannot mount the hugetlb hierarchy: ${(e as Error).message}`;
    }
  }
  why ??= driverFor(isolation, microvm).unavailableReason();
  let rootfs = '';
  try {
    rootfs = (await resolveImage(PY)).rootfs;
  } catch (e) {
    why ??= `python:3.11 image missing (run "aegis image build python:3.11"): ${(e as Error).message}`;
  }
  if (isolation === 'docker' && why === null) {
    // The runtime image in the engine before the cases run (once per engine: a fresh engine pays
    // the import here, not in a case's duration).
    try {
      const { engineClient, engineImage } = await import('../../src/sandbox/docker/engine.js');
      await engineImage(engineClient(), rootfs, '/run/aegis');
    } catch (e) {
      why = `cannot import python:3.11 into the Docker engine: ${(e as Error).message}`;
    }
  }
  return { unavailable: why, rootfs };
}

/** Why such sandboxes cannot run here, or null (see sandboxRequirements). */
export async function sandboxUnavailable(isolation: Isolation = 'crun'): Promise<string | null> {
  return (await sandboxRequirements(isolation)).unavailable;
}

export function requireOrSkip(t: { skip(msg: string): void }, reason: string | null): boolean {
  if (reason === null) return true;
  if (process.env['CI'] === 'true') assert.fail(`required for CI: ${reason}`);
  process.stderr.write(`# skipping: ${reason}\n`);
  t.skip(reason);
  return false;
}

function leftovers(stateDir: string, isolation: Isolation, id: string): string[] {
  const out: string[] = [];
  for (const d of runCgroupDirs(id)) out.push(`cgroup ${d}`);
  if (existsSync(join(stateDir, 'runs', id))) out.push(`run dir ${id}`);
  if (driverFor(isolation).hasState({ id, stateRoot: join(stateDir, isolation) })) out.push(`runtime state ${id}`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(id));
  out.push(...mounts.map((m) => `mount ${m}`));
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(id)) out.push(`process ${p}`);
    } catch {
      /* exited */
    }
  }
  out.push(...usernsHolders().map((p) => `user namespace holder ${p}`));
  return out;
}

/** Live processes running as a user namespace owner uid (src/sandbox/userns.ts). */
export function usernsHolders(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
      if (uid >= USERNS_OWNER_BASE && uid < USERNS_OWNER_BASE + PID_MAX_LIMIT) out.push(Number(p));
    } catch {
      /* exited */
    }
  }
  return out;
}

export interface ConformanceOptions {
  /** Case titles this driver cannot pass, each with the reason (printed). */
  readonly skip?: Readonly<Record<string, string>>;
  /** Options every run of this driver gets (the microVM's guest and emulation settings). */
  readonly runOptions?: Partial<RunSandboxOptions>;
  /**
   * The time limit of the cases that use testPolicy's default (20 s) raised to this: a microVM
   * under emulation boots a kernel per run (3-15 s here on a loaded host). Cases that test the
   * timeout itself set their own limit and keep it.
   */
  readonly defaultTimeoutMs?: number;
  /**
   * How long this driver may take to reach the agent's first instruction (a microVM under
   * emulation boots a kernel first): added to the time limit of the case whose agent must be
   * running when its timeout fires (SIGTERM and grace). 0 for the container runtimes.
   */
  readonly startupMs?: number;
}

export function runConformance(isolation: Isolation, copts: ConformanceOptions = {}): void {
  // The agent's uid as the kernel sees it inside: 1000 in a user namespace; the Docker engine
  // cannot join one per container, and a microVM's guest runs it as the host id it maps to
  // elsewhere (9p shows host ownership: docs/sandbox.md "microVM"): there it is 101000.
  const agentUid = isolation === 'docker' || isolation === 'microvm' ? AGENT_HOST_UID : 1000;
  describe(`sandbox conformance: ${isolation}`, { timeout: copts.defaultTimeoutMs !== undefined ? 1_800_000 : 300_000 }, () => {
    let rootfs = '';
    let unavailable: string | null = null;
    let work = '';
    let stateDir = '';
    let code = '';
    const secret = `/root/aegis-secret-${process.pid}-${isolation}`;
    const secretText = `TOP-SECRET-${Math.random()}`;

    before(async () => {
      ({ unavailable, rootfs } = await sandboxRequirements(isolation, copts.runOptions?.microvm));
      work = mkdtempSync(`/var/tmp/aegis-conf-${isolation}-`);
      chmodSync(work, 0o755);
      stateDir = join(work, 'state');
      code = join(work, 'agent');
      mkdirSync(code);
      writeFileSync(secret, secretText, { mode: 0o600 });
      writeFileSync(
        join(code, 'main.py'),
        'import sys\nprint("hello from", sys.argv[1:])\nsys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)\n',
      );
      for (const [name, p] of Object.entries(DENIED_PROBES))
        writeFileSync(join(code, `probe-${name}`), syscallElf(p.nr, p.args), { mode: 0o755 });
      writeFileSync(join(code, 'probe-geteuid'), syscallElf(GETEUID.nr, GETEUID.args, 'value'), { mode: 0o755 });
      symlinkSync(secret, join(code, 'leak'));
      writeFileSync(join(code, 'fs.py'), FS_PY);
    });
    after(() => {
      rmSync(secret, { force: true });
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const run = async (
      t: { skip(msg: string): void; name: string },
      policy: Policy,
      extra: Partial<RunSandboxOptions> = {},
    ): Promise<(RunResult & { out: string; err: string; events: AuditEventInput[] }) | null> => {
      const why = copts.skip?.[t.name];
      if (why !== undefined) {
        process.stderr.write(`# ${isolation}: skipping "${t.name}": ${why}\n`);
        t.skip(why);
        return null;
      }
      if (!requireOrSkip(t, unavailable)) return null;
      let out = '';
      let err = '';
      const events: AuditEventInput[] = [];
      const slow = copts.defaultTimeoutMs !== undefined && policy.limits.timeoutMs === DEFAULT_TEST_TIMEOUT_MS;
      const r = await runSandbox({
        policy: slow ? { ...policy, limits: { ...policy.limits, timeoutMs: copts.defaultTimeoutMs } } : policy,
        manifestDir: code,
        imageRootfs: rootfs,
        isolation,
        stateDir,
        stdout: (b) => void (out += b.toString()),
        stderr: (b) => void (err += b.toString()),
        audit: { append: (e) => void events.push(e) },
        ...copts.runOptions,
        ...extra,
      });
      assert.deepEqual(leftovers(stateDir, isolation, r.executionId), [], 'nothing of the run remains');
      return { ...r, out, err, events };
    };

    it('runs the entrypoint as an unprivileged user and passes its exit code through', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['python3', 'main.py', '3'] }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.equal(r.exitCode, 3);
      assert.match(r.out, /hello from \['3'\]/);
      assert.deepEqual(
        r.events.map((e) => e.action),
        ['run.spawn', 'run.start', 'resource.usage', 'run.exit'],
      );
    });

    it('regression: the agent can start threads (gVisor answered clone3 with EPERM, so libc did not fall back to clone)', async (t) => {
      const code =
        'import ctypes, os, threading\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.syscall(435, None, 0)\nprint("clone3", r, os.strerror(ctypes.get_errno()))\nt = threading.Thread(target=lambda: print("thread ran"))\nt.start(); t.join()';
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', code] }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.equal(r.exitCode, 0, r.err);
      assert.match(r.out, /^clone3 -1 Function not implemented$/m);
      assert.match(r.out, /^thread ran$/m);
    });

    it('hands the runtime only pipes of its own: /dev/null keeps owner and mode, stdin comes from the caller', async (t) => {
      // Regression (issue 8): the default stdin was the host's /dev/null, which crun chowned to
      // the sandbox uid (and runsc to 65534); the agent could then chmod it for the whole host.
      const script = [
        'import os, sys',
        'for fd in (0, 1, 2):',
        '    for attack in (lambda: os.fchmod(fd, 0o600), lambda: os.fchown(fd, 1000, 1000)):',
        '        try:',
        '            attack()',
        '        except OSError:',
        '            pass',
        'print("IN:" + sys.stdin.read())',
      ].join('\n');
      const before = statSync('/dev/null');
      try {
        const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script] }));
        if (!r) return;
        assert.equal(r.status, 'exited', r.err);
        assert.equal(r.out, 'IN:\n', 'the default stdin is empty');
        const now = statSync('/dev/null');
        assert.deepEqual([now.uid, now.gid, now.mode], [before.uid, before.gid, before.mode], '/dev/null unchanged');
        const fed = await run(t, testPolicy({ entrypoint: ['python3', '-c', script] }), {
          stdin: Readable.from([Buffer.from('from the caller')]),
        });
        assert.equal(fed?.out, 'IN:from the caller\n');
      } finally {
        const now = statSync('/dev/null');
        if (now.uid !== before.uid || now.gid !== before.gid) chownSync('/dev/null', before.uid, before.gid);
        if (now.mode !== before.mode) chmodSync('/dev/null', before.mode & 0o7777);
      }
    });

    it('kills a memory bomb and reports oom', async (t) => {
      const bomb = 'x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))\n';
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', bomb], limits: { memoryBytes: 64 * 1024 * 1024 } }));
      if (!r) return;
      assert.equal(r.status, 'oom', `${r.status} ${r.exitCode} ${r.err}`);
      assert.equal(r.exitCode, 137);
      assert.ok(r.events.some((e) => e.action === 'run.oom'));
    });

    it('holds a busy loop to its cpu quota (0.5 core)', async (t) => {
      const busy = 'import time\nt = time.time() + 2.0\nwhile time.time() < t:\n    pass\n';
      const r = await run(
        t,
        testPolicy({ entrypoint: ['python3', '-c', busy], limits: { cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 } } }),
      );
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const ratio = r.cpuMs / r.durationMs;
      assert.ok(ratio < 0.75, `cpu/wall ratio ${ratio.toFixed(2)} must stay near 0.5 (cpu ${r.cpuMs} ms, wall ${r.durationMs} ms)`);
      assert.ok(ratio > 0.2, `the loop did run (ratio ${ratio.toFixed(2)})`);
      // The cgroup's throttling counters reach the audit log (the aegis-cpu-throttled rule reads them).
      const usage = r.events.find((e) => e.action === 'resource.usage');
      const throttled = (usage?.payload as { cpuThrottledRatio?: number } | undefined)?.cpuThrottledRatio;
      assert.ok(typeof throttled === 'number' && throttled > 0.5, `cpuThrottledRatio ${throttled}`);
    });

    it('contains a fork bomb within the pids limit', async (t) => {
      const bomb = [
        'import os, sys, time',
        'n = 0',
        'while True:',
        '    try:',
        '        if os.fork() == 0:',
        '            time.sleep(30)',
        '            os._exit(0)',
        '        n += 1',
        '    except OSError:',
        '        break',
        'print("forked", n)',
        'sys.stdout.flush()',
        'os._exit(0)',
      ].join('\n');
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', bomb], limits: { pids: 32 } }));
      if (!r) return;
      assert.ok(r.pidsLimitHit, `the pids limit stopped the bomb: ${r.status} ${r.exitCode} ${r.out} ${r.err.slice(-300)}`);
      if (isolation === 'gvisor') {
        // LIMITATION (gVisor, ptrace platform): guest tasks are host threads of the Sentry, so the
        // host pids limit stops the Sentry itself and the whole sandbox ends; still contained.
        assert.notEqual(r.status, 'timeout');
        return;
      }
      assert.equal(r.status, 'exited', r.err);
      const n = Number(/forked (\d+)/.exec(r.out)?.[1] ?? NaN);
      assert.ok(n >= 1 && n < 32, `forks stopped below the pids limit (got ${n})`);
    });

    it('stops an agent at its timeout and leaves nothing running', async (t) => {
      const r = await run(
        t,
        testPolicy({
          entrypoint: ['python3', '-c', 'import time\nprint("start", flush=True)\ntime.sleep(60)'],
          limits: { timeoutMs: 1500 },
        }),
        { graceMs: 300 },
      );
      if (!r) return;
      assert.equal(r.status, 'timeout');
      assert.equal(r.exitCode, 137);
      assert.ok(r.durationMs < 1500 + 300 + 5000, `stopped promptly (${r.durationMs} ms)`);
      assert.ok(r.events.some((e) => e.action === 'run.timeout'));
    });

    it('sends SIGTERM first at timeout and lets the agent finish within the grace period', async (t) => {
      const script = [
        'import signal, sys, time',
        'def on_term(signum, frame):',
        '    time.sleep(0.2)',
        '    print("graceful", flush=True)',
        '    sys.exit(0)',
        'signal.signal(signal.SIGTERM, on_term)',
        'print("up", flush=True)',
        'time.sleep(60)',
      ].join('\n');
      const timeoutMs = 1500 + (copts.startupMs ?? 0);
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script], limits: { timeoutMs } }), { graceMs: 3000 });
      if (!r) return;
      assert.equal(r.status, 'timeout');
      assert.equal(r.exitCode, 137);
      assert.match(r.out, /up\ngraceful\n/);
      assert.ok(r.durationMs < timeoutMs + 3000, `ended without waiting for the whole grace period (${r.durationMs} ms)`);
    });

    it('refuses writes to /, /agent and undeclared paths; allows /tmp and declared paths', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['python3', 'fs.py'], fs: { write: ['/data/outputs'], read: ['/data/inputs'] } }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const res = Object.fromEntries(
        r.out
          .trim()
          .split('\n')
          .map((l) => [l.split(' ')[0], l.split(' ').slice(1).join(' ')]),
      );
      for (const p of ['/x', '/agent/x', '/etc/x', '/data/x', '/data/inputs/x', '/usr/x', '/root/x', '/var/x'])
        assert.notEqual(res[p], 'ok', `write to ${p} must fail`);
      assert.equal(res['/tmp/x'], 'ok');
      assert.equal(res['/data/outputs/x'], 'ok');
    });

    it('never shows a host file outside the volumes (/proc/1/root, .., symlinks)', async (t) => {
      const vol = join(work, 'vol');
      mkdirSync(vol, { recursive: true });
      rmSync(join(vol, 'leak'), { force: true });
      symlinkSync(secret, join(vol, 'leak'));
      const script = [
        'import os',
        `paths = ["${secret}", "/proc/1/root${secret}", "/agent/../..${secret}", "/agent/leak", "/data/inputs/leak", "/proc/self/root${secret}", "/proc/1/cwd/../..${secret}"]`,
        'for p in paths:',
        '    try:',
        '        print(p, open(p).read())',
        '    except OSError as e:',
        '        print(p, "ERR", e.errno)',
      ].join('\n');
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script], fs: { read: ['/data/inputs'] } }), {
        volumes: [{ host: vol, sandbox: '/data/inputs', mode: 'ro' }],
      });
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.ok(!r.out.includes(secretText), `secret leaked:\n${r.out}`);
      assert.equal((r.out.match(/ERR/g) ?? []).length, 7, r.out);
    });

    it('writes to declared paths inside image directories (/etc/foo, /usr/local/x)', async (t) => {
      // Regression: on gVisor a grant inside /etc (mirrored one bind mount per entry, ~94
      // mounts) exhausted the runtime's pids allowance: "StartRoot failed: EOF", exit 128.
      const script = 'for p in ["/etc/foo", "/usr/local/x"]:\n    open(p + "/f", "w").write("w")\n    print(p, open(p + "/f").read())';
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script], fs: { write: ['/etc/foo', '/usr/local/x'] } }));
      if (!r) return;
      assert.equal(r.status, 'exited', `${r.status} ${r.exitCode} ${r.err}`);
      assert.equal(r.exitCode, 0, r.err);
      assert.equal(r.out, '/etc/foo w\n/usr/local/x w\n');
    });

    it('mounts granted volumes read-only or read-write, and refuses ungranted ones before start', async (t) => {
      const ro = join(work, 'ro');
      const rw = join(work, 'rw');
      mkdirSync(ro, { recursive: true });
      mkdirSync(rw, { recursive: true });
      writeFileSync(join(ro, 'in.txt'), 'input');
      chownSync(rw, AGENT_HOST_UID, AGENT_HOST_GID);
      const script = [
        'print(open("/data/inputs/in.txt").read())',
        'open("/data/outputs/out.txt", "w").write("result")',
        'try:\n    open("/data/inputs/new", "w")\n    print("RO-WRITABLE")\nexcept OSError as e:\n    print("ro", e.errno)',
      ].join('\n');
      const policy = testPolicy({ entrypoint: ['python3', '-c', script], fs: { read: ['/data/inputs'], write: ['/data/outputs'] } });
      const r = await run(t, policy, {
        volumes: [
          { host: ro, sandbox: '/data/inputs', mode: 'ro' },
          { host: rw, sandbox: '/data/outputs', mode: 'rw' },
        ],
      });
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.match(r.out, /input/);
      assert.match(r.out, /ro (30|13)\n/); // EROFS (gVisor answers EACCES)
      assert.equal(readFileSync(join(rw, 'out.txt'), 'utf8'), 'result');
      const refused = await run(t, policy, { volumes: [{ host: ro, sandbox: '/etc/secrets', mode: 'ro' }] });
      assert.equal(refused?.status, 'failed_to_start');
      assert.equal(refused?.error?.code, 'sandbox.volume_refused');
      const rwOnRead = await run(t, policy, { volumes: [{ host: rw, sandbox: '/data/inputs', mode: 'rw' }] });
      assert.equal(rwOnRead?.error?.code, 'sandbox.volume_refused');
    });

    it('bounds an rw volume to its size (ENOSPC), copies it back without following links, owned by the user running AEGIS', async (t) => {
      const out = join(work, 'bounded');
      rmSync(out, { recursive: true, force: true });
      mkdirSync(out);
      writeFileSync(join(out, 'prev.txt'), 'from before');
      writeFileSync(join(out, 'gone.txt'), 'the agent deletes this');
      // Another host user's private file: as closed to the agent as through a bind mount.
      writeFileSync(join(out, 'other.txt'), 'not for the agent', { mode: 0o600 });
      chownSync(join(out, 'other.txt'), 4242, 4242);
      // The rw grant makes the volume writable even when the host folder's mode is not.
      chmodSync(out, 0o555);
      const limit = 16 * 1024 * 1024;
      const script = [
        'import os',
        'print("prev", open("/data/outputs/prev.txt").read())',
        'open("/data/outputs/prev.txt", "a").write(" + appended")',
        'try:\n    open("/data/outputs/other.txt").read()\n    print("OTHER-READABLE")\nexcept OSError as e:\n    print("other", e.errno)',
        'os.remove("/data/outputs/gone.txt")',
        'os.symlink("' + secret + '", "/data/outputs/link")',
        'open("/data/outputs/suid", "w").write("s")',
        'os.chmod("/data/outputs/suid", 0o4755)',
        'os.makedirs("/data/outputs/sub/dir")',
        'os.mkfifo("/data/outputs/fifo")',
        'open("/data/outputs/sub/dir/f", "w").write("deep")',
        'n = 0',
        'try:',
        '    with open("/data/outputs/big", "wb") as f:',
        '        while True:',
        '            f.write(b"x" * 65536)',
        '            f.flush()',
        '            n += 65536',
        'except OSError as e:',
        '    print("errno", e.errno, n, flush=True)',
      ].join('\n');
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script] }), {
        volumes: [{ host: out, sandbox: '/data/outputs', mode: 'rw', sizeBytes: limit }],
      });
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.equal(r.exitCode, 0, r.err);
      assert.match(r.out, /prev from before/);
      assert.match(r.out, /other 13\n/, "EACCES on another user's 0600 file");
      const m = /errno (\d+) (\d+)/.exec(r.out);
      assert.ok(m, r.out);
      assert.ok(['28', '122'].includes(m[1]!), `ENOSPC or EDQUOT, got errno ${m[1]}`);
      assert.ok(Number(m[2]) <= limit && Number(m[2]) > limit / 2, `wrote ${m[2]} bytes`);
      // The host folder: what the agent left, within the limit, owned by whoever runs AEGIS.
      // gVisor keeps a named pipe made on a gofer mount inside the Sentry: it never reaches the host.
      // A remote Docker engine's volume is read back through its archive API: a fifo is left out
      // (with a run.volume_warning), as AEGIS does not make special files from an agent's archive.
      const fifo = isolation === 'gvisor' || (isolation === 'docker' && dockerEngine() === 'remote') ? [] : ['fifo'];
      assert.deepEqual(readdirSync(out).sort(), ['big', ...fifo, 'link', 'other.txt', 'prev.txt', 'sub', 'suid']);
      if (fifo.length > 0) assert.ok(lstatSync(join(out, 'fifo')).isFIFO(), 'a fifo is copied as a fifo (never read)');
      assert.equal(statSync(out).mode & 0o777, 0o555, "the host folder's own mode is never changed");
      assert.equal(readFileSync(join(out, 'prev.txt'), 'utf8'), 'from before + appended', 'the agent may change what it wrote before');
      assert.deepEqual([statSync(join(out, 'other.txt')).uid, statSync(join(out, 'other.txt')).mode & 0o777], [4242, 0o600]);
      const du = Number(execFileSync('du', ['-s', '-B1', out]).toString().split('\t')[0]);
      assert.ok(du <= limit, `host folder holds ${du} bytes, limit ${limit}`);
      // What the agent counted, plus at most the part of its last 64 KiB write that still fitted
      // (a tmpfs, a remote engine's rw volume, takes a partial write before ENOSPC).
      const big = statSync(join(out, 'big')).size;
      assert.ok(big >= Number(m[2]) && big < Number(m[2]) + 65536, `big is ${big} bytes, the agent wrote ${m[2]}`);
      assert.equal(readFileSync(join(out, 'sub/dir/f'), 'utf8'), 'deep');
      assert.ok(lstatSync(join(out, 'link')).isSymbolicLink(), 'a link stays a link');
      assert.equal(readlinkSync(join(out, 'link')), secret);
      assert.equal(statSync(join(out, 'suid')).mode & 0o7777, 0o755, 'setuid cleared');
      for (const f of ['big', 'sub', 'sub/dir/f', 'suid', 'prev.txt']) {
        assert.equal(statSync(join(out, f)).uid, process.getuid!(), `${f} belongs to the user running AEGIS`);
      }
      assert.deepEqual(
        readdirSync(out).filter((n) => n.startsWith('.aegis-')),
        [],
        'no staging left',
      );
    });

    it('keeps the host folder as it was and warns when the copy back fails', async (t) => {
      const out = join(work, 'immutable');
      rmSync(out, { recursive: true, force: true });
      mkdirSync(out);
      writeFileSync(join(out, 'before.txt'), 'b');
      let locked = false;
      try {
        const r = await run(
          t,
          testPolicy({
            entrypoint: ['python3', '-c', 'import time\nopen("/data/outputs/new", "w").write("n")\nprint("up", flush=True)\ntime.sleep(1)'],
          }),
          {
            volumes: [{ host: out, sandbox: '/data/outputs', mode: 'rw', sizeBytes: 16 * 1024 * 1024 }],
            // Made immutable while the agent runs: not even root can then add the copy to it.
            stdout: (b) => {
              if (!locked && b.toString().includes('up')) {
                execFileSync('chattr', ['+i', out]);
                locked = true;
              }
            },
          },
        );
        if (!r) return;
        assert.ok(locked, 'the agent ran');
        assert.equal(r.status, 'exited');
        assert.equal(r.warnings?.length, 1, JSON.stringify(r.warnings));
        assert.match(r.warnings![0]!, /could not be copied back, the folder keeps its contents from before the run/);
        assert.ok(r.events.some((e) => e.action === 'run.volume_warning'));
        assert.deepEqual(readdirSync(out), ['before.txt']);
      } finally {
        if (locked) execFileSync('chattr', ['-i', out]);
      }
    });

    it('refuses an rw volume whose contents do not fit its size, and an ro volume the sandbox cannot read', async (t) => {
      const big = join(work, 'too-big');
      mkdirSync(big, { recursive: true });
      writeFileSync(join(big, 'f'), Buffer.alloc(9 * 1024 * 1024, 1));
      const policy = testPolicy({ entrypoint: ['true'], fs: { read: ['/data/inputs'], write: ['/data/outputs'] } });
      const r = await run(t, policy, { volumes: [{ host: big, sandbox: '/data/outputs', mode: 'rw', sizeBytes: 8 * 1024 * 1024 }] });
      if (!r) return;
      assert.equal(r.status, 'failed_to_start');
      assert.equal(r.error?.code, 'sandbox.volume_refused', r.error?.message);
      assert.equal(statSync(join(big, 'f')).size, 9 * 1024 * 1024, 'the folder is untouched');
      assert.deepEqual(readdirSync(big), ['f']);
      const secretDir = join(work, 'private');
      mkdirSync(secretDir, { recursive: true, mode: 0o700 });
      chmodSync(secretDir, 0o700);
      const u = await run(t, policy, { volumes: [{ host: secretDir, sandbox: '/data/inputs', mode: 'ro' }] });
      assert.equal(u?.status, 'failed_to_start');
      assert.equal(u?.error?.code, 'sandbox.volume_unreadable', u?.error?.message);
      assert.deepEqual(
        u?.events.map((e) => e.action),
        ['run.failed_to_start'],
      );
    });

    it('denies mount, ptrace, unshare, keyctl, bpf and the rest of the list with EPERM', async (t) => {
      const names = Object.keys(DENIED_PROBES);
      const script = [
        'import subprocess',
        `for n in ${JSON.stringify(['geteuid', ...names])}:`,
        '    print(n, subprocess.call(["/agent/probe-" + n]))',
      ].join('\n');
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script] }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const got = Object.fromEntries(
        r.out
          .trim()
          .split('\n')
          .map((l) => l.split(' '))
          .map(([k, v]) => [k, Number(v)]),
      );
      assert.equal(got['geteuid'], agentUid & 0xff, 'the probes run (positive control)');
      for (const [n, p] of Object.entries(DENIED_PROBES)) assert.equal(got[n], p.expect, `${n} -> errno ${got[n]}`);
    });

    it('applies permissions.syscalls.deny on top of the default profile', async (t) => {
      const r = await run(
        t,
        testPolicy({
          entrypoint: [
            'python3',
            '-c',
            'import os\ntry:\n    os.mkdir("/tmp/d")\n    print("made")\nexcept OSError as e:\n    print("errno", e.errno)',
          ],
          deny: ['mkdir', 'mkdirat'],
        }),
      );
      if (!r) return;
      assert.match(r.out, /errno 1\b/);
    });

    it('gives no privilege through a setuid-root binary of the image', async (t) => {
      const img = join(work, 'suid-image');
      mkdirSync(join(img, 'bin'), { recursive: true });
      writeFileSync(join(img, 'bin', 'euid'), syscallElf(GETEUID.nr, GETEUID.args, 'value'));
      chownSync(join(img, 'bin', 'euid'), 0, 0);
      chmodSync(join(img, 'bin', 'euid'), 0o4755);
      const r = await run(t, testPolicy({ entrypoint: ['/bin/euid'] }), { imageRootfs: img });
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.equal(r.exitCode, agentUid & 0xff, 'effective uid stays the agent uid');
    });

    it('has no network but loopback', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'print(open("/proc/net/dev").read())'] }));
      if (!r) return;
      const ifaces = r.out
        .split('\n')
        .slice(2)
        .map((l) => l.split(':')[0]?.trim())
        .filter((x) => x);
      assert.deepEqual(ifaces, ['lo']);
    });

    it('joins a network namespace it is given (egress gateway hook)', async (t) => {
      const ns = `aegis-conf-${process.pid}`;
      execFileSync('ip', ['netns', 'add', ns]);
      try {
        execFileSync('ip', ['-n', ns, 'link', 'add', 'aegis-probe0', 'type', 'veth', 'peer', 'name', 'aegis-probe1']);
        if (isolation === 'microvm') {
          // A guest kernel has interfaces of its own: its one virtio NIC (eth0), whose tap the
          // launcher makes in the given namespace. Connecting to the namespace's end of that link
          // is refused by the namespace's kernel (a TCP reset): the guest's link reaches it.
          const probe = [
            'import socket',
            'print(open("/proc/net/dev").read())',
            'try:',
            `    socket.create_connection(("${GUEST_LINK.namespace}", 9), timeout=20)`,
            '    print("CONNECTED")',
            'except ConnectionRefusedError:',
            '    print("REFUSED by the namespace")',
            'except OSError as e:',
            '    print("ERROR", e)',
          ].join('\n');
          const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', probe] }), {
            network: { kind: 'netns', path: `/run/netns/${ns}` },
          });
          if (!r) return;
          assert.equal(r.status, 'exited', r.err);
          assert.match(r.out, /^\s*eth0:/m, r.out);
          assert.match(r.out, /^REFUSED by the namespace$/m, r.out);
          // Afterwards the namespace is as it was given: no tap, and no forwarding ever turned on
          // (it holds no gateway filter for the guest, so nothing is forwarded: fail secure).
          assert.doesNotMatch(execFileSync('ip', ['-n', ns, '-o', 'link'], { encoding: 'utf8' }), new RegExp(GUEST_LINK.tap));
          assert.equal(execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/sys/net/ipv4/ip_forward'], { encoding: 'utf8' }).trim(), '0');
          return;
        }
        const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'print(open("/proc/net/dev").read())'] }), {
          network: { kind: 'netns', path: `/run/netns/${ns}` },
        });
        if (!r) return;
        assert.equal(r.status, 'exited', r.err);
        assert.match(r.out, /aegis-probe0:/);
      } finally {
        execFileSync('ip', ['netns', 'del', ns]);
      }
    });

    it('reports failed_to_start when the entrypoint cannot be executed', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['/nonexistent/binary'] }));
      if (!r) return;
      // crun and runc fail before the container starts; runsc starts its sandbox first and
      // then fails to load the binary (exit 128).
      if (isolation === 'gvisor')
        assert.ok(r.status === 'failed_to_start' || (r.status === 'exited' && r.exitCode === 128), `${r.status} ${r.exitCode}`);
      else assert.equal(r.status, 'failed_to_start');
    });

    it('hides the kernel command line, the boot id and the host block devices (regression: readable before)', async (t) => {
      const hostCmdline = readFileSync('/proc/cmdline', 'utf8').trim();
      const hostBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      const probe = [
        'import os',
        'for p in ["/proc/cmdline", "/proc/sys/kernel/random/boot_id", "/proc/partitions"]:',
        '    try:',
        '        print(p, repr(open(p).read()))',
        '    except OSError as e:',
        '        print(p, "errno", e.errno)',
        'for d in ["/sys/block", "/sys/class/block", "/sys/dev/block"]:',
        '    try:',
        '        print(d, sorted(os.listdir(d)))',
        '    except OSError as e:',
        '        print(d, "errno", e.errno)',
      ].join('\n');
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', probe] }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      assert.ok(!r.out.includes(hostCmdline), `the host's kernel command line is visible:\n${r.out}`);
      assert.ok(!r.out.includes(hostBootId), `the host's boot id is visible:\n${r.out}`);
      const hostDisks = readdirSync('/sys/block');
      for (const line of r.out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('/sys/'))) {
        assert.ok(/ \[\]$| errno 2$/.test(line), `host block devices visible (host has ${hostDisks.join(', ')}): ${line}`);
      }
      assert.match(r.out, /^\/proc\/partitions (''|errno 2)$/m);
    });

    it('keeps run state from other local users while the sandbox runs (regression: config.json was 0644)', async (t) => {
      const abort = new AbortController();
      const seen: string[] = [];
      const nobody = (args: string[]): number | null =>
        spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', ...args], { stdio: 'ignore' }).status;
      let id = '';
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'import time\nprint("up", flush=True)\ntime.sleep(30)'] }), {
        signal: abort.signal,
        stdout: (b) => {
          if (!b.toString().includes('up') || id !== '') return;
          id = readdirSync(join(stateDir, 'runs'))[0] ?? '';
          const bundle = join(stateDir, 'runs', id, 'bundle');
          seen.push(`root sees the bundle: ${existsSync(join(bundle, 'config.json'))}`);
          for (const f of [join(bundle, 'config.json'), join(stateDir, 'runs', id, 'record.json')]) {
            seen.push(`cat ${f}: ${nobody(['cat', f])}`);
          }
          for (const d of [join(stateDir, 'runs'), join(stateDir, 'runs', id), bundle, join(stateDir, isolation)])
            seen.push(`ls ${d}: ${nobody(['ls', d])}`);
          abort.abort();
        },
      });
      if (!r) return;
      assert.notEqual(id, '', 'the agent started');
      assert.equal(r.status, 'killed');
      assert.equal(seen.shift(), 'root sees the bundle: true');
      assert.equal(seen.length, 6);
      for (const s of seen) assert.ok(!s.endsWith(': 0'), `a non-root user could do it: ${s}`);
    });

    it('records the arguments, volumes and caller provenance in run.spawn', async (t) => {
      const vol = mkdtempSync(join(work, 'vol-'));
      chmodSync(vol, 0o755);
      const provenance = { principal: { kind: 'local', uid: 0, user: 'root' }, policy: { sha256: 'ab'.repeat(32) } };
      const r = await run(t, testPolicy({ entrypoint: ['python3', 'main.py'], fs: { read: ['/data/inputs'] } }), {
        extraArgs: ['0'],
        volumes: [{ host: vol, sandbox: '/data/inputs', mode: 'ro' }],
        provenance,
      });
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const spawned = r.events.find((e) => e.action === 'run.spawn');
      assert.ok(spawned !== undefined);
      const p = spawned.payload;
      assert.deepEqual(p['args'], ['python3', 'main.py', '0']);
      assert.deepEqual(p['volumes'], [{ host: vol, sandbox: '/data/inputs', mode: 'ro' }]);
      assert.deepEqual(p['principal'], provenance.principal);
      assert.deepEqual(p['policy'], provenance.policy);
      assert.equal(p['isolation'], isolation);
      assert.equal(typeof p['runtimePid'], 'number');
    });

    it('cleans up after an AEGIS process killed with SIGKILL (sweep at the next start)', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dist = new URL('../../src/sandbox/run.js', import.meta.url).pathname;
      // With an rw volume: its filesystem is mounted inside the run dir and must be swept too.
      const killedVol = join(work, 'killed-vol');
      mkdirSync(killedVol, { recursive: true });
      writeFileSync(join(killedVol, 'kept'), 'k');
      const prog = `import { runSandbox } from ${JSON.stringify(dist)};
        const policy = ${JSON.stringify(testPolicy({ entrypoint: ['python3', '-c', 'import time\nopen("/data/outputs/new", "w").write("n")\nprint("up", flush=True)\ntime.sleep(60)'] }))};
        await runSandbox({ policy, manifestDir: ${JSON.stringify(code)}, imageRootfs: ${JSON.stringify(rootfs)}, isolation: ${JSON.stringify(isolation)}, stateDir: ${JSON.stringify(stateDir)}, executionId: 'aegis-sigkill-${isolation}', volumes: [{ host: ${JSON.stringify(killedVol)}, sandbox: '/data/outputs', mode: 'rw', sizeBytes: 16777216 }], ...${JSON.stringify(copts.runOptions?.microvm !== undefined ? { microvm: copts.runOptions.microvm } : {})} });`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', prog], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('agent did not start')), copts.defaultTimeoutMs ?? 30_000);
        child.stdout.on('data', (b: Buffer) => {
          if (b.toString().includes('up')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const id = `aegis-sigkill-${isolation}`;
      assert.ok(runCgroupDirs(id).length > 0, 'the run is live');
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const swept = await sweepStaleRuns(stateDir);
      assert.deepEqual(
        swept.map((s) => s.id),
        [id],
      );
      // What the sweep found is reported (the CLI logs it as run.lost).
      const r = swept[0]!;
      assert.equal(r.agent, 'conformance');
      assert.equal(r.isolation, isolation);
      // A microVM keeps no runtime state outside its run directory: the VM ends with QEMU.
      assert.equal(r.removed.container, isolation !== 'microvm', 'the runtime still held the container');
      assert.ok(r.removed.cgroups.length > 0 && r.removed.cgroups.every((d) => d.endsWith(`/aegis/${id}`)), r.removed.cgroups.join(' '));
      assert.ok(r.removed.processes.length > 0, 'the agent was still running');
      assert.equal(r.removed.runDir, join(stateDir, 'runs', id));
      // The runtime process left behind exits once its container is gone.
      for (let i = 0; i < 100 && leftovers(stateDir, isolation, id).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(leftovers(stateDir, isolation, id), []);
      assert.deepEqual(
        readdirSync(killedVol),
        ['kept'],
        'the folder keeps its contents from before the run (LIMITATION: the writes are lost)',
      );
    });
  });
}

/** Tries writes everywhere interesting; prints one "path ok|errno" line each (python3-minimal has no json). */
const FS_PY = `
for p in ["/x", "/agent/x", "/etc/x", "/data/x", "/data/inputs/x", "/usr/x", "/root/x", "/var/x", "/tmp/x", "/data/outputs/x"]:
    try:
        with open(p, "w") as f:
            f.write("x")
        print(p, "ok")
    except OSError as e:
        print(p, "errno", e.errno)
`;

/**
 * Issue 8: sandboxes must not spend host root's (or each other's) per-user kernel quotas.
 *
 * For each counter, a "hog" agent exhausts it and holds it (prints `HELD <count> <errno name>`
 * when the kernel refused more); while it holds, host root (a root process in the host's user
 * namespace: `unshare --ipc chroot <image> python3`, so the probe leaves nothing in the host's
 * IPC namespace) and a second, concurrent sandbox perform the same operation, which must work.
 * Then the hog is stopped. Real sandboxes on crun and runc (gVisor serves these calls in its own
 * kernel: one case checks that for inotify).
 *
 * Before the fix (user namespace created by the runtime as root) the inotify instances and
 * watches, mqueue and pending-signal cases failed for host root (EMFILE, ENOSPC, EMFILE, EAGAIN),
 * and so did the rlimit and owner cases. The SHM_LOCK and pids cases passed already: root has
 * CAP_IPC_LOCK and is exempt from RLIMIT_NPROC, the parent-level SHM_LOCK check compares pages
 * with the creator's RLIMIT_MEMLOCK in bytes (so it did not bind), and the pids cgroup bounds
 * processes; they stay as checks. User namespaces and keys are denied by seccomp (re-checked).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveImage } from '../../src/images/index.js';
import { driverFor } from '../../src/sandbox/drivers/index.js';
import { runSandbox } from '../../src/sandbox/run.js';
import { requireOrSkip, sandboxRequirements, testPolicy, usernsHolders } from './sandbox-conformance.js';

const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;

/** Shared prelude of every script: libc through ctypes, and a helper printing errno names. */
const PRELUDE = `
import ctypes, errno, os, signal, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def ename():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def held(n, name):
    print("HELD", n, name, flush=True)
    time.sleep(120)
`;

interface Counter {
  /** Exhausts the counter, then calls held(count, errno name) (which sleeps). */
  readonly hog: string;
  /** The errno the hog must have stopped at (proof it hit a kernel limit). */
  readonly hogErrno: readonly string[];
  /** One operation of the same kind; prints OK or FAIL <errno>. */
  readonly probe: string;
  /** Memory for the hog (kernel objects are charged to its memory cgroup). */
  readonly memoryBytes?: number;
}

const COUNTERS: Readonly<Record<string, Counter>> = {
  'inotify instances': {
    hog: `
n = 0
while libc.inotify_init1(0) >= 0:
    n += 1
held(n, ename())`,
    hogErrno: ['EMFILE'],
    probe: `print("OK" if libc.inotify_init1(0) >= 0 else "FAIL " + ename())`,
  },
  'inotify watches': {
    // Every inode of the image under /usr, watched by one instance after another.
    hog: `
paths = []
for d, dirs, files in os.walk("/usr"):
    paths.append(d.encode())
    paths.extend(os.path.join(d, f).encode() for f in files)
n = 0
err = None
while err is None:
    fd = libc.inotify_init1(0)
    if fd < 0:
        err = "instances " + ename()
        break
    for p in paths:
        if libc.inotify_add_watch(fd, p, 0x1) < 0:
            e = ctypes.get_errno()
            if e == errno.ENOSPC:
                err = "ENOSPC"
                break
        else:
            n += 1
held(n, err)`,
    hogErrno: ['ENOSPC'],
    probe: `
fd = libc.inotify_init1(0)
print("OK" if fd >= 0 and libc.inotify_add_watch(fd, b"/", 0x1) >= 0 else "FAIL " + ename())`,
    memoryBytes: 512 * 1024 * 1024,
  },
  'POSIX message queue bytes': {
    hog: `
libc.mq_open.restype = ctypes.c_int
n = 0
while libc.mq_open(("/aegis-hog-%d" % n).encode(), os.O_CREAT | os.O_RDWR, 0o600, None) >= 0:
    n += 1
held(n, ename())`,
    hogErrno: ['EMFILE'],
    probe: `
libc.mq_open.restype = ctypes.c_int
name = ("/aegis-probe-%d" % os.getpid()).encode()
fd = libc.mq_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, None)
print("OK" if fd >= 0 else "FAIL " + ename())
libc.mq_unlink(name)`,
  },
  'pending signals': {
    // Real-time signals queue one entry each; tgkill(2) reports EAGAIN when none can be queued.
    hog: `
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
n = 0
try:
    while True:
        signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
        n += 1
except OSError as e:
    held(n, errno.errorcode.get(e.errno, str(e.errno)))`,
    hogErrno: ['EAGAIN'],
    probe: `
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
try:
    signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
    print("OK")
except OSError as e:
    print("FAIL", errno.errorcode.get(e.errno, str(e.errno)))`,
  },
  'locked shared memory (SHM_LOCK)': {
    hog: `
n = 0
while True:
    i = libc.shmget(0, 65536, 0o1600)
    if i < 0 or libc.shmctl(i, 11, None) < 0:
        break
    n += 1
held(n, ename())`,
    hogErrno: ['ENOMEM', 'EPERM'],
    probe: `
i = libc.shmget(0, 4096, 0o1600)
ok = i >= 0 and libc.shmctl(i, 11, None) >= 0
print("OK" if ok else "FAIL " + ename())
libc.shmctl(i, 0, None)`,
  },
  'processes (pids)': {
    hog: `
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        n += 1
except OSError as e:
    held(n, errno.errorcode.get(e.errno, str(e.errno)))`,
    hogErrno: ['EAGAIN'],
    probe: `
pid = os.fork()
if pid == 0:
    os._exit(7)
print("OK" if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7 else "FAIL")`,
  },
};

for (const isolation of ['crun', 'runc'] as const) {
  describe(`per-user kernel counters: ${isolation}`, { timeout: 300_000 }, () => {
    let rootfs = '';
    let unavailable: string | null = null;
    let work = '';

    before(async () => {
      ({ unavailable, rootfs } = await sandboxRequirements(isolation));
      work = mkdtempSync(`/var/tmp/aegis-quotas-${isolation}-`);
      chmodSync(work, 0o755);
      mkdirSync(join(work, 'agent'), { mode: 0o755 });
      writeFileSync(join(work, 'agent', 'main.py'), '');
    });
    after(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    /** Runs `code` in a sandbox; resolves with the result and its output. */
    const sandbox = (code: string, extra: { memoryBytes?: number; signal?: AbortSignal; onOut?: (s: string) => void } = {}) => {
      let out = '';
      let err = '';
      return runSandbox({
        policy: testPolicy({
          entrypoint: ['python3', '-c', PRELUDE + code],
          limits: { memoryBytes: extra.memoryBytes ?? 256 * 1024 * 1024, timeoutMs: 60_000 },
        }),
        manifestDir: join(work, 'agent'),
        imageRootfs: rootfs,
        isolation,
        stateDir: join(work, 'state'),
        graceMs: 200,
        ...(extra.signal !== undefined ? { signal: extra.signal } : {}),
        stdout: (b) => {
          out += b.toString();
          extra.onOut?.(out);
        },
        stderr: (b) => void (err += b.toString()),
      }).then((r) => ({ ...r, out, err }));
    };

    /** The probe as host root: root's user namespace, a throw-away IPC namespace, the image's python. */
    const asHostRoot = (code: string): string => {
      try {
        return execFileSync('unshare', ['--ipc', '--', 'chroot', rootfs, 'python3', '-c', PRELUDE + code], {
          encoding: 'utf8',
          env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', PYTHONDONTWRITEBYTECODE: '1' },
          timeout: 30_000,
        }).trim();
      } catch (e) {
        return `probe failed: ${(e as Error).message}`;
      }
    };

    /** Starts the hog, waits for HELD, runs `during` while it holds, then stops the hog. */
    const whileHeld = async <T>(c: Counter, during: () => Promise<T>): Promise<{ held: string; during: T }> => {
      const stop = new AbortController();
      let onHeld: (line: string) => void = () => undefined;
      const heldLine = new Promise<string>((resolve) => (onHeld = resolve));
      const hog = sandbox(c.hog, {
        ...(c.memoryBytes !== undefined ? { memoryBytes: c.memoryBytes } : {}),
        signal: stop.signal,
        onOut: (s) => {
          const m = /^HELD .*$/m.exec(s);
          if (m) onHeld(m[0]);
        },
      });
      const ended = hog.then((r) => `hog ended before holding: ${r.status} ${r.exitCode} ${r.error?.message ?? ''} ${r.err}`);
      try {
        const held = await Promise.race([heldLine, ended]);
        assert.match(held, /^HELD \d+ /, held);
        return { held, during: await during() };
      } finally {
        stop.abort();
        const r = await hog;
        assert.equal(r.status, 'killed', `the hog held until stopped: ${r.err}`);
      }
    };

    for (const [name, c] of Object.entries(COUNTERS)) {
      it(`an agent holding all its ${name} leaves host root's and another sandbox's intact`, async (t) => {
        if (!requireOrSkip(t, unavailable)) return;
        const r = await whileHeld(c, async () => ({ root: asHostRoot(c.probe), other: await sandbox(c.probe) }));
        t.diagnostic(r.held);
        assert.ok(
          c.hogErrno.some((e) => r.held.endsWith(` ${e}`)),
          `the hog hit a kernel limit: ${r.held}`,
        );
        assert.equal(r.during.root, 'OK', `host root, while the agent holds (${r.held})`);
        assert.equal(r.during.other.status, 'exited', r.during.other.err);
        assert.equal(r.during.other.out.trim(), 'OK', `a concurrent sandbox, while the agent holds (${r.held}): ${r.during.other.err}`);
      });
    }

    it('gives the agent the low per-sandbox rlimits (runc: inherited through prlimit)', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const r = await sandbox(`
import resource
print(*[resource.getrlimit(getattr(resource, "RLIMIT_" + n))[1] for n in ("MSGQUEUE", "SIGPENDING", "MEMLOCK", "NOFILE", "CORE")])`);
      assert.equal(r.status, 'exited', r.err);
      assert.equal(r.out.trim(), `${256 * 1024} 1024 ${64 * 1024} 1024 0`);
    });

    it('runs the sandbox in a user namespace owned by a dedicated uid, one per sandbox, none left after', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      // /proc/self/status in the sandbox cannot show the owner; the holders can, from the host.
      const seen: number[][] = [];
      const probe = 'print("up", flush=True)\ntime.sleep(120)';
      const stop = new AbortController();
      let up = 0;
      let bothUp: () => void = () => undefined;
      const ready = new Promise<void>((r) => (bothUp = r));
      const onOut = (s: string) => {
        if (s === 'up\n' && ++up === 2) bothUp();
      };
      const runs = [sandbox(probe, { signal: stop.signal, onOut }), sandbox(probe, { signal: stop.signal, onOut })];
      await Promise.race([ready, Promise.all(runs)]);
      seen.push(usernsHolders());
      stop.abort();
      const results = await Promise.all(runs);
      for (const r of results) assert.equal(r.status, 'killed', r.err);
      assert.equal(seen[0]?.length, 2, 'one holder (hence one owner uid) per sandbox');
      assert.deepEqual(usernsHolders(), [], 'holders are gone with their sandboxes');
    });

    it('refuses to start when the holder did not make a namespace of its own as the owner uid (fail secure)', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const first = await sandbox('print("OK")');
      assert.equal(first.out.trim(), 'OK', first.err);
      // The installed holder is trusted once per process: replace it behind AEGIS's back.
      const holder = join(work, 'state', 'bin', 'aegis-userns-holder');
      const fakes = {
        'stays in the host user namespace': '#!/bin/sh\necho ready\nexec sleep 60\n',
        'keeps running as root in a new user namespace': '#!/bin/sh\nexec unshare --user -- /bin/sh -c "echo ready; exec sleep 60"\n',
        'exits without a namespace': '#!/bin/sh\nexit 3\n',
      };
      try {
        for (const [what, script] of Object.entries(fakes)) {
          writeFileSync(holder, script, { mode: 0o700 });
          const r = await sandbox('print("started")');
          assert.equal(r.status, 'failed_to_start', what);
          assert.equal(r.error?.code, 'sandbox.userns_failed', `${what}: ${r.error?.message ?? ''}`);
          assert.equal(r.out, '', `${what}: the agent never ran`);
        }
      } finally {
        rmSync(holder, { force: true });
      }
      assert.deepEqual(readdirSync(join(work, 'state', 'runs')), [], 'nothing of the refused runs remains');
    });

    it('denies user namespaces and keyrings to the agent (seccomp), so it cannot charge those counters', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const r = await sandbox(`
out = []
out.append(libc.unshare(0x10000000) < 0 and ename())
out.append(libc.syscall(248, b"user", b"k", b"v", 1, -3) < 0 and ename())
out.append(libc.syscall(250, 0, -3, 0) < 0 and ename())
print(*out)`);
      assert.equal(r.status, 'exited', r.err);
      assert.equal(r.out.trim(), 'EPERM EPERM EPERM');
    });
  });
}

describe('per-user kernel counters: gvisor', { timeout: 300_000 }, () => {
  it('serves inotify in its own kernel: an agent holding its instances leaves host root its own', async (t) => {
    const why = driverFor('gvisor').unavailableReason();
    if (!requireOrSkip(t, why)) return;
    const rootfs = (await resolveImage(PY)).rootfs;
    const work = mkdtempSync('/var/tmp/aegis-quotas-gvisor-');
    try {
      chmodSync(work, 0o755);
      mkdirSync(join(work, 'agent'), { mode: 0o755 });
      const c = COUNTERS['inotify instances']!;
      const stop = new AbortController();
      let out = '';
      let onHeld: () => void = () => undefined;
      const held = new Promise<void>((r) => (onHeld = r));
      const hog = runSandbox({
        policy: testPolicy({ entrypoint: ['python3', '-c', PRELUDE + c.hog], limits: { timeoutMs: 60_000 } }),
        manifestDir: join(work, 'agent'),
        imageRootfs: rootfs,
        isolation: 'gvisor',
        stateDir: join(work, 'state'),
        graceMs: 200,
        signal: stop.signal,
        stdout: (b) => {
          out += b.toString();
          if (/^HELD /m.test(out)) onHeld();
        },
      });
      await Promise.race([held, hog]);
      const root = execFileSync('unshare', ['--ipc', '--', 'chroot', rootfs, 'python3', '-c', PRELUDE + c.probe], {
        encoding: 'utf8',
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
      }).trim();
      stop.abort();
      const r = await hog;
      assert.match(out, /^HELD \d+ EMFILE/m, `the hog hit gVisor's limit: ${out} ${r.status}`);
      assert.equal(root, 'OK');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

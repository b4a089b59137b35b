/**
 * The sandbox conformance suite: every runtime driver runs exactly these cases, with real
 * sandboxes (no mocks of the runtime) and the real python:3.11 image from the image store.
 *
 * After every case: no cgroup, mount, process, runtime state or run directory of the run
 * remains. When the runtime or the image is missing, the suite fails under CI=true and skips
 * (printing why) elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../src/audit/event.js';
import { resolveImage } from '../../src/images/index.js';
import type { Isolation, Policy } from '../../src/policy/types.js';
import { hybridHugetlbMissing, runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { driverFor } from '../../src/sandbox/drivers/index.js';
import { AGENT_HOST_GID, AGENT_HOST_UID, runSandbox, type RunResult, type RunSandboxOptions } from '../../src/sandbox/run.js';
import { PID_MAX_LIMIT, USERNS_OWNER_BASE } from '../../src/sandbox/spec/compile.js';
import { sweepStaleRuns } from '../../src/sandbox/state.js';
import { DENIED_PROBES, GETEUID, syscallElf } from './sandbox-probes.js';

const PY = { name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' } as const;

export function testPolicy(over: { entrypoint: string[]; fs?: Partial<Policy['fs']>; limits?: Partial<Policy['limits']>; deny?: string[] }): Policy {
  return {
    version: '1.0',
    agent: { name: 'conformance', runtime: PY, entrypoint: over.entrypoint, env: {}, secretRefs: {}, isolation: null, code: '.' },
    network: { rules: [], rateLimit: { perSecond: 1, burst: 2 }, byteQuota: null },
    fs: { read: over.fs?.read ?? [], write: over.fs?.write ?? ['/data/outputs'] },
    limits: {
      timeoutMs: 20_000,
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
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(id));
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
}

export function runConformance(isolation: Isolation, copts: ConformanceOptions = {}): void {
  describe(`sandbox conformance: ${isolation}`, { timeout: 300_000 }, () => {
    let rootfs = '';
    let unavailable: string | null = null;
    let work = '';
    let stateDir = '';
    let code = '';
    const secret = `/root/aegis-secret-${process.pid}-${isolation}`;
    const secretText = `TOP-SECRET-${Math.random()}`;

    before(async () => {
      if (isolation === 'crun') {
        try {
          ensureHugetlbMount();
        } catch (e) {
          unavailable = `cannot mount the hugetlb hierarchy: ${(e as Error).message}`;
        }
      }
      unavailable ??= driverFor(isolation).unavailableReason();
      try {
        rootfs = (await resolveImage(PY)).rootfs;
      } catch (e) {
        unavailable ??= `python:3.11 image missing (run "aegis image build python:3.11"): ${(e as Error).message}`;
      }
      work = mkdtempSync(`/var/tmp/aegis-conf-${isolation}-`);
      chmodSync(work, 0o755);
      stateDir = join(work, 'state');
      code = join(work, 'agent');
      mkdirSync(code);
      writeFileSync(secret, secretText, { mode: 0o600 });
      writeFileSync(join(code, 'main.py'), 'import sys\nprint("hello from", sys.argv[1:])\nsys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)\n');
      for (const [name, p] of Object.entries(DENIED_PROBES)) writeFileSync(join(code, `probe-${name}`), syscallElf(p.nr, p.args), { mode: 0o755 });
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
      const r = await runSandbox({
        policy,
        manifestDir: code,
        imageRootfs: rootfs,
        isolation,
        stateDir,
        stdout: (b) => void (out += b.toString()),
        stderr: (b) => void (err += b.toString()),
        audit: { append: (e) => void events.push(e) },
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
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', busy], limits: { cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 } } }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const ratio = r.cpuMs / r.durationMs;
      assert.ok(ratio < 0.75, `cpu/wall ratio ${ratio.toFixed(2)} must stay near 0.5 (cpu ${r.cpuMs} ms, wall ${r.durationMs} ms)`);
      assert.ok(ratio > 0.2, `the loop did run (ratio ${ratio.toFixed(2)})`);
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
      assert.ok(r.pidsLimitHit, 'the pids limit stopped the bomb');
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
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'import time\nprint("start", flush=True)\ntime.sleep(60)'], limits: { timeoutMs: 1500 } }), { graceMs: 300 });
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
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script], limits: { timeoutMs: 1500 } }), { graceMs: 3000 });
      if (!r) return;
      assert.equal(r.status, 'timeout');
      assert.equal(r.exitCode, 137);
      assert.match(r.out, /up\ngraceful\n/);
      assert.ok(r.durationMs < 1500 + 3000, `ended without waiting for the whole grace period (${r.durationMs} ms)`);
    });

    it('refuses writes to /, /agent and undeclared paths; allows /tmp and declared paths', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['python3', 'fs.py'], fs: { write: ['/data/outputs'], read: ['/data/inputs'] } }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const res = Object.fromEntries(r.out.trim().split('\n').map((l) => [l.split(' ')[0], l.split(' ').slice(1).join(' ')]));
      for (const p of ['/x', '/agent/x', '/etc/x', '/data/x', '/data/inputs/x', '/usr/x', '/root/x', '/var/x']) assert.notEqual(res[p], 'ok', `write to ${p} must fail`);
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

    it('denies mount, ptrace, unshare, keyctl, bpf and the rest of the list with EPERM', async (t) => {
      const names = Object.keys(DENIED_PROBES);
      const script = ['import subprocess', `for n in ${JSON.stringify(['geteuid', ...names])}:`, '    print(n, subprocess.call(["/agent/probe-" + n]))'].join('\n');
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', script] }));
      if (!r) return;
      assert.equal(r.status, 'exited', r.err);
      const got = Object.fromEntries(r.out.trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
      assert.equal(got['geteuid'], 1000 & 0xff, 'the probes run (positive control)');
      for (const [n, p] of Object.entries(DENIED_PROBES)) assert.equal(got[n], p.expect, `${n} -> errno ${got[n]}`);
    });

    it('applies permissions.syscalls.deny on top of the default profile', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'import os\ntry:\n    os.mkdir("/tmp/d")\n    print("made")\nexcept OSError as e:\n    print("errno", e.errno)'], deny: ['mkdir', 'mkdirat'] }));
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
      assert.equal(r.exitCode, 1000 & 0xff, 'effective uid stays the agent uid');
    });

    it('has no network but loopback', async (t) => {
      const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'print(open("/proc/net/dev").read())'] }));
      if (!r) return;
      const ifaces = r.out.split('\n').slice(2).map((l) => l.split(':')[0]?.trim()).filter((x) => x);
      assert.deepEqual(ifaces, ['lo']);
    });

    it('joins a network namespace it is given (egress gateway hook)', async (t) => {
      const ns = `aegis-conf-${process.pid}`;
      execFileSync('ip', ['netns', 'add', ns]);
      try {
        execFileSync('ip', ['-n', ns, 'link', 'add', 'aegis-probe0', 'type', 'veth', 'peer', 'name', 'aegis-probe1']);
        const r = await run(t, testPolicy({ entrypoint: ['python3', '-c', 'print(open("/proc/net/dev").read())'] }), { network: { kind: 'netns', path: `/run/netns/${ns}` } });
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
      if (isolation === 'gvisor') assert.ok(r.status === 'failed_to_start' || (r.status === 'exited' && r.exitCode === 128), `${r.status} ${r.exitCode}`);
      else assert.equal(r.status, 'failed_to_start');
    });

    it('cleans up after an AEGIS process killed with SIGKILL (sweep at the next start)', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dist = new URL('../../src/sandbox/run.js', import.meta.url).pathname;
      const prog = `import { runSandbox } from ${JSON.stringify(dist)};
        const policy = ${JSON.stringify(testPolicy({ entrypoint: ['python3', '-c', 'import time\nprint("up", flush=True)\ntime.sleep(60)'] }))};
        await runSandbox({ policy, manifestDir: ${JSON.stringify(code)}, imageRootfs: ${JSON.stringify(rootfs)}, isolation: ${JSON.stringify(isolation)}, stateDir: ${JSON.stringify(stateDir)}, executionId: 'aegis-sigkill-${isolation}' });`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', prog], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('agent did not start')), 30_000);
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
      assert.deepEqual(swept, [id]);
      // The runtime process left behind exits once its container is gone.
      for (let i = 0; i < 100 && leftovers(stateDir, isolation, id).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(leftovers(stateDir, isolation, id), []);
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

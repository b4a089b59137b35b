/**
 * `aegis run` and the operator's stdin, stdout and stderr, on every runtime (crun, runc, gVisor).
 *
 * Regression (issue 8): `aegis run` used to hand its own descriptors to the runtime, and crun
 * and runsc chowned them to the sandbox's host uid: a root-owned 0600 input file or log became
 * the agent's (rewrite the input, truncate the log, set its setuid bit), the host's /dev/null
 * was chowned (and could be chmod 600-ed), the operator's terminal too, and under gVisor a
 * large output to a pipe was cut short with exit 0. Now the runtime only gets pipes AEGIS made.
 *
 * Each case runs the real CLI (bin/aegis.js) with its streams set to regular files, /dev/null,
 * pipes or a terminal (a pty made by `script`), lets a hostile agent try fchmod, fchown,
 * ftruncate and a reopen through /proc/self/fd on fds 0, 1 and 2, and then checks owner, mode
 * and content of every host file, /dev/null and the terminal.
 */
import assert from 'node:assert/strict';
import { spawn, type StdioOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Isolation } from '../../src/policy/types.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

const repo = new URL('../../..', import.meta.url).pathname;
const bin = join(repo, 'bin', 'aegis.js');
const home = mkdtempSync(join(tmpdir(), 'aegis-stdio-home-'));
process.on('exit', () => rmSync(home, { recursive: true, force: true }));

/** The hostile agent: attacks its fds 0, 1, 2, then echoes stdin (unless told not to read it). */
const ATTACK_PY = `import os, sys
data = b"" if "noread" in sys.argv else sys.stdin.buffer.read()
for fd in (0, 1, 2):
    for attack in (lambda: os.fchmod(fd, 0o6777), lambda: os.fchown(fd, 1000, 1000), lambda: os.ftruncate(fd, 0)):
        try:
            attack()
        except OSError:
            pass
    try:
        with open("/proc/self/fd/%d" % fd, "r+b", buffering=0) as f:
            f.write(b"PWNED")
    except OSError:
        pass
os.write(1, b"OUT:" + data + b"\\n")
os.write(2, b"ERR:done\\n")
`;

/** Writes N MiB of a fixed pattern to stdout. */
const BIG_PY = `import sys
block = bytes(range(256)) * 4096
out = sys.stdout.buffer
for _ in range(int(sys.argv[1])):
    out.write(block)
out.flush()
`;
const BIG_MIB = 256;

function bigHash(mib: number): string {
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = i & 0xff;
  const h = createHash('sha256');
  for (let i = 0; i < mib; i++) h.update(block);
  return h.digest('hex');
}

interface Stat {
  uid: number;
  gid: number;
  mode: string;
}
function statOf(path: string): Stat {
  const st = statSync(path);
  return { uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8) };
}

interface Ran {
  code: number | null;
  out: Buffer;
  err: string;
}

/**
 * Runs `aegis run` with the given stdio; collects what arrives on pipes (or only its count and
 * hash). `stallMs`: the reader takes nothing at first, as a slow consumer would.
 */
function aegis(
  args: string[],
  stdio: StdioOptions,
  opt: { input?: Buffer | 'keep-open'; hashOut?: boolean; stallMs?: number; closeStdin?: boolean } = {},
): Promise<Ran & { hash?: string; bytes: number }> {
  const { input, hashOut = false, stallMs = 0, closeStdin = false } = opt;
  return new Promise((resolve) => {
    const env = { ...process.env, AEGIS_HOME: home };
    // closeStdin: started as `aegis ... <&-` (fd 0 closed).
    const child = closeStdin
      ? spawn('/bin/sh', ['-c', 'exec "$@" <&-', 'sh', process.execPath, bin, ...args], { stdio, env })
      : spawn(process.execPath, [bin, ...args], { stdio, env });
    const chunks: Buffer[] = [];
    const h = createHash('sha256');
    let bytes = 0;
    let err = '';
    child.stdout?.on('data', (b: Buffer) => {
      bytes += b.length;
      if (hashOut) h.update(b);
      else chunks.push(b);
    });
    if (stallMs > 0 && child.stdout) {
      child.stdout.pause();
      setTimeout(() => child.stdout?.resume(), stallMs);
    }
    child.stderr?.on('data', (b: Buffer) => void (err += b.toString()));
    if (child.stdin) {
      child.stdin.on('error', () => undefined);
      if (input !== 'keep-open') child.stdin.end(input ?? Buffer.alloc(0));
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 170_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      child.stdin?.destroy();
      resolve({ code, out: Buffer.concat(chunks), err, bytes, ...(hashOut ? { hash: h.digest('hex') } : {}) });
    });
  });
}

function manifest(dir: string, entrypoint: string[], time = '30s'): string {
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'attack.py'), ATTACK_PY, { mode: 0o644 });
  writeFileSync(join(dir, 'big.py'), BIG_PY, { mode: 0o644 });
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `version: "1.0"\nagent:\n  name: stdio-test\n  runtime: "python:3.11"\n  entrypoint: ${JSON.stringify(entrypoint)}\npermissions:\n  execution_time: ${time}\n  memory: 128MiB\n`,
  );
  return file;
}

/** /dev/null as it was before the suite: restored if a run changed it (old code did). */
const devNullBefore = statOf('/dev/null');
function restoreDevNull(): void {
  const now = statOf('/dev/null');
  if (now.uid !== devNullBefore.uid || now.gid !== devNullBefore.gid) chownSync('/dev/null', devNullBefore.uid, devNullBefore.gid);
  if (now.mode !== devNullBefore.mode) chmodSync('/dev/null', parseInt(devNullBefore.mode, 8));
}

for (const isolation of ['crun', 'runc', 'gvisor'] as const satisfies readonly Isolation[]) {
  describe(`aegis run stdio: ${isolation}`, { timeout: 600_000 }, () => {
    let unavailable: string | null = null;
    let work = '';
    let state = '';
    before(async () => {
      unavailable = await sandboxUnavailable(isolation);
      work = mkdtempSync(`/var/tmp/aegis-stdio-${isolation}-`);
      chmodSync(work, 0o755);
      state = join(work, 'state');
    });
    after(() => {
      restoreDevNull();
      rmSync(work, { recursive: true, force: true });
    });
    const runArgs = (file: string, extra: string[] = []): string[] => [
      'run',
      file,
      '--isolation',
      isolation,
      '--state-dir',
      state,
      ...(extra.length ? ['--', ...extra] : []),
    ];

    for (const layout of ['stdout >> log, stderr > file', 'stdout > file, stderr >> log'] as const) {
      it(`regular files (${layout}, stdin < a root-owned 0600 file): owner, mode and content unchanged but for the appended output`, async (t) => {
        if (!requireOrSkip(t, unavailable)) return;
        const dir = mkdtempSync(join(work, 'files-'));
        const file = manifest(dir, ['python3', 'attack.py']);
        const input = join(dir, 'input.txt');
        const log = join(dir, 'agents.log');
        const plain = join(dir, 'plain.out');
        writeFileSync(input, 'the input\n', { mode: 0o600 });
        writeFileSync(log, 'old log line\n', { mode: 0o600 });
        writeFileSync(plain, 'previous content that > truncates\n', { mode: 0o600 });
        const before = [input, log, plain].map(statOf);
        const fin = openSync(input, 'r');
        const fappend = openSync(log, 'a');
        // `{ echo header; aegis run ...; } > plain`: the agent's output must follow the header.
        const fplain = openSync(plain, 'w', 0o600);
        writeSync(fplain, 'header\n');
        const stdoutToLog = layout.startsWith('stdout >>');
        let r: Ran;
        try {
          r = await aegis(runArgs(file), stdoutToLog ? [fin, fappend, fplain] : [fin, fplain, fappend]);
        } finally {
          closeSync(fin);
          closeSync(fappend);
          closeSync(fplain);
        }
        assert.equal(r.code, 0, readFileSync(stdoutToLog ? plain : log, 'utf8'));
        assert.deepEqual([input, log, plain].map(statOf), before, 'owner and mode unchanged (no chown to the sandbox uid, no setuid bit)');
        assert.equal(readFileSync(input, 'utf8'), 'the input\n', 'the input was not rewritten');
        // runc interposes pipes of its own, which the agent may reopen and write to: that is only
        // more output ("PWNED"), appended like the rest. Anything else would be an attack landing.
        const out = '(PWNED)*OUT:the input\\n\\n';
        const err = '(PWNED)*ERR:done\\n';
        assert.match(
          readFileSync(log, 'utf8'),
          new RegExp(`^old log line\\n${stdoutToLog ? out : err}$`),
          'the log was appended to, not truncated or overwritten',
        );
        assert.match(
          readFileSync(plain, 'utf8'),
          new RegExp(`^header\\n${stdoutToLog ? err : out}$`),
          'the output landed after what the file held',
        );
      });
    }

    it('/dev/null on every stream: the host /dev/null keeps owner and mode; the agent sees an empty stdin', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, 'null-'));
      const before = statOf('/dev/null');
      const summary = join(dir, 's.json');
      try {
        const r = await aegis([...runArgs(manifest(dir, ['python3', 'attack.py'])), '--summary', summary], ['ignore', 'ignore', 'ignore']);
        assert.equal(r.code, 0);
        // The agent read stdin to its end (EOF), or it would have run into its time limit.
        assert.equal((JSON.parse(readFileSync(summary, 'utf8')) as { status: string }).status, 'exited');
        assert.deepEqual(statOf('/dev/null'), before, '/dev/null owner and mode unchanged');
        // A closed stdin (`<&-`) is an empty one too (Node opens /dev/null on fd 0 for AEGIS;
        // AEGIS reads it and the sandbox gets an empty pipe).
        const closed = await aegis(runArgs(join(dir, 'agent.yaml')), ['ignore', 'pipe', 'pipe'], { closeStdin: true });
        assert.equal(closed.code, 0, closed.err);
        assert.match(closed.out.toString(), /OUT:\n$/);
      } finally {
        restoreDevNull();
      }
    });

    it('reports a failing destination (stdout to /dev/full: ENOSPC) instead of losing output silently', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, 'full-'));
      const before = statOf('/dev/full');
      const full = openSync('/dev/full', 'w');
      let r: Ran;
      try {
        r = await aegis(runArgs(manifest(dir, ['python3', 'attack.py', 'noread'])), ['ignore', full, 'pipe']);
      } finally {
        closeSync(full);
        const now = statOf('/dev/full');
        if (now.uid !== before.uid || now.gid !== before.gid) chownSync('/dev/full', before.uid, before.gid);
        if (now.mode !== before.mode) chmodSync('/dev/full', parseInt(before.mode, 8));
      }
      assert.match(r.err, /aegis run: writing the agent's stdout failed \(ENOSPC\)/, r.err);
      assert.deepEqual(statOf('/dev/full'), before);
    });

    it('pipes on every stream: input arrives, EOF propagates, output arrives', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, 'pipe-'));
      const r = await aegis(runArgs(manifest(dir, ['python3', 'attack.py'])), ['pipe', 'pipe', 'pipe'], {
        input: Buffer.from('piped input'),
      });
      assert.equal(r.code, 0, r.err);
      assert.match(r.out.toString(), /^(PWNED)*OUT:piped input\n$/);
      assert.match(r.err, /ERR:done\n/);
      // An agent that never reads stdin, whose writer never closes it: the run still ends
      // with the agent (a hang would run into the test's timeout).
      const open = await aegis(runArgs(join(dir, 'agent.yaml'), ['noread']), ['pipe', 'pipe', 'pipe'], { input: 'keep-open' });
      assert.equal(open.code, 0, open.err);
      assert.match(open.out.toString(), /OUT:\n$/);
    });

    it('a terminal on every stream: the pty keeps its owner and mode, typed input reaches the agent', async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, 'tty-'));
      const file = manifest(dir, ['python3', 'attack.py']);
      const cmd = [
        'stat -c "before %u:%g:%a" "$(tty)"',
        `${process.execPath} ${bin} run ${file} --isolation ${isolation} --state-dir ${state}`,
        'echo "rc=$?"',
        'stat -c "after %u:%g:%a" "$(tty)"',
      ].join('; ');
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn('script', ['-qec', cmd, '/dev/null'], {
          stdio: ['pipe', 'pipe', 'inherit'],
          env: { ...process.env, AEGIS_HOME: home },
        });
        let out = '';
        child.stdout.on('data', (b: Buffer) => void (out += b.toString()));
        // Typed by the "operator": a line, then ^D (EOF) for the agent's read.
        child.stdin.write('typed line\n\x04');
        const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
        child.on('close', (code) => {
          clearTimeout(timer);
          child.stdin.destroy();
          resolve({ code, out: out.replace(/\r\n/g, '\n') });
        });
      });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /rc=0\n/, r.out);
      assert.match(r.out, /OUT:typed line\n/, r.out);
      const before = /before (\S+)/.exec(r.out)?.[1];
      const afterRun = /after (\S+)/.exec(r.out)?.[1];
      assert.ok(before !== undefined && !before.startsWith('101000') && !before.startsWith('65534'), r.out);
      assert.equal(afterRun, before, 'the terminal keeps its owner and mode');
    });

    it(`${BIG_MIB} MiB written to a stdout pipe arrive complete (byte count and hash), exit 0, also to a reader that stalls at first`, async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, 'big-'));
      const file = manifest(dir, ['python3', 'big.py'], '120s');
      for (const stallMs of [0, 2000]) {
        const r = await aegis(runArgs(file, [String(BIG_MIB)]), ['ignore', 'pipe', 'pipe'], { hashOut: true, stallMs });
        assert.equal(r.code, 0, r.err);
        assert.equal(r.bytes, BIG_MIB * 1024 * 1024, `stall ${stallMs} ms`);
        assert.equal(r.hash, bigHash(BIG_MIB));
      }
    });

    it("stops quietly when the operator's reader goes away (EPIPE), and ignores stdin the agent never reads", async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, 'epipe-'));
      const file = manifest(dir, ['python3', 'big.py'], '60s');
      // `yes | aegis run ... | head -c 1000`: a lot of input nobody reads, a reader that leaves.
      const r = await new Promise<{ code: number | null; err: string; out: number }>((resolve) => {
        const child = spawn(
          '/bin/sh',
          [
            '-c',
            `head -c 50000000 /dev/zero | ${process.execPath} ${bin} ${runArgs(file, ['64']).join(' ')} | head -c 1000 | wc -c; echo "status $?"`,
          ],
          {
            stdio: ['ignore', 'pipe', 'pipe'],
            env: { ...process.env, AEGIS_HOME: home },
          },
        );
        let out = '';
        let err = '';
        child.stdout.on('data', (b: Buffer) => void (out += b.toString()));
        child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
        child.on('close', (code) => resolve({ code, err, out: Number(/^(\d+)/.exec(out)?.[1] ?? NaN) }));
      });
      assert.equal(r.code, 0);
      assert.equal(r.out, 1000);
      // The agent met EPIPE (Python's BrokenPipeError); AEGIS itself reported nothing.
      assert.doesNotMatch(r.err, /aegis/i, r.err);
    });
  });
}

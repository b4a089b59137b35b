/**
 * `aegis run` end to end through bin/aegis.js: exit codes, streaming, --summary, --dry-run,
 * refused volumes, timeout, and SIGTERM to AEGIS (the sandbox is stopped and removed).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MONITOR_ACTIONS } from '../../src/monitor/index.js';
import { runCgroupDirs } from '../../src/sandbox/cgroups/index.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';

const repo = REPO_ROOT;
const bin = AEGIS_BIN;

interface Ran {
  code: number | null;
  out: string;
  err: string;
}

/** Every run writes its events into the audit log under $AEGIS_HOME: a throw-away one here. */
const home = mkdtempSync(join(tmpdir(), 'aegis-cli-home-'));
process.on('exit', () => rmSync(home, { recursive: true, force: true }));

function aegis(args: string[], onStart?: (child: ReturnType<typeof spawn>) => void): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, AEGIS_HOME: home } });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      onStart?.(child);
    });
    child.stderr.on('data', (b: Buffer) => void (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

function manifest(dir: string, entrypoint: string[], extra = ''): string {
  chmodSync(dir, 0o755);
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `version: "1.0"\nagent:\n  name: cli-test\n  runtime: "python:3.11"\n  entrypoint: ${JSON.stringify(entrypoint)}\npermissions:\n  fs:\n    write: ["/data/outputs"]\n  execution_time: 20s\n  memory: 128MiB\n${extra}`,
  );
  return file;
}

describe('aegis run (CLI)', { timeout: 180_000 }, () => {
  let work = '';
  let state = '';
  let unavailable: string | null = null;
  before(async () => {
    unavailable = await sandboxUnavailable();
    work = mkdtempSync('/var/tmp/aegis-cli-');
    chmodSync(work, 0o755);
    state = join(work, 'state');
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  const nothingLeft = (): void => {
    const runs = existsSync(join(state, 'runs')) ? readdirSync(join(state, 'runs')) : [];
    assert.deepEqual(runs, [], 'no run directory remains');
  };

  it('runs examples/hello: output streams through, --summary has exactly the contract keys', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const summary = join(work, 'hello.json');
    const out = mkdtempSync(join(work, 'hello-out-'));
    const r = await aegis([
      'run',
      join(repo, 'examples/hello/agent.yaml'),
      '--state-dir',
      state,
      '--volume',
      `${out}:/data/outputs:rw`,
      '--summary',
      summary,
      '--',
      'a',
      'b',
    ]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote \/data\/outputs\/hello.txt: hello from the sandbox/);
    assert.equal(statSync(join(out, 'hello.txt')).uid, process.getuid!(), 'the output belongs to the user who ran aegis');
    assert.doesNotMatch(r.err, /warning/);
    assert.match(r.out, /extra args: \['a', 'b'\]/);
    const s = JSON.parse(readFileSync(summary, 'utf8')) as Record<string, unknown>;
    // The contract keys, then `alerts` (the default rule pack ran; a benign run raises nothing).
    assert.deepEqual(Object.keys(s), ['executionId', 'status', 'exitCode', 'durationMs', 'cpuMs', 'maxMemoryBytes', 'alerts']);
    assert.deepEqual(s['alerts'], { raised: 0, delivered: 0, failed: 0, dropped: 0 });
    assert.equal(s['status'], 'exited');
    assert.equal(s['exitCode'], 0);
    assert.ok(runCgroupDirs(String(s['executionId'])).length === 0);
    nothingLeft();
  });

  it('writes every run into the audit log, failed starts included, and the log verifies', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const events = async (summaryFile: string): Promise<Array<{ action: string; decision: string; reason?: string }>> => {
      const id = (JSON.parse(readFileSync(summaryFile, 'utf8')) as { executionId: string }).executionId;
      const q = await aegis(['audit', 'query', '--json', '--execution', id]);
      assert.equal(q.code, 0, q.err);
      return q.out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { event: { action: string; decision: string; reason?: string } }).event);
    };
    const ok = join(work, 'audited.json');
    assert.equal((await aegis(['run', join(repo, 'examples/hello/agent.yaml'), '--state-dir', state, '--summary', ok])).code, 0);
    assert.deepEqual(
      // The lifecycle; the runtime monitor's events (AEGIS_MONITOR=auto) are tested in monitor.test.ts.
      (await events(ok)).map((e) => e.action).filter((a) => !MONITOR_ACTIONS.has(a)),
      ['run.spawn', 'run.start', 'resource.usage', 'run.exit'],
    );
    const refused = join(work, 'audited-refused.json');
    assert.equal(
      (
        await aegis([
          'run',
          join(repo, 'examples/hello/agent.yaml'),
          '--state-dir',
          state,
          '--volume',
          '/root:/data/inputs',
          '--summary',
          refused,
        ])
      ).code,
      125,
    );
    const f = await events(refused);
    assert.equal(f.length, 1);
    assert.equal(f[0]!.action, 'run.failed_to_start');
    assert.equal(f[0]!.decision, 'deny');
    const v = await aegis(['audit', 'verify']);
    assert.equal(v.code, 0, v.out + v.err);
  });

  it("exits with the agent's exit code", async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const dir = mkdtempSync(join(work, 'exit-'));
    const r = await aegis(['run', manifest(dir, ['python3', '-c', 'import sys; sys.exit(7)']), '--state-dir', state]);
    assert.equal(r.code, 7, r.err);
    // Regression guard for the compiled-policy cache: an edited manifest is recompiled.
    const again = await aegis(['run', manifest(dir, ['python3', '-c', 'import sys; sys.exit(9)']), '--state-dir', state]);
    assert.equal(again.code, 9, again.err);
  });

  it('exits 137 with status timeout when the execution time runs out', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const dir = mkdtempSync(join(work, 'timeout-'));
    const summary = join(dir, 's.json');
    const file = manifest(dir, ['python3', '-c', 'import time; time.sleep(60)']).replace(/$/, '');
    writeFileSync(file, readFileSync(file, 'utf8').replace('execution_time: 20s', 'execution_time: 1s'));
    const r = await aegis(['run', file, '--state-dir', state, '--summary', summary]);
    assert.equal(r.code, 137, r.err);
    assert.equal(JSON.parse(readFileSync(summary, 'utf8')).status, 'timeout');
    nothingLeft();
  });

  it('exits 125 before starting anything when the code dir is unreadable by the sandbox or a volume is not granted', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const summary = join(work, 'refused.json');
    const dir = mkdtempSync(join(work, 'unreadable-'));
    const unreadable = await aegis(['run', manifest(dir, ['true']), '--state-dir', state]);
    chmodSync(dir, 0o700);
    const again = await aegis(['run', join(dir, 'agent.yaml'), '--state-dir', state]);
    assert.equal(unreadable.code, 0, unreadable.err);
    assert.equal(again.code, 125);
    assert.match(again.err, /not readable by the sandbox's host uid/);
    const r = await aegis([
      'run',
      join(repo, 'examples/hello/agent.yaml'),
      '--state-dir',
      state,
      '--volume',
      '/root:/data/inputs',
      '--summary',
      summary,
    ]);
    assert.equal(r.code, 125);
    assert.match(r.err, /refused: fs\.denied\.not_granted/);
    assert.equal(JSON.parse(readFileSync(summary, 'utf8')).status, 'failed_to_start');
    assert.equal(r.out, '');
    nothingLeft();
  });

  it('warns when an fs.write path has no volume (stderr and --summary), and refuses an unreadable input folder with 125', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const summary = join(work, 'warned.json');
    const r = await aegis(['run', join(repo, 'examples/hello/agent.yaml'), '--state-dir', state, '--summary', summary]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /^aegis run: warning: fs\.write path \/data\/outputs has no --volume: what the agent writes there is discarded/m);
    const s = JSON.parse(readFileSync(summary, 'utf8')) as { warnings?: string[] };
    assert.equal(s.warnings?.length, 1);
    assert.match(s.warnings![0]!, /\/data\/outputs has no --volume/);

    // Regression (issue 8): a 0700 input folder was found only when the agent failed inside.
    const dir = mkdtempSync(join(work, 'reader-'));
    const file = manifest(dir, ['python3', '-c', 'import os; print(os.listdir("/data/inputs"))']);
    writeFileSync(file, readFileSync(file, 'utf8').replace('  fs:\n', '  fs:\n    read: ["/data/inputs"]\n'));
    const inputs = mkdtempSync(join(work, 'inputs-'));
    writeFileSync(join(inputs, 'in.txt'), 'x');
    chmodSync(inputs, 0o755);
    const readable = await aegis(['run', file, '--state-dir', state, '--volume', `${inputs}:/data/inputs`]);
    assert.equal(readable.code, 0, readable.err);
    assert.match(readable.out, /in\.txt/);
    chmodSync(inputs, 0o700);
    const refused = await aegis(['run', file, '--state-dir', state, '--volume', `${inputs}:/data/inputs`]);
    assert.equal(refused.code, 125);
    assert.match(refused.err, /volume source .* is not readable by the sandbox's host uid 101000/);
    assert.equal(refused.out, '', 'the agent never ran');
    nothingLeft();
  });

  it('bounds an rw volume with ,size= (ENOSPC inside, the host folder holds at most that)', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const dir = mkdtempSync(join(work, 'bounded-'));
    const write =
      'n = 0\ntry:\n    f = open("/data/outputs/big", "wb")\n    while True:\n        f.write(b"x" * 65536)\n        f.flush()\n        n += 65536\nexcept OSError as e:\n    print("errno", e.errno, n)';
    const out = mkdtempSync(join(work, 'bounded-out-'));
    const r = await aegis([
      'run',
      manifest(dir, ['python3', '-c', write]),
      '--state-dir',
      state,
      '--volume',
      `${out}:/data/outputs:rw,size=10M`,
    ]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /errno 28 \d+/);
    assert.ok(statSync(join(out, 'big')).size <= 10 * 1024 * 1024, `${statSync(join(out, 'big')).size} bytes`);
    assert.ok(statSync(join(out, 'big')).size > 5 * 1024 * 1024);
    const bad = await aegis(['run', manifest(dir, ['true']), '--state-dir', state, '--volume', `${out}:/data/outputs:rw,size=lots`]);
    assert.equal(bad.code, 125);
    assert.match(bad.err, /--volume .*size/);
    nothingLeft();
  });

  it('exits 125 with a clear message when the manifest is invalid', async () => {
    const dir = mkdtempSync(join(work, 'bad-'));
    writeFileSync(join(dir, 'agent.yaml'), 'version: "9"\n');
    const r = await aegis(['run', join(dir, 'agent.yaml'), '--state-dir', state]);
    assert.equal(r.code, 125);
    assert.match(r.err, /agent\.yaml:\d+:\d+/);
  });

  it('intersects --seccomp-profile with the default, and refuses a malformed one with 125', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const dir = mkdtempSync(join(work, 'seccomp-'));
    const file = manifest(dir, [
      'python3',
      '-c',
      'import os\ntry:\n    os.mkdir("/tmp/d")\n    print("made")\nexcept OSError as e:\n    print("errno", e.errno)',
    ]);
    const profile = join(dir, 'profile.json');
    writeFileSync(
      profile,
      JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }] }),
    );
    const r = await aegis(['run', file, '--state-dir', state, '--seccomp-profile', profile]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /errno 1\b/);
    const plain = await aegis(['run', file, '--state-dir', state]);
    assert.match(plain.out, /made/);
    writeFileSync(profile, '{"syscalls": 3}');
    const bad = await aegis(['run', file, '--state-dir', state, '--seccomp-profile', profile]);
    assert.equal(bad.code, 125);
    assert.match(bad.err, /seccomp profile/);
    nothingLeft();
  });

  it('prints the bundle with --dry-run and runs nothing', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const r = await aegis(['run', join(repo, 'examples/hello/agent.yaml'), '--state-dir', state, '--dry-run', '--', 'x']);
    assert.equal(r.code, 0, r.err);
    const b = JSON.parse(r.out) as { config: { process: { args: string[] }; linux: { seccomp: { defaultAction: string } } } };
    assert.deepEqual(b.config.process.args, ['python3', 'main.py', 'x']);
    assert.equal(b.config.linux.seccomp.defaultAction, 'SCMP_ACT_ERRNO');
    nothingLeft();
  });

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`stops the sandbox and exits 137 when AEGIS gets ${sig}, leaving nothing behind`, async (t) => {
      if (!requireOrSkip(t, unavailable)) return;
      const dir = mkdtempSync(join(work, `${sig}-`));
      const summary = join(dir, 's.json');
      let sent = false;
      const r = await aegis(
        [
          'run',
          manifest(dir, ['python3', '-c', 'import time\nprint("up", flush=True)\ntime.sleep(60)']),
          '--state-dir',
          state,
          '--summary',
          summary,
        ],
        (child) => {
          if (!sent) {
            sent = true;
            child.kill(sig);
          }
        },
      );
      assert.equal(r.code, 137, r.err);
      const s = JSON.parse(readFileSync(summary, 'utf8')) as { status: string; executionId: string };
      assert.equal(s.status, 'killed');
      assert.deepEqual(runCgroupDirs(s.executionId), []);
      nothingLeft();
    });
  }
});

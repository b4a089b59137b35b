/**
 * `aegis policy test <m> fs read|write <path>` against what a real crun sandbox of the same
 * manifest allows: a probe agent tries every read and write below, and each CLI answer must match
 * (regression: the CLI said deny for /tmp, /agent and the image, which the agent can use).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

/** Existing paths (files with content, or directories) the agent reads. */
const READS = [
  '/agent/main.py',
  '/etc/passwd',
  '/usr/bin/python3',
  '/tmp',
  '/data/inputs',
  '/data/outputs',
  '/proc/self/status',
  '/proc/kcore',
  '/sys/kernel',
];
/** Paths the agent writes: appends to existing files, creates the others. */
const WRITES = [
  '/tmp/x',
  '/agent/main.py',
  '/agent/new.txt',
  '/etc/passwd',
  '/etc/new.txt',
  '/usr/local/x',
  '/data/outputs/r.txt',
  '/data/inputs/x',
  '/data/other.txt',
  '/dev/null',
  '/dev/shm/x',
  '/dev/new',
  '/proc/sys/kernel/hostname',
  '/proc/kcore',
];

const PROBE = `
import json, os, sys
reads, writes = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for p in reads:
    try:
        if os.path.isdir(p):
            os.listdir(p); ok = True
        else:
            with open(p, 'rb') as f: ok = len(f.read(4096)) > 0  # a masked file reads as empty
        out['read ' + p] = ok
    except OSError as e:
        out['read ' + p] = False
for p in writes:
    try:
        if os.path.lexists(p):
            with open(p, 'ab') as f: f.write(b'')
        else:
            with open(p, 'xb') as f: f.write(b'x')
            os.unlink(p)
        out['write ' + p] = True
    except OSError as e:
        out['write ' + p] = False
print(json.dumps(out))
`;

function aegis(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('policy test fs answers what a crun sandbox allows', { timeout: 120_000 }, () => {
  let work = '';
  let unavailable: string | null = null;
  before(async () => {
    unavailable = await sandboxUnavailable();
    work = mkdtempSync('/var/tmp/aegis-view-');
    chmodSync(work, 0o755);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('for reads and writes in /tmp, /agent, the image, the grants, /dev and /proc', async (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const code = join(work, 'agent');
    rmSync(code, { recursive: true, force: true });
    mkdirSync(code, { recursive: true });
    chmodSync(code, 0o755);
    writeFileSync(join(code, 'main.py'), 'print("hello")\n');
    writeFileSync(join(code, 'probe.py'), PROBE);
    const file = join(code, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent:\n  name: view-probe\n  runtime: "python:3.11"\n  entrypoint: ["python3", "probe.py"]\n  isolation: crun\npermissions:\n  fs:\n    read: ["/data/inputs"]\n    write: ["/data/outputs"]\n  execution_time: 30s\n',
    );
    const home = join(work, 'home');
    mkdirSync(home, { recursive: true });
    const r = aegis(['run', file, '--state-dir', join(work, 'state'), '--', JSON.stringify(READS), JSON.stringify(WRITES)], {
      AEGIS_HOME: home,
    });
    assert.equal(r.code, 0, r.err);
    const seen = JSON.parse(r.out) as Record<string, boolean>;
    const mismatches: string[] = [];
    for (const [mode, paths] of [
      ['read', READS],
      ['write', WRITES],
    ] as const) {
      for (const p of paths) {
        const answer = aegis(['policy', 'test', '--json', file, 'fs', mode, p]);
        assert.ok(answer.code === 0 || answer.code === 1, answer.err);
        const d = JSON.parse(answer.out) as { allow: boolean; reason: string };
        if (d.allow !== seen[`${mode} ${p}`])
          mismatches.push(
            `${mode} ${p}: CLI ${d.allow ? 'allow' : 'deny'} (${d.reason}), sandbox ${seen[`${mode} ${p}`] ? 'allowed' : 'refused'}`,
          );
      }
    }
    assert.deepEqual(mismatches, []);
    // The paths of the issue, and both answers present: the probe is not trivially all-allow.
    assert.equal(seen['write /tmp/x'], true);
    assert.equal(seen['read /agent/main.py'], true);
    assert.equal(seen['read /etc/passwd'], true);
    assert.equal(seen['write /etc/passwd'], false);
    assert.equal(seen['write /agent/main.py'], false);
  });
});

/**
 * The per-agent anomaly baseline through the real CLI (crun): an agent runs enough times to
 * build a history (AEGIS_BASELINE_MIN_HISTORY=3 here instead of 20, to keep the test small),
 * then a changed run of it (holding 200 MB) is flagged at the end of `aegis run` with an
 * `alert.raised` naming the feature; the same change before the minimum history raises nothing;
 * `aegis alerts baseline` shows the model and the scores.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveImage } from '../../src/images/index.js';
import { driverFor } from '../../src/sandbox/drivers/index.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { ensureHugetlbMount, requireOrSkip } from './sandbox-conformance.js';

describe('the anomaly baseline at the end of aegis run', { timeout: 180_000 }, () => {
  let work = '';
  let home = '';
  let unavailable: string | null = null;
  const aegis = (args: string[]) => {
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, AEGIS_HOME: home, AEGIS_BASELINE_MIN_HISTORY: '3', AEGIS_ALERT_RULES: '', AEGIS_BASELINE: 'on' },
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const agentFile = (name: string): string => {
    const dir = join(work, name);
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    writeFileSync(
      join(dir, 'main.py'),
      'import sys\nif sys.argv[1:] == ["hog"]:\n    b = bytearray(200 * 1024 * 1024)\n    b[::4096] = b"\\x01" * len(b[::4096])\nprint("ok")\n',
    );
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `version: "1.0"\nagent:\n  name: ${name}\n  runtime: "python:3.11"\n  entrypoint: ["python3", "main.py"]\n  isolation: crun\npermissions:\n  memory: 512MiB\n`,
    );
    return file;
  };
  const baselineAlerts = () =>
    aegis(['audit', 'query', '--action', 'alert.raised', '--json'])
      .out.trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { event: { actor: { execution: string }; payload: Record<string, unknown> } }).event)
      .filter((e) => e.payload['rule'] === 'aegis-baseline-anomaly');

  before(async () => {
    try {
      ensureHugetlbMount();
    } catch (e) {
      unavailable = `cannot mount the hugetlb hierarchy: ${(e as Error).message}`;
    }
    unavailable ??= driverFor('crun').unavailableReason();
    try {
      await resolveImage({ name: 'python', tag: '3.11', digest: null, ref: 'python:3.11' });
    } catch (e) {
      unavailable ??= `python:3.11 image missing: ${(e as Error).message}`;
    }
    work = mkdtempSync('/var/tmp/aegis-baseline-');
    chmodSync(work, 0o755);
    home = join(work, 'home');
    mkdirSync(home);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('stays quiet while learning, then flags a changed run and says why', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    // Learning: the change as the second run of an agent raises nothing.
    const young = agentFile('bl-young');
    assert.equal(aegis(['run', young]).code, 0);
    const early = aegis(['run', young, 'hog']);
    assert.equal(early.code, 0, early.err);
    assert.doesNotMatch(early.err, /aegis-baseline-anomaly/);

    const file = agentFile('bl-steady');
    for (let i = 0; i < 4; i++) {
      const r = aegis(['run', file]);
      assert.equal(r.code, 0, r.err);
      assert.doesNotMatch(r.err, /aegis-baseline-anomaly/, `normal run ${i}`);
    }
    assert.deepEqual(baselineAlerts(), [], 'no baseline alert before the changed run');

    const changed = aegis(['run', file, 'hog']);
    assert.equal(changed.code, 0, 'an alert never changes the exit code');
    assert.match(changed.err, /ALERT medium aegis-baseline-anomaly: .*maxMemoryBytes \d+ \(median \d+, z [\d.]+\)/);
    const alerts = baselineAlerts();
    assert.equal(alerts.length, 1);
    const reasons = alerts[0]!.payload['reasons'] as Array<{ feature: string; value: number; median: number; z: number }>;
    assert.equal(reasons[0]!.feature, 'maxMemoryBytes');
    assert.ok(reasons[0]!.value > 200 * 1024 * 1024 && reasons[0]!.median < 100 * 1024 * 1024, JSON.stringify(reasons));
    assert.ok(reasons[0]!.z >= 6);
    assert.equal(alerts[0]!.payload['history'], 4);

    const shown = aegis(['alerts', 'baseline', 'bl-steady', '--json']);
    assert.equal(shown.code, 0, shown.err);
    const doc = JSON.parse(shown.out) as {
      model: { executions: number; ready: boolean };
      executions: Array<{ execution: string; anomalous: boolean; ready: boolean }>;
    };
    assert.equal(doc.model.executions, 5);
    assert.equal(doc.model.ready, true);
    assert.deepEqual(
      doc.executions.map((x) => [x.ready, x.anomalous]),
      [
        [false, false],
        [false, false],
        [false, false],
        [true, false],
        [true, true],
      ],
    );
    assert.equal(doc.executions[4]!.execution, alerts[0]!.actor.execution);
    assert.match(aegis(['alerts', 'baseline', 'bl-steady']).out, /ANOMALOUS maxMemoryBytes/);
  });
});

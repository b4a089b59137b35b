/**
 * The cgroup adapters against a directory laid out like cgroupfs (the interface files the kernel
 * would provide are plain files here). Checks what is written and how counters are read; the
 * kernel's behaviour itself is covered by the integration suite on real cgroups.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ResourceLimits } from '../../policy/types.js';
import { createRunCgroup } from './index.js';

const limits: ResourceLimits = {
  timeoutMs: 1000,
  memoryBytes: 64 * 1024 * 1024,
  cpu: { quotaUs: 50_000, periodUs: 100_000, cores: 0.5 },
  pids: 32,
};
const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

function fakeRoot(): string {
  const r = mkdtempSync(join(tmpdir(), 'aegis-cgfake-'));
  roots.push(r);
  return r;
}

describe('cgroup v2 adapter', () => {
  it('enables the controllers on the way down and writes every limit on the run cgroup', () => {
    const root = fakeRoot();
    writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
    writeFileSync(join(root, 'cgroup.subtree_control'), '');
    const cg = createRunCgroup('r1', limits, root, 'v2');
    const dir = join(root, 'aegis', 'r1');
    assert.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+memory +cpu +pids');
    assert.equal(readFileSync(join(root, 'aegis', 'cgroup.subtree_control'), 'utf8'), '+memory +cpu +pids');
    assert.equal(readFileSync(join(dir, 'memory.max'), 'utf8'), String(64 * 1024 * 1024));
    assert.equal(readFileSync(join(dir, 'cpu.max'), 'utf8'), '50000 100000');
    assert.equal(readFileSync(join(dir, 'pids.max'), 'utf8'), '32');
    assert.deepEqual(cg.procsFiles, [join(dir, 'cgroup.procs')]);
    assert.equal(cg.runtimePath, '/aegis/r1/c');
  });
  it('reads usage and the OOM and pids counters', () => {
    const root = fakeRoot();
    writeFileSync(join(root, 'cgroup.controllers'), 'cpu memory pids\n');
    const cg = createRunCgroup('r2', limits, root, 'v2');
    const dir = join(root, 'aegis', 'r2');
    assert.deepEqual(cg.usage(), { cpuMs: 0, maxMemoryBytes: 0, oom: false, pidsLimitHit: false, cpuPeriods: 0, cpuThrottledPeriods: 0 });
    writeFileSync(
      join(dir, 'cpu.stat'),
      'usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\nnr_periods 40\nnr_throttled 30\nthrottled_usec 900000\n',
    );
    writeFileSync(join(dir, 'memory.peak'), '1048576\n');
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n');
    writeFileSync(join(dir, 'pids.events'), 'max 2\n');
    assert.deepEqual(cg.usage(), {
      cpuMs: 12.345,
      maxMemoryBytes: 1048576,
      oom: true,
      pidsLimitHit: true,
      cpuPeriods: 40,
      cpuThrottledPeriods: 30,
    });
  });
  describe('when a controller is missing', () => {
    it('refuses to start (fail secure)', () => {
      const root = fakeRoot();
      writeFileSync(join(root, 'cgroup.controllers'), 'cpu pids\n');
      assert.throws(
        () => createRunCgroup('r3', limits, root, 'v2'),
        (e) => (e as { code?: string }).code === 'sandbox.cgroup_failed',
      );
    });
  });
});

describe('cgroup v1 adapter', () => {
  it('writes memory (no swap), CFS quota and pids in their hierarchies', () => {
    const root = fakeRoot();
    for (const c of ['memory', 'cpu', 'cpuacct', 'pids']) mkdirSync(join(root, c));
    // memsw exists when swap accounting is on; the adapter must then cap memory+swap too.
    mkdirSync(join(root, 'memory', 'aegis', 'r4'), { recursive: true });
    writeFileSync(join(root, 'memory', 'aegis', 'r4', 'memory.memsw.limit_in_bytes'), '');
    const cg = createRunCgroup('r4', limits, root, 'v1');
    const mem = join(root, 'memory', 'aegis', 'r4');
    assert.equal(readFileSync(join(mem, 'memory.limit_in_bytes'), 'utf8'), String(limits.memoryBytes));
    assert.equal(readFileSync(join(mem, 'memory.memsw.limit_in_bytes'), 'utf8'), String(limits.memoryBytes));
    assert.equal(readFileSync(join(root, 'cpu', 'aegis', 'r4', 'cpu.cfs_quota_us'), 'utf8'), '50000');
    assert.equal(readFileSync(join(root, 'pids', 'aegis', 'r4', 'pids.max'), 'utf8'), '32');
    assert.equal(cg.procsFiles.length, 4);
  });
  it('reports OOM from oom_kill when the agent lives in the run cgroup (crun, runsc)', () => {
    const root = fakeRoot();
    for (const c of ['memory', 'cpu', 'cpuacct', 'pids']) mkdirSync(join(root, c));
    const cg = createRunCgroup('r6', limits, root, 'v1', 'inherit');
    writeFileSync(join(root, 'memory', 'aegis', 'r6', 'memory.max_usage_in_bytes'), `${limits.memoryBytes}\n`);
    assert.equal(cg.usage().oom, false, 'a peak at the limit alone is not an OOM kill');
    writeFileSync(join(root, 'memory', 'aegis', 'r6', 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 1\n');
    assert.equal(cg.usage().oom, true);
  });
  it('reports OOM from the peak at the limit when the victim cgroup is the runtime child (runc)', () => {
    const root = fakeRoot();
    for (const c of ['memory', 'cpu', 'cpuacct', 'pids']) mkdirSync(join(root, c));
    const cg = createRunCgroup('r5', limits, root, 'v1', 'child');
    writeFileSync(join(root, 'cpuacct', 'aegis', 'r5', 'cpuacct.usage'), '2500000\n');
    writeFileSync(join(root, 'memory', 'aegis', 'r5', 'memory.max_usage_in_bytes'), `${limits.memoryBytes - 4096}\n`);
    writeFileSync(join(root, 'pids', 'aegis', 'r5', 'pids.peak'), '32\n');
    assert.deepEqual(cg.usage(), {
      cpuMs: 2.5,
      maxMemoryBytes: limits.memoryBytes - 4096,
      oom: true,
      pidsLimitHit: true,
      cpuPeriods: 0,
      cpuThrottledPeriods: 0,
    });
    writeFileSync(join(root, 'memory', 'aegis', 'r5', 'memory.max_usage_in_bytes'), `${limits.memoryBytes / 2}\n`);
    assert.equal(cg.usage().oom, false);
  });
  describe('on a hybrid host (a cgroup2 mount at unified/): the run cgroup id the runtime monitor filters on', () => {
    const hybrid = (): string => {
      const root = fakeRoot();
      for (const c of ['memory', 'cpu', 'cpuacct', 'pids', 'unified']) mkdirSync(join(root, c));
      writeFileSync(join(root, 'unified', 'cgroup.procs'), '');
      return root;
    };
    it("'inherit': the run gets unified/aegis/<id>, joined with the others and watched", () => {
      const root = hybrid();
      const cg = createRunCgroup('h1', limits, root, 'v1', 'inherit');
      const u = join(root, 'unified', 'aegis', 'h1');
      assert.deepEqual(cg.monitorDirs, [u]);
      assert.equal(cg.procsFiles.length, 5);
      assert.equal(cg.procsFiles.at(-1), join(u, 'cgroup.procs'));
    });
    it("'child' (runc): unified/aegis/<id>/c is made in advance so that runc joins a cgroup whose id is known", () => {
      const root = hybrid();
      const cg = createRunCgroup('h2', limits, root, 'v1', 'child');
      const u = join(root, 'unified', 'aegis', 'h2');
      assert.deepEqual(cg.monitorDirs, [join(u, 'c'), u]);
      assert.equal(readFileSync(join(root, 'memory', 'aegis', 'h2', 'memory.limit_in_bytes'), 'utf8'), String(limits.memoryBytes));
    });
    it('a pure v1 host has no cgroup2 id: nothing to watch', () => {
      const root = fakeRoot();
      for (const c of ['memory', 'cpu', 'cpuacct', 'pids']) mkdirSync(join(root, c));
      assert.deepEqual(createRunCgroup('h3', limits, root, 'v1').monitorDirs, []);
    });
  });
});

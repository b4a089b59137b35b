/**
 * The layering docs/architecture.md draws, checked on the sources: the pure core imports no I/O
 * module and reads no environment or clock, src/policy never imports src/manifest, and only
 * src/config reads process.env.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from './test-support/repo.js';

const SRC = join(REPO_ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'testdata' ? [] : sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [p] : [];
  });
}

/** Module specifiers a file imports (static and dynamic). */
function imports(text: string): string[] {
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)].map((m) => m[1]!);
}

const PURE = [
  'manifest',
  'policy',
  'sandbox/spec',
  'audit/merkle',
  'audit/checkpoint',
  'audit/rfc5424.ts',
  'gateway/netns/plan.ts',
  'gateway/netns/blocked.ts',
  'alerts/condition.ts',
  'alerts/selection.ts',
  'alerts/rule.ts',
  'alerts/rule-file.ts',
  'alerts/engine.ts',
  'alerts/baseline.ts',
  'host/mountinfo.ts',
  'secrets/core.ts',
  'orchestrator/lifecycle.ts',
];
const IO_MODULES = /^node:(fs|fs\/promises|net|dgram|dns|child_process|http|https|tls|os|worker_threads)$/;

describe('architecture', () => {
  const all = sources(SRC).map((p) => ({ path: relative(SRC, p), text: readFileSync(p, 'utf8') }));
  it('the pure core imports no I/O module and reads no environment or clock', () => {
    const pure = all.filter((f) => PURE.some((p) => f.path === p || f.path.startsWith(`${p}/`)));
    assert.ok(pure.length > 20, `found ${pure.length} pure files`);
    const bad = pure.flatMap((f) => [
      ...imports(f.text)
        .filter((m) => IO_MODULES.test(m))
        .map((m) => `${f.path} imports ${m}`),
      ...(/process\.env|Date\.now\(|new Date\(\)/.test(f.text) ? [`${f.path} reads the environment or the clock`] : []),
    ]);
    assert.deepEqual(bad, []);
  });
  it('src/policy never imports src/manifest (the arrows run manifest -> policy)', () => {
    const bad = all.filter((f) => f.path.startsWith('policy/') && imports(f.text).some((m) => m.includes('/manifest/'))).map((f) => f.path);
    assert.deepEqual(bad, []);
  });
  it('only src/config reads process.env (host/exec composes child environments; test-support replays seeds)', () => {
    const bad = all.filter((f) => /process\.env\b/.test(f.text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ''))).map((f) => f.path);
    assert.deepEqual(bad.sort(), ['config/index.ts', 'host/exec.ts', 'test-support/props.ts']);
  });
});

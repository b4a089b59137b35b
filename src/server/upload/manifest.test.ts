import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadManifest } from '../../loader/manifest-loader.js';
import { ManifestError } from '../../manifest/errors.js';
import { REPO_ROOT } from '../../test-support/repo.js';
import { sha256Digest } from './extract.js';
import { validateManifestText } from './manifest.js';

const BAD = join(REPO_ROOT, 'test', 'fixtures', 'manifests', 'bad');
const HELLO = join(REPO_ROOT, 'examples', 'hello', 'agent.yaml');

describe('validateManifestText', () => {
  it('accepts a good manifest: the same policy as the loader, and the digest of the exact bytes', async () => {
    const text = readFileSync(HELLO);
    const r = validateManifestText(text);
    assert.ok(r.ok);
    const loaded = await loadManifest(HELLO);
    assert.deepEqual(r.policy, loaded.policy);
    assert.equal(r.manifestDigest, `sha256:${loaded.manifestSha256}`);
    assert.equal(r.manifestDigest, sha256Digest(text));
    assert.deepEqual(validateManifestText(text.toString('utf8')), r, 'a string and its bytes give the same result');
  });

  it('reports every bad fixture with the same issues as `aegis validate` (the loader)', async () => {
    const files = readdirSync(BAD).filter((f) => f.endsWith('.yaml'));
    assert.ok(files.length >= 5);
    for (const f of files) {
      const file = join(BAD, f);
      const r = validateManifestText(readFileSync(file));
      assert.equal(r.ok, false, f);
      if (r.ok) continue;
      assert.ok(r.issues.length > 0, f);
      const err = await loadManifest(file).then(
        () => assert.fail(`${f}: the loader accepted it`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ManifestError, f);
      assert.deepEqual(r.issues, err.issues, f);
      for (const i of r.issues) {
        assert.equal(typeof i.line, 'number');
        assert.equal(typeof i.column, 'number');
        assert.equal(typeof i.path, 'string');
        assert.ok(i.message.length > 0);
      }
    }
  });

  it('gives the position of a bad field', () => {
    const r = validateManifestText('version: "1.0"\nagent:\n  name: My_Agent\n  runtime: "python:3.11"\n  entrypoint: ["python3"]\n');
    assert.equal(r.ok, false);
    if (r.ok) return;
    const issue = r.issues.find((i) => i.path === 'agent.name');
    assert.ok(issue, JSON.stringify(r.issues));
    assert.deepEqual([issue.line, issue.column], [3, 9]);
  });

  it('refuses what only the host operator may give a local tool server: host volumes, a manifest outside the upload', () => {
    const head = 'version: "1.0"\nagent: { name: a, runtime: "python:3.11", entrypoint: [python3] }\ntools:\n';
    const ok = validateManifestText(`${head}  - name: files\n    mcp: { manifest: tools/files.yaml }\n`);
    assert.ok(ok.ok, JSON.stringify(ok));
    for (const [mcp, path] of [
      ['{ manifest: tools/files.yaml, volumes: ["/etc:/srv/etc:ro"] }', 'tools[0].mcp.volumes'],
      ['{ manifest: /srv/other/files.yaml }', 'tools[0].mcp.manifest'],
      ['{ manifest: tools/../../other/files.yaml }', 'tools[0].mcp.manifest'],
    ] as const) {
      const r = validateManifestText(`${head}  - name: files\n    mcp: ${mcp}\n`);
      assert.equal(r.ok, false, mcp);
      if (!r.ok)
        assert.deepEqual(
          r.issues.map((i) => i.path),
          [path],
          mcp,
        );
    }
  });

  it('refuses a manifest over 64 KiB before parsing it, as text or as bytes', () => {
    const huge = `version: "1.0"\n# ${'x'.repeat(70 * 1024)}\n`;
    for (const input of [huge, Buffer.from(huge)]) {
      const r = validateManifestText(input);
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.issues[0]!.message, /larger than 64 KiB/);
    }
  });

  it('never throws on hostile text', () => {
    for (const text of ['', '\u0000\u0001', '[[[[', 'a: &a [*a]', '- 1\n- 2', 'version: 2', Buffer.from([0xff, 0xfe, 0x00])]) {
      const r = validateManifestText(text);
      assert.equal(r.ok, false);
    }
  });
});

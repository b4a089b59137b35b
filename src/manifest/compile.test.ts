import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseManifest } from './parse.js';
import { compilePolicy } from './compile.js';

function policyOf(extra: string) {
  const r = parseManifest(`version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["python3"]\n${extra}`);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  return compilePolicy(r.manifest);
}

describe('compilePolicy', () => {
  it('puts limits in canonical units', () => {
    const p = policyOf('permissions:\n  execution_time: 5m\n  memory: 1GiB\n  cpu_quota: 1.5\n  processes: 64\n');
    assert.deepEqual(p.limits, {
      timeoutMs: 300_000,
      memoryBytes: 1024 ** 3,
      cpu: { quotaUs: 150_000, periodUs: 100_000, cores: 1.5 },
      pids: 64,
    });
  });
  it('has the restrictive defaults', () => {
    const p = policyOf('');
    assert.deepEqual(p.network, { rules: [], rateLimit: { perSecond: 20, burst: 40 }, byteQuota: null });
    assert.deepEqual(p.fs, { read: [], write: [] });
    assert.equal(p.agent.isolation, null);
  });
  it('splits secret references from plain environment values', () => {
    const p = policyOf('  env: { A: "1", KEY: "secret:openai" }\n'.replace(/^/, '').replace('  env', '  env'));
    assert.deepEqual(p.agent.env, { A: '1' });
    assert.deepEqual(p.agent.secretRefs, { KEY: 'openai' });
  });
  it('de-duplicates and sorts grants; a write grant is not repeated as read', () => {
    const p = policyOf('permissions:\n  fs:\n    read: ["/b", "/a", "/b/", "/w"]\n    write: ["/w"]\n');
    assert.deepEqual(p.fs, { read: ['/a', '/b'], write: ['/w'] });
  });
  it('is plain data that survives JSON', () => {
    const p = policyOf('permissions:\n  network:\n    allow: ["api.openai.com"]\n    byte_quota: 10MB\n');
    assert.deepEqual(JSON.parse(JSON.stringify(p)), p);
    assert.equal(p.network.byteQuota, 10_000_000);
  });
});

describe('compilePolicy: tools', () => {
  it('has no tool servers by default', () => {
    assert.deepEqual(policyOf('').tools, { servers: [] });
  });
  it('compiles a remote and a local server, sorted allow lists, timeouts in ms', () => {
    const p = policyOf(
      'tools:\n  - name: gmail\n    mcp: { url: "https://MCP.example.com/gmail", secret: "secret:gmail-token" }\n    allow: [search_messages, read_message]\n  - name: files\n    mcp: { manifest: "tools/files.yaml", volumes: ["/srv/shared:/srv/shared:ro"] }\n    allow: ["*"]\n    timeout: 5s\n',
    );
    assert.deepEqual(p.tools, {
      servers: [
        {
          name: 'gmail',
          transport: { kind: 'http', url: 'https://mcp.example.com/gmail', host: 'mcp.example.com', port: 443, secret: 'gmail-token' },
          allow: ['read_message', 'search_messages'],
          timeoutMs: 30_000,
        },
        {
          name: 'files',
          transport: { kind: 'sandbox', manifest: 'tools/files.yaml', volumes: ['/srv/shared:/srv/shared:ro'] },
          allow: ['*'],
          timeoutMs: 5_000,
        },
      ],
    });
  });
  it('takes the port of an http:// URL, default 80', () => {
    const p = policyOf('tools:\n  - name: local\n    mcp: { url: "http://198.51.100.7:8080/mcp" }\n');
    assert.deepEqual(p.tools?.servers[0]?.transport, {
      kind: 'http',
      url: 'http://198.51.100.7:8080/mcp',
      host: '198.51.100.7',
      port: 8080,
      secret: null,
    });
  });
});

describe('AEGIS_TOOLS_URL is reserved', () => {
  it("cannot be set by the manifest (the broker address is AEGIS's to give)", () => {
    const r = parseManifest(
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["python3"]\n  env: { AEGIS_TOOLS_URL: "http://attacker.example" }\n',
    );
    assert.equal(r.ok, false);
    assert.match(!r.ok ? (r.issues[0]?.path ?? '') : '', /agent\.env/);
  });
});

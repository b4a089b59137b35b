import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parseManifest } from '../manifest/parse.js';
import { compilePolicy } from '../manifest/compile.js';
import { checkPolicy } from './policy-check.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));

describe('checkPolicy', () => {
  const policies = readdirSync(EXAMPLES).map((d) => {
    const r = parseManifest(readFileSync(join(EXAMPLES, d, 'agent.yaml'), 'utf8'));
    assert.ok(r.ok, d);
    return [d, r.ok ? compilePolicy(r.manifest) : undefined] as const;
  });

  it('accepts every compiled example policy, read back from JSON, unchanged', () => {
    assert.ok(policies.length >= 3);
    for (const [d, p] of policies) assert.deepEqual(checkPolicy(JSON.parse(JSON.stringify(p))), p, d);
  });

  it('accepts the policies of rules of every kind and port spec', () => {
    const r = parseManifest(
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["true"]\n  isolation: gvisor\npermissions:\n  network:\n    allow: ["api.example.com", "*.example.org:8443", "192.0.2.0/24:*", "2001:db8::/32"]\n    byte_quota: 10MB\n',
    );
    assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues));
    const p = compilePolicy(r.manifest);
    assert.deepEqual(new Set(p.network.rules.map((x) => x.kind)), new Set(['exact', 'wildcard', 'cidr']));
    assert.deepEqual(checkPolicy(JSON.parse(JSON.stringify(p))), p);
  });

  it('regression: accepts a policy with tool servers of both kinds (the cache once refused every policy with tools)', () => {
    const r = parseManifest(
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["true"]\ntools:\n  - name: gmail\n    mcp: { url: "https://mcp.example.com/gmail", secret: "secret:gmail" }\n    allow: [read_message]\n  - name: files\n    mcp: { manifest: "files.yaml" }\n    allow: ["*"]\n',
    );
    assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues));
    const p = compilePolicy(r.manifest);
    assert.equal(p.tools?.servers.length, 2);
    assert.deepEqual(checkPolicy(JSON.parse(JSON.stringify(p))), p);
  });

  it('accepts method/path rules (regression: a policy with them was refused and compiled again on every run)', () => {
    const r = parseManifest(
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: ["true"]\npermissions:\n  network:\n    allow:\n      - {host: api.github.com, methods: [GET], paths: ["/repos/**"]}\n      - {host: "*.example.org", paths: ["/x"]}\n',
    );
    assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues));
    const p = compilePolicy(r.manifest);
    assert.deepEqual(
      p.network.rules.map((x) => (x.kind !== 'cidr' ? x.http : null)),
      [
        { methods: ['GET'], paths: ['/repos/**'] },
        { methods: null, paths: ['/x'] },
      ],
    );
    assert.deepEqual(checkPolicy(JSON.parse(JSON.stringify(p))), p);
  });

  it('refuses anything else', () => {
    const base = JSON.stringify(policies[0]?.[1]);
    type P = {
      version: string;
      agent: { isolation: unknown; env: unknown };
      network: { rules: unknown; byteQuota: unknown };
      limits: { cpu: { cores: unknown } };
      fs?: { read: unknown; write: unknown };
      syscalls: unknown;
      tools?: unknown;
    };
    const bad: Array<(p: P) => unknown> = [
      () => null,
      () => [],
      (p) => ((p.version = '1.1'), p),
      (p) => ((p.agent.isolation = 'docker'), p),
      (p) => ((p.agent.env = { A: 1 }), p),
      (p) => ((p.network.rules = [{ kind: 'cidr', family: 4, address: '0.0.0.0', prefix: 33, ports: { kind: 'any' }, source: 'x' }]), p),
      (p) => ((p.network.rules = [{ kind: 'exact', host: 'h', ports: { kind: 'one', port: 70000 }, source: 'x' }]), p),
      (p) => (
        (p.network.rules = [{ kind: 'exact', host: 'h', ports: { kind: 'any' }, source: 'x', http: { methods: 'GET', paths: null } }]),
        p
      ),
      (p) => ((p.network.rules = [{ kind: 'exact', host: 'h', ports: { kind: 'any' }, source: 'x', http: { methods: null } }]), p),
      (p) => (
        (p.network.rules = [
          {
            kind: 'cidr',
            family: 4,
            address: '192.0.2.0',
            prefix: 24,
            ports: { kind: 'any' },
            source: 'x',
            http: { methods: null, paths: null },
          },
        ]),
        p
      ),
      (p) => ((p.network.byteQuota = -1), p),
      (p) => ((p.limits.cpu.cores = Number.POSITIVE_INFINITY), p),
      (p) => ((p.fs = { read: '/', write: [] }), p),
      (p) => ((p.syscalls = { deny: [], allow: ['ptrace'] }), p),
      (p) => (delete p.fs, p),
      (p) => (
        (p.tools = {
          servers: [
            {
              name: 'x',
              transport: { kind: 'sandbox', manifest: 'f.yaml', volumes: [1] as unknown as string[] },
              allow: [],
              timeoutMs: 1000,
            },
          ],
        }),
        p
      ),
      (p) => (
        (p.tools = {
          servers: [{ name: 'x', transport: { kind: 'http', url: 'u', host: 'h', port: 0, secret: null }, allow: [], timeoutMs: 1 }],
        }),
        p
      ),
      (p) => ((p.tools = { servers: [], extra: true }), p),
    ];
    for (const [i, change] of bad.entries()) assert.equal(checkPolicy(change(JSON.parse(base) as P)), undefined, `case ${i}`);
  });
});

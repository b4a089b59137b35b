/**
 * The command-line contract of `aegis validate` and `aegis policy test`, exercised through the
 * real `bin/aegis.js` as other tools call it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AEGIS_BIN, REPO_ROOT } from '../../src/test-support/repo.js';

function aegis(...args: string[]) {
  const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], { encoding: 'utf8', cwd: REPO_ROOT });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const EXAMPLE = join(REPO_ROOT, 'examples', 'research-agent', 'agent.yaml');

describe('aegis validate', () => {
  const examples = readdirSync(join(REPO_ROOT, 'examples'))
    .map((d) => join(REPO_ROOT, 'examples', d, 'agent.yaml'))
    .filter((f) => existsSync(f));
  it('finds example manifests', () => assert.ok(examples.length >= 1));
  for (const file of examples) {
    it(`accepts ${file.slice(REPO_ROOT.length + 1)}`, () => {
      const r = aegis('validate', file);
      assert.equal(r.code, 0, r.err);
      // "ok", then the secrets it needs, if any (examples/secret-agent)
      assert.match(r.out, /^ok\n(secret: [a-z0-9.-]+ \(env [A-Z_, ]+\)\n)*$/);
    });
  }

  it('rejects with one file:line:col: message line per problem, exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-validate-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: [python3]\npermissions:\n  memory: 512XB\n  bogus: 1\n',
    );
    const r = aegis('validate', file);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.deepEqual(r.err.trim().split('\n'), [
      `${file}:7:11: permissions.memory: "512XB" is not a size (try 512MB)`,
      `${file}:8:3: permissions.bogus: unknown key "bogus"`,
    ]);
  });

  it("validates each local tool server's own manifest too: its problems, or what a tool server may not have", () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-validate-tools-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent: { name: a, runtime: "python:3.11", entrypoint: [python3] }\ntools:\n  - name: files\n    mcp: { manifest: srv/server.yaml }\n',
    );
    const missing = aegis('validate', file);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /srv\/server\.yaml.*cannot read the manifest \(ENOENT\)/);
    mkdirSync(join(dir, 'srv'));
    const server = join(dir, 'srv', 'server.yaml');
    writeFileSync(
      server,
      'version: "1.0"\nagent: { name: s, runtime: "python:3.11", entrypoint: [python3] }\npermissions:\n  memory: 5XB\n',
    );
    const bad = aegis('validate', file);
    assert.equal(bad.code, 1);
    assert.equal(bad.err.trim(), `${server}:4:11: permissions.memory: "5XB" is not a size (try 5MB)`);
    writeFileSync(
      server,
      'version: "1.0"\nagent: { name: s, runtime: "python:3.11", entrypoint: [python3] }\npermissions:\n  network:\n    allow: [api.openai.com]\n',
    );
    const networked = aegis('validate', file);
    assert.equal(networked.code, 1);
    assert.match(networked.err, /tool server files: its manifest allows network access/);
    const j = JSON.parse(aegis('validate', '--json', file).out) as { ok: boolean; code: string };
    assert.deepEqual([j.ok, j.code], [false, 'tools.server_manifest_invalid']);
    writeFileSync(server, 'version: "1.0"\nagent: { name: s, runtime: "python:3.11", entrypoint: [python3] }\n');
    assert.equal(aegis('validate', file).code, 0);
  });

  it('reports an unreadable file with exit 1', () => {
    const r = aegis('validate', '/nonexistent/agent.yaml');
    assert.equal(r.code, 1);
    assert.match(r.err, /cannot read the manifest \(ENOENT\)/);
  });

  it('prints JSON with --json', () => {
    const r = aegis('validate', '--json', EXAMPLE);
    assert.equal(r.code, 0);
    const j = JSON.parse(r.out) as { ok: boolean; warnings: string[]; secrets: unknown[] };
    assert.equal(j.ok, true);
    assert.equal(j.warnings.length, 1);
    assert.deepEqual(j.secrets, []);
  });

  describe('when the manifest references secrets (regression: validate did not say which)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-validate-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: [python3]\n  env:\n    OPENAI_API_KEY: "secret:openai"\n    BACKUP_KEY: "secret:openai"\n    DB_PASSWORD: "secret:db-pass"\n    MODE: fast\n',
    );
    it('lists them after "ok", one line per secret with the variables that carry it', () => {
      const r = aegis('validate', file);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'ok\nsecret: db-pass (env DB_PASSWORD)\nsecret: openai (env BACKUP_KEY, OPENAI_API_KEY)\n');
      assert.match(r.err, /sees per-run placeholders, which the gateway replaces/);
    });
    it('lists them in --json', () => {
      const r = aegis('validate', '--json', file);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual((JSON.parse(r.out) as { secrets: unknown }).secrets, [
        { name: 'db-pass', env: ['DB_PASSWORD'] },
        { name: 'openai', env: ['BACKUP_KEY', 'OPENAI_API_KEY'] },
      ]);
    });
  });

  it('suggests the key meant for a misspelt one, and the unit meant (regression)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-validate-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      'version: "1.0"\nagent:\n  name: a\n  runtime: "python:3.11"\n  entrypoint: [python3]\n  enviroment: {}\npermissions:\n  timeout: 5m\n  network:\n    ratelimit: 5/s\n  execution_time: 5min\n',
    );
    const r = aegis('validate', file);
    assert.equal(r.code, 1);
    assert.deepEqual(r.err.trim().split('\n'), [
      `${file}:6:3: agent.enviroment: unknown key "enviroment" (did you mean "env"?)`,
      `${file}:8:3: permissions.timeout: unknown key "timeout" (did you mean "execution_time"?)`,
      `${file}:10:5: permissions.network.ratelimit: unknown key "ratelimit" (did you mean "rate_limit"?)`,
      `${file}:11:19: permissions.execution_time: "5min" is not a duration: unknown unit "min" (try 5m)`,
    ]);
  });
});

describe('aegis policy show', () => {
  it('prints the compiled policy as JSON, with or without --json', () => {
    const plain = aegis('policy', 'show', EXAMPLE);
    const withFlag = aegis('policy', 'show', '--json', EXAMPLE);
    assert.equal(plain.code, 0, plain.err);
    assert.equal(withFlag.code, 0, withFlag.err);
    assert.equal(withFlag.out, plain.out);
    assert.equal((JSON.parse(plain.out) as { agent: { name: string } }).agent.name, 'example-agent');
  });
});

describe('aegis policy test', () => {
  const cases: Array<[string[], number, RegExp]> = [
    [['net', 'api.openai.com'], 0, /^allow\n$/],
    [['net', 'storage.googleapis.com:443'], 0, /^allow\n$/],
    [['net', 'db.internal:5432'], 0, /^allow\n$/],
    [['net', 'googleapis.com'], 1, /^deny: net\.denied\.not_in_allowlist/],
    [['net', 'attacker.com:443'], 1, /^deny: net\.denied\.not_in_allowlist/],
    [['net', 'api.openai.com:22'], 1, /^deny: net\.denied\.port/],
    [['net', '169.254.169.254:80'], 1, /^deny: net\.denied\.special_range/],
    [['net', '2130706433:80'], 1, /^deny: net\.denied\.special_range/],
    [['net', '[::1]:443'], 1, /^deny: net\.denied\.special_range/],
    [['fs', 'read', '/data/inputs/a.csv'], 0, /^allow: fs\.allowed\.read \(\/data\/inputs is granted: an empty read-only tmpfs/],
    [
      ['fs', 'write', '/data/outputs/r.txt'],
      0,
      /^allow: fs\.allowed\.write \(\/data\/outputs is granted read-write: an empty tmpfs for the run, gone afterwards/,
    ],
    [['fs', 'write', '/data/inputs/a.csv'], 1, /^deny: fs\.denied\.read_only/],
    [['fs', 'write', '/data/inputs2/a.csv'], 1, /^deny: fs\.denied\.image_readonly/],
    [['fs', 'write', '/data/inputs/../../etc/passwd'], 1, /^deny: fs\.denied\.image_readonly/],
    // Regression: these were "deny: fs.denied.not_granted", though the agent can read or write them.
    [['fs', 'write', '/tmp/x'], 0, /^allow: fs\.allowed\.tmpfs \(\/tmp is a writable tmpfs/],
    [['fs', 'read', '/agent/main.py'], 0, /^allow: fs\.allowed\.code/],
    [['fs', 'write', '/agent/main.py'], 1, /^deny: fs\.denied\.code_readonly/],
    [['fs', 'read', '/etc/passwd'], 0, /^allow: fs\.allowed\.image/],
    [['fs', 'read', '/proc/kcore'], 1, /^deny: fs\.denied\.masked/],
  ];
  // HTTP method/path rules (issue 12), on examples/secret-agent's {host, methods, paths} entry.
  const SECRET_AGENT = join(REPO_ROOT, 'examples', 'secret-agent', 'agent.yaml');
  const httpCases: Array<[string[], number, RegExp]> = [
    [['net', 'https://storage.googleapis.com/bucket/a/b'], 0, /^allow\n$/],
    [['net', 'https://storage.googleapis.com/bucket/a', 'post'], 1, /^deny: net\.denied\.http_method/],
    [['net', 'https://storage.googleapis.com/other', 'GET'], 1, /^deny: net\.denied\.http_path/],
    // the URL is normalized as a client would send it: /bucket/%2e%2e/x is /x
    [['net', 'https://storage.googleapis.com/bucket/%2e%2e/x'], 1, /^deny: net\.denied\.http_path/],
    [['net', 'https://api.openai.com/v1/anything', 'DELETE'], 0, /^allow\n$/],
    [['net', 'https://attacker.com/'], 1, /^deny: net\.denied\.not_in_allowlist/],
  ];
  for (const [args, code, out] of httpCases) {
    it(`secret-agent: ${args.join(' ')} -> exit ${code}`, () => {
      const r = aegis('policy', 'test', SECRET_AGENT, ...args);
      assert.equal(r.code, code, r.err);
      assert.match(r.out, out);
    });
  }
  for (const [args, code, out] of cases) {
    it(`${args.join(' ')} -> exit ${code}`, () => {
      const r = aegis('policy', 'test', EXAMPLE, ...args);
      assert.equal(r.code, code, r.err);
      assert.match(r.out, out);
    });
  }

  it('exits 2 for bad arguments and bad manifests', () => {
    assert.equal(aegis('policy', 'test', EXAMPLE, 'dns', 'x').code, 2);
    assert.equal(aegis('policy', 'test', EXAMPLE, 'fs', 'exec', '/x').code, 2);
    assert.equal(aegis('policy', 'test', EXAMPLE, 'net', 'a.com:http').code, 2);
    assert.equal(aegis('policy', 'test', EXAMPLE).code, 2);
    assert.equal(aegis('policy', 'test', '/nonexistent.yaml', 'net', 'a.com').code, 2);
    const bad = join(REPO_ROOT, 'test', 'fixtures', 'manifests', 'bad', 'wildcards.yaml');
    assert.equal(aegis('policy', 'test', bad, 'net', 'a.com').code, 2);
  });

  it('prints an fs decision as JSON with --json, naming the mount that answers', () => {
    const r = aegis('policy', 'test', '--json', EXAMPLE, 'fs', 'write', '/tmp/x');
    assert.equal(r.code, 0);
    assert.deepEqual(JSON.parse(r.out), {
      allow: true,
      reason: 'fs.allowed.tmpfs',
      mount: '/tmp',
      detail: '/tmp is a writable tmpfs for the run, empty at start and gone afterwards',
    });
  });

  describe('tool <server> <tool> (examples/tools-demo)', () => {
    const TOOLS = join(REPO_ROOT, 'examples', 'tools-demo', 'agent.yaml');
    const toolCases: Array<[string[], number, RegExp]> = [
      [['office', 'get_weather'], 0, /^allow\n$/],
      [['office', 'send_email'], 1, /^deny: tool\.denied\.not_allowed \("send_email" is not in the allow list of server "office"\)\n$/],
      [['mail', 'get_weather'], 1, /^deny: tool\.denied\.unknown_server/],
      [['office', 'get weather'], 1, /^deny: tool\.denied\.invalid_name/],
    ];
    for (const [args, code, out] of toolCases)
      it(`tool ${args.join(' ')} -> exit ${code}`, () => {
        const r = aegis('policy', 'test', TOOLS, 'tool', ...args);
        assert.equal(r.code, code, r.err);
        assert.match(r.out, out);
      });
    it('--json, and exit 2 without exactly a server and a tool', () => {
      const r = aegis('policy', 'test', '--json', TOOLS, 'tool', 'office', 'send_email');
      assert.equal(r.code, 1);
      assert.equal((JSON.parse(r.out) as { reason: string }).reason, 'tool.denied.not_allowed');
      assert.equal(aegis('policy', 'test', TOOLS, 'tool', 'office').code, 2);
      assert.equal(aegis('policy', 'test', TOOLS, 'tool', 'office', 'a', 'b').code, 2);
    });
  });

  it('prints the decision as JSON with --json', () => {
    const r = aegis('policy', 'test', '--json', EXAMPLE, 'net', 'attacker.com');
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.out), {
      allow: false,
      reason: 'net.denied.not_in_allowlist',
      detail: 'attacker.com is not in permissions.network.allow',
    });
  });
});

describe('aegis --version and help', () => {
  it('prints the version', () => {
    const r = aegis('--version');
    assert.equal(r.code, 0);
    assert.match(r.out, /^\d+\.\d+\.\d+\n$/);
  });
  it('lists the commands', () => {
    const r = aegis('help');
    assert.equal(r.code, 0);
    assert.match(r.out, /validate/);
    assert.match(r.out, /policy/);
  });
  it('exits 2 on an unknown command', () => {
    assert.equal(aegis('frobnicate').code, 2);
  });
});

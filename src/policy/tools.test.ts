import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compilePolicy } from '../manifest/compile.js';
import { parseManifestOrThrow } from '../manifest/parse.js';
import { decideTool, decideToolOn, localServerProblems } from './tools.js';
import type { ToolServerPolicy, ToolsPolicy } from './types.js';

const gmail: ToolServerPolicy = {
  name: 'gmail',
  transport: { kind: 'http', url: 'https://mcp.example.com/gmail', host: 'mcp.example.com', port: 443, secret: null },
  allow: ['read_message', 'search_messages'],
  timeoutMs: 30_000,
};
const files: ToolServerPolicy = {
  name: 'files',
  transport: { kind: 'sandbox', manifest: 'srv.yaml', volumes: [] },
  allow: ['*'],
  timeoutMs: 5_000,
};
const none: ToolServerPolicy = { ...files, name: 'none', allow: [] };
const tools: ToolsPolicy = { servers: [gmail, files, none] };

describe('decideTool', () => {
  it('allows a tool the allow list names, and refuses one it does not', () => {
    assert.deepEqual(decideTool(tools, 'gmail', 'read_message'), { allow: true, reason: 'tool.allowed.name', rule: 'gmail: read_message' });
    const d = decideTool(tools, 'gmail', 'send_message');
    assert.equal(d.allow, false);
    assert.equal(!d.allow && d.reason, 'tool.denied.not_allowed');
  });
  it('allows every tool under ["*"], and none under [] (empty means nothing)', () => {
    assert.equal(decideTool(tools, 'files', 'anything').reason, 'tool.allowed.any');
    assert.equal(decideTool(tools, 'none', 'anything').reason, 'tool.denied.not_allowed');
  });
  it('refuses an undeclared server, and every tool when the policy has no tools', () => {
    assert.equal(decideTool(tools, 'slack', 'post').reason, 'tool.denied.unknown_server');
    assert.equal(decideTool(undefined, 'gmail', 'read_message').reason, 'tool.denied.unknown_server');
  });
  describe('when the tool name is hostile', () => {
    for (const bad of ['', ' read_message', 'read message', 'x'.repeat(129), 'a\u0000b', 'é', 42, null, undefined, ['read_message']])
      it(`refuses ${JSON.stringify(bad)} before any allow rule, even under ["*"]`, () => {
        assert.equal(decideToolOn(files, bad).reason, 'tool.denied.invalid_name');
        assert.equal(decideToolOn(gmail, bad).reason, 'tool.denied.invalid_name');
      });
    it('compares literally: a name that looks like a pattern matches nothing', () => {
      assert.equal(decideToolOn(gmail, 'read_*').reason, 'tool.denied.not_allowed');
      assert.equal(decideToolOn(gmail, 'READ_MESSAGE').reason, 'tool.denied.not_allowed');
    });
  });
});

describe('localServerProblems', () => {
  const policy = (extra: string) =>
    compilePolicy(
      parseManifestOrThrow(`version: "1.0"\nagent:\n  name: s\n  runtime: "python:3.11"\n  entrypoint: [python3]\n${extra}`, 's.yaml'),
    );
  it('accepts a manifest without network, secrets or tools', () => {
    assert.deepEqual(localServerProblems(policy('permissions:\n  memory: 64MiB\n')), []);
  });
  it('names each thing a local tool server may not have', () => {
    const p = policy(
      '  env: { KEY: "secret:k" }\npermissions:\n  network:\n    allow: [api.openai.com]\ntools:\n  - name: inner\n    mcp: { url: "https://mcp.example.com/x" }\n',
    );
    const got = localServerProblems(p);
    assert.equal(got.length, 3);
    assert.match(got[0]!, /network access/);
    assert.match(got[1]!, /references secrets/);
    assert.match(got[2]!, /tool servers of its own/);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decideTool, decideToolOn } from './tools.js';
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

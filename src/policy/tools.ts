/**
 * Tool decisions (pure): may the agent list or call `tool` on the declared MCP server `server`?
 * Asked by the tools broker (src/tools/broker.ts) for every `tools/list` entry and every
 * `tools/call`, and by `aegis policy test <manifest> tool <server> <tool>`.
 *
 * Tool names are UNTRUSTED (from the agent, and from the server's own `tools/list`): compared
 * literally with the manifest's names, never as patterns. `*` is only meaningful as the whole
 * allow list (`allow: ["*"]`); a name containing `*` elsewhere is refused by the schema.
 */
import type { Decision, Policy, ToolServerPolicy, ToolsPolicy } from './types.js';

/** The one entry of `allow` that means every tool the server offers. */
export const ANY_TOOL = '*';

/** What a tool name must be to be considered at all: 1-128 printable ASCII characters, no space. */
export const TOOL_NAME = /^[\x21-\x7e]{1,128}$/;

export function findToolServer(tools: ToolsPolicy | undefined, server: string): ToolServerPolicy | undefined {
  return tools?.servers.find((s) => s.name === server);
}

/** Decide `tool` on `server` (a declared server). Deny before allow: a bad name is refused first. */
export function decideToolOn(server: ToolServerPolicy, tool: unknown): Decision {
  if (typeof tool !== 'string' || !TOOL_NAME.test(tool))
    return { allow: false, reason: 'tool.denied.invalid_name', detail: 'a tool name is 1-128 printable characters without spaces' };
  if (server.allow.includes(ANY_TOOL)) return { allow: true, reason: 'tool.allowed.any', rule: `${server.name}: allow ["*"]` };
  if (server.allow.includes(tool)) return { allow: true, reason: 'tool.allowed.name', rule: `${server.name}: ${tool}` };
  return {
    allow: false,
    reason: 'tool.denied.not_allowed',
    detail:
      server.allow.length === 0
        ? `server "${server.name}" allows no tools (allow: [])`
        : `"${tool}" is not in the allow list of server "${server.name}"`,
  };
}

/** Decide `tool` on the server named `server`; an undeclared server is refused. */
export function decideTool(tools: ToolsPolicy | undefined, server: string, tool: unknown): Decision {
  const s = findToolServer(tools, server);
  if (s === undefined)
    return {
      allow: false,
      reason: 'tool.denied.unknown_server',
      detail: `no tool server "${server}" is declared in the manifest's tools:`,
    };
  return decideToolOn(s, tool);
}

/**
 * Why a compiled manifest cannot be a local tool server's (`tools[].mcp.manifest`), or [] when
 * it can: a local server has no network and no secrets, and brokers no tools of its own
 * (docs/tools.md). Asked by `aegis run` (tools.server_manifest_invalid) and `aegis validate`.
 */
export function localServerProblems(p: Policy): string[] {
  const problems: string[] = [];
  if (p.network.rules.length > 0)
    problems.push(
      'its manifest allows network access (permissions.network.allow): a local tool server has none; a tool that needs the network is a remote server (mcp.url)',
    );
  if (Object.keys(p.agent.secretRefs).length > 0)
    problems.push(
      'its manifest references secrets (agent.env): a local tool server gets none; bind a secret to a remote server (mcp.secret)',
    );
  if ((p.tools?.servers.length ?? 0) > 0) problems.push('its manifest declares tool servers of its own: a tool server cannot broker tools');
  return problems;
}

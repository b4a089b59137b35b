// A small MCP server (stdio) for the tools demo, built with the official MCP TypeScript SDK.
// AEGIS starts it; the agent never talks to it except through the AEGIS tools broker.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import * as z from 'zod';

const server = new McpServer({ name: 'office', version: '1.0.0' });
const text = (t) => ({ content: [{ type: 'text', text: t }] });
server.registerTool('get_weather', { description: 'Weather for a city', inputSchema: { city: z.string() } }, ({ city }) =>
  text(`${city}: 18°C, light rain`),
);
server.registerTool('send_email', { description: 'Send an e-mail', inputSchema: { to: z.string(), body: z.string() } }, ({ to }) =>
  text(`sent to ${to}`),
);
await server.connect(new StdioServerTransport());

/**
 * `aegis validate`, `aegis policy test`, `aegis policy show`.
 *
 * Contract (other tools call these exactly):
 *   validate <agent.yaml> [--json]      exit 0 + "ok", then one "secret: <name> (env <VAR>[, <VAR>])" line per secret
 *                                       the run will need; exit 1 + one "file:line:col: message" per problem on stderr
 *                                       (also each local tool server's own manifest, tools[].mcp.manifest: docs/tools.md)
 *   policy test <agent.yaml> net <host>[:<port>]
 *   policy test <agent.yaml> fs <read|write> <path>
 *   policy test <agent.yaml> tool <server> <tool>
 *                                       tool: "allow" or "deny: <reason> (<detail>)" for a tools/call of <tool> on the
 *                                       declared MCP server <server> (docs/tools.md)
 *                                       net: prints "allow" or "deny: <reason> (<detail>)"; fs: "allow: <reason> (<detail>)"
 *                                       or "deny: <reason> (<detail>)", about the whole sandbox view (tmpfs /tmp, read-only
 *                                       code and image root, grants, masked /proc paths), not only the grants;
 *                                       exit 0 allow, 1 deny, 2 bad manifest/arguments
 *   policy show <agent.yaml> [--json]   prints the compiled Policy as JSON (--json accepted: it is JSON already)
 */
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { ManifestError } from '../manifest/errors.js';
import { localServerProblems } from '../policy/tools.js';
import type { Decision, Policy } from '../policy/types.js';
import { type CliContext, EXIT } from './context.js';
import type { LoadedManifest } from './load-manifest.js';

function json(ctx: CliContext, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2) + '\n');
}

/** Loads a manifest for a command whose failure exit code is `failCode`; prints problems. */
async function load(
  ctx: CliContext,
  file: string,
  failCode: number,
  asJson: boolean,
  showWarnings = false,
): Promise<LoadedManifest | null> {
  try {
    // Lazy: the manifest parser (zod, yaml, the public suffix list) is most of the CLI's
    // start-up time, and only these commands need it.
    const { loadManifestFile } = await import('./load-manifest.js');
    const loaded = await loadManifestFile(file);
    if (showWarnings) for (const w of loaded.warnings) ctx.err(w + '\n');
    return loaded;
  } catch (err) {
    if (!(err instanceof ManifestError)) throw err;
    if (asJson) {
      json(ctx, {
        ok: false,
        code: err.code,
        issues: err.issues.length ? err.issues : [{ line: 0, column: 0, path: '', message: err.message }],
      });
    }
    ctx.err(err.message + '\n');
    ctx.exitCode = failCode;
    return null;
  }
}

/**
 * Split a CLI destination `host`, `host:port`, `[v6]` or `[v6]:port`. Without a port the
 * question is asked for 443 (HTTPS). Returns null when it cannot be split.
 */
export function splitHostPort(arg: string): { host: string; port: number } | null {
  let host = arg;
  let portText: string | undefined;
  if (arg.startsWith('[')) {
    const close = arg.indexOf(']');
    if (close < 0) return null;
    host = arg.slice(0, close + 1);
    const rest = arg.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return null;
      portText = rest.slice(1);
    }
  } else if (arg.split(':').length === 2) {
    [host, portText] = arg.split(':') as [string, string];
  }
  if (portText === undefined) return { host, port: 443 };
  if (!/^[0-9]{1,5}$/.test(portText)) return null;
  return { host, port: Number(portText) };
}

/** The secrets a run of this policy needs: secret name -> the variables that reference it, sorted. */
export function neededSecrets(policy: Policy): { name: string; env: string[] }[] {
  const by = new Map<string, string[]>();
  for (const [variable, name] of Object.entries(policy.agent.secretRefs)) by.set(name, [...(by.get(name) ?? []), variable]);
  return [...by].map(([name, env]) => ({ name, env: env.sort() })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function printDecision(ctx: CliContext, d: Decision, asJson: boolean): void {
  if (asJson) json(ctx, d);
  else ctx.out(d.allow ? 'allow\n' : `deny: ${d.reason} (${d.detail})\n`);
  ctx.exitCode = d.allow ? EXIT.ok : EXIT.failure;
}

export function registerManifestCommands(program: Command, ctx: CliContext): void {
  program
    .command('validate')
    .description('check an agent.yaml; prints "ok", or every problem as file:line:col: message')
    .argument('<manifest>', 'path to agent.yaml')
    .option('--json', 'print the result as JSON on stdout')
    .action(async (file: string, opts: { json?: boolean }) => {
      const loaded = await load(ctx, file, EXIT.failure, opts.json === true, true);
      if (!loaded) return;
      // The manifests of local tool servers, each validated as aegis run loads it (docs/tools.md).
      for (const server of loaded.policy.tools?.servers ?? []) {
        if (server.transport.kind !== 'sandbox') continue;
        const serverFile = resolve(dirname(file), server.transport.manifest);
        const own = await load(ctx, serverFile, EXIT.failure, opts.json === true, true);
        if (!own) return;
        const problems = localServerProblems(own.policy);
        if (problems.length > 0) {
          const message = `${serverFile}: tool server ${server.name}: ${problems.join('; ')}`;
          if (opts.json)
            json(ctx, { ok: false, code: 'tools.server_manifest_invalid', issues: [{ line: 0, column: 0, path: '', message }] });
          ctx.err(message + '\n');
          ctx.exitCode = EXIT.failure;
          return;
        }
      }
      const secrets = neededSecrets(loaded.policy);
      if (opts.json) json(ctx, { ok: true, warnings: loaded.warnings, secrets });
      else {
        ctx.out('ok\n');
        for (const s of secrets) ctx.out(`secret: ${s.name} (env ${s.env.join(', ')})\n`);
      }
      // The agent gets placeholders; the gateway swaps them only in HTTPS requests to the bound hosts.
      if (secrets.length > 0)
        ctx.err(
          `note: ${secrets.length} secret(s) referenced; the agent sees per-run placeholders, which the gateway replaces with the values only in HTTPS requests to the secrets' hosts (docs/secrets.md)\n`,
        );
    });

  const policy = program.command('policy').description('inspect the policy a manifest compiles to');

  policy
    .command('show')
    .description('print the compiled, normalized policy as JSON')
    .argument('<manifest>', 'path to agent.yaml')
    .option('--json', 'print as JSON (the default: the policy is JSON)')
    .action(async (file: string, opts: { json?: boolean }) => {
      const loaded = await load(ctx, file, EXIT.usage, opts.json === true);
      if (loaded) json(ctx, loaded.policy);
    });

  policy
    .command('test')
    .description(
      'ask the policy engine one question: net <host>[:<port>] | net <url> [<method>] | fs <read|write> <path> | tool <server> <tool>',
    )
    .argument('<manifest>', 'path to agent.yaml')
    .argument('<kind>', '"net", "fs" or "tool"')
    .argument(
      '<args...>',
      'net: <host>[:<port>] (port 443 when omitted), or <url> [<method>] (GET when omitted); fs: <read|write> <path>; tool: <server> <tool>',
    )
    .option('--json', 'print the decision as JSON on stdout')
    .action(async (file: string, kind: string, args: string[], opts: { json?: boolean }) => {
      const asJson = opts.json === true;
      const usage = (msg: string): void => {
        ctx.err(`aegis policy test: ${msg}\n`);
        ctx.exitCode = EXIT.usage;
      };
      if (kind === 'net' && /^https?:\/\//i.test(args[0] ?? '')) {
        // An HTTP request: `net https://api.github.com/repos/acme/x GET` (method rules, docs/secrets.md).
        if (args.length > 2) return usage('net takes <url> [<method>]');
        let url: URL;
        try {
          url = new URL(args[0]!);
        } catch {
          return usage(`"${args[0]}" is not a URL`);
        }
        const method = (args[1] ?? 'GET').toUpperCase();
        if (!/^[A-Z][A-Z-]{0,19}$/.test(method)) return usage(`"${args[1]}" is not an HTTP method`);
        const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
        const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
        const loaded = await load(ctx, file, EXIT.usage, false);
        if (!loaded) return;
        const { compileEgress } = await import('../policy/net.js');
        return printDecision(
          ctx,
          compileEgress(loaded.policy.network).decideHttp(host, port, method, `${url.pathname}${url.search}`),
          asJson,
        );
      }
      if (kind === 'net') {
        if (args.length !== 1) return usage('net takes exactly one destination: <host>[:<port>], or <url> [<method>]');
        const dest = splitHostPort(args[0]!);
        if (!dest) return usage(`"${args[0]}" is not <host>[:<port>]`);
        const loaded = await load(ctx, file, EXIT.usage, false);
        if (!loaded) return;
        const { compileEgress } = await import('../policy/net.js');
        return printDecision(ctx, compileEgress(loaded.policy.network).decide(dest.host, dest.port), asJson);
      }
      if (kind === 'fs') {
        const [mode, path] = args;
        if (args.length !== 2 || (mode !== 'read' && mode !== 'write')) return usage('fs takes <read|write> <path>');
        const loaded = await load(ctx, file, EXIT.usage, false);
        if (!loaded) return;
        // The whole sandbox view (tmpfs, code, image root, grants, /proc masks), read off the
        // bundle a run would get; not only the manifest's grants (decidePath).
        const { decideSandboxPath } = await import('../sandbox/spec/view.js');
        const d = decideSandboxPath(loaded.policy, mode, path!);
        if (asJson) json(ctx, d);
        else ctx.out(`${d.allow ? 'allow' : 'deny'}: ${d.reason} (${d.detail})\n`);
        ctx.exitCode = d.allow ? EXIT.ok : EXIT.failure;
        return;
      }
      if (kind === 'tool') {
        if (args.length !== 2) return usage('tool takes <server> <tool>');
        const loaded = await load(ctx, file, EXIT.usage, false);
        if (!loaded) return;
        const { decideTool } = await import('../policy/tools.js');
        return printDecision(ctx, decideTool(loaded.policy.tools, args[0]!, args[1]!), asJson);
      }
      return usage(`unknown kind "${kind}" (use net, fs or tool)`);
    });
}

/**
 * `aegis` command-line entry point: parses arguments (commander) and dispatches to the command
 * modules. Each area registers its commands from its own file; the modules behind a command are
 * imported lazily inside its action, so `aegis --version` and `aegis validate` start fast.
 */
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { type CliContext, EXIT, processContext } from './context.js';
import { isAegisError } from '../errors.js';
import { registerManifestCommands } from './manifest-commands.js';
import { registerAuditCommands } from './audit-commands.js';
import { registerImageCommands } from './image-commands.js';
import { registerDoctorCommands } from './doctor-commands.js';
import { registerRunCommands } from './run-commands.js';
import { registerAlertCommands } from './alert-commands.js';
import { registerSecretCommands } from './secret-commands.js';
import { registerServeCommands } from './serve-commands.js';
import { registerClientCommands, registerClientKeyCommands } from './client-commands.js';

const require = createRequire(import.meta.url);
const pkg = require('../../../package.json') as { version: string };

export function buildProgram(ctx: CliContext): Command {
  const program = new Command('aegis')
    .description('Run untrusted AI-agent code under the policy its agent.yaml declares.')
    .version(pkg.version, '-V, --version', 'print the AEGIS version')
    .configureOutput({ writeOut: (s) => ctx.out(s), writeErr: (s) => ctx.err(s) })
    .exitOverride()
    .showHelpAfterError('(run "aegis help" for the list of commands)');
  registerManifestCommands(program, ctx);
  registerAuditCommands(program, ctx);
  registerImageCommands(program, ctx);
  registerDoctorCommands(program, ctx);
  registerRunCommands(program, ctx);
  registerAlertCommands(program, ctx);
  registerSecretCommands(program, ctx);
  registerClientKeyCommands(registerServeCommands(program, ctx), ctx);
  registerClientCommands(program, ctx);
  return program;
}

/** Runs the CLI with `argv` (without node and script) and returns the process exit code. */
export async function main(argv: readonly string[], ctx: CliContext = processContext()): Promise<number> {
  const program = buildProgram(ctx);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --version / --help end with exit code 0; argument errors are usage errors (2).
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    // An error AEGIS reports on purpose (a bad setting read by ctx.config(), ...) that a command did
    // not handle itself: its message and code, not an "internal error" with a stack trace.
    if (isAegisError(err)) {
      ctx.err(`aegis: ${err.message} (${err.code})\n`);
      return EXIT.cannotStart;
    }
    throw err;
  }
}

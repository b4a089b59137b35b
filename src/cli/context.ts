import { type AegisConfig, loadConfig } from '../config/index.js';

/**
 * What every CLI command gets: output streams and a place to put its exit code.
 * stdout carries results only (machine-readable with --json); diagnostics go to stderr.
 */
export interface CliContext {
  out(text: string): void;
  err(text: string): void;
  exitCode: number;
  /** The configuration, read from the environment once, on first use (throws ConfigError). */
  config(): AegisConfig;
}

/** Exit codes shared by all commands (command-specific ones are documented with the command). */
export const EXIT = {
  ok: 0,
  /** `validate`: invalid manifest; `policy test`: deny. */
  failure: 1,
  /** Bad arguments or an unusable manifest where 1 means something else. */
  usage: 2,
  /** `run`: AEGIS could not start the agent. */
  cannotStart: 125,
} as const;

export function processContext(): CliContext {
  // A reader that goes away (`aegis audit export | head`) is not an error: stop writing quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  let config: AegisConfig | undefined;
  return {
    out: (t) => void process.stdout.write(t),
    err: (t) => void process.stderr.write(t),
    exitCode: 0,
    config: () => (config ??= loadConfig()),
  };
}

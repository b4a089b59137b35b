/**
 * `aegis run`: starts the agent of an agent.yaml in a fresh sandbox.
 *
 * Contract (checked exactly):
 *   run <agent.yaml> [--isolation crun|runc|gvisor|docker] [--volume HOST:SANDBOX[:ro|rw[,size=N]]]... [--env NAME=VALUE]...
 *       [--summary <file>] [--seccomp-profile <file>] [--dry-run] [--timings] [-- extra args]
 *   The agent's stdout and stderr stream through unchanged, and AEGIS's stdin is copied in: by
 *   AEGIS, through pipes of its own (the runtime never gets the operator's descriptors; see
 *   src/sandbox/stdio.ts). Exit code: the agent's; 137 when
 *   AEGIS killed it (oom, timeout, SIGINT/SIGTERM to AEGIS); 125 when AEGIS could not start it
 *   (the reason on stderr). `--summary` writes
 *   {"executionId","status","exitCode","durationMs","cpuMs","maxMemoryBytes"}, plus "warnings"
 *   (fs.write paths without a volume, rw volumes not copied back) when there are any, each
 *   also on stderr as `aegis run: warning: ...`.
 *   `--dry-run` prints the OCI bundle (config.json and the rootfs skeleton) and runs nothing.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import type { CliContext } from './context.js';

export interface RunFlags {
  isolation?: 'crun' | 'runc' | 'gvisor' | 'docker' | 'microvm';
  volume: string[];
  /** Operator's plain environment values (src/policy/env.ts: applyOperatorEnv). */
  env: string[];
  summary?: string;
  seccompProfile?: string;
  dryRun?: boolean;
  stateDir?: string;
  /** Print each phase's duration to stderr at the end (issue 18). */
  timings?: boolean;
}

export function registerRunCommands(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description(
      "run the agent of <agent.yaml> in a sandbox that enforces its policy; exit code is the agent's (137: killed by AEGIS, 125: could not start)",
    )
    .argument('<agent.yaml>', 'the agent manifest')
    .argument('[args...]', 'extra arguments appended to the entrypoint (after --)')
    .addOption(
      new Option('--isolation <runtime>', 'OCI runtime, docker or microvm (default: agent.isolation, else crun)').choices([
        'crun',
        'runc',
        'gvisor',
        'docker',
        'microvm',
      ]),
    )
    .option(
      '--volume <HOST:SANDBOX[:ro|rw[,size=N]]>',
      'attach a host folder where fs.read (ro) or fs.write (rw) grants the sandbox path (repeatable); rw volumes live on a filesystem of size N (default 1G) and are copied back at the end',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option(
      '--env <NAME=VALUE>',
      "set a plain environment value for the agent, adding to or overriding agent.yaml's env (repeatable; not for secrets; the audit log records the name, not the value)",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--summary <file>', 'write a JSON summary of the run to <file>')
    .option('--seccomp-profile <file>', 'Docker-format seccomp profile, intersected with the default')
    .option('--dry-run', 'print the OCI bundle instead of running it')
    .option('--timings', "print each phase's duration (from the process's start) to stderr at the end")
    .addOption(new Option('--state-dir <dir>', 'run records and runtime state').default('/run/aegis').hideHelp())
    .action(async (file: string, args: string[], flags: RunFlags) => {
      const { runCommand } = await import('./run-action.js');
      ctx.exitCode = await runCommand(ctx, file, args, flags);
    });
}

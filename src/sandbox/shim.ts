/**
 * The shim of a prepared sandbox: the container is created and started ahead with `/bin/sh` of
 * the image as its process, which waits for one line on its stdin, then `eval`s it: `export`s
 * the execution's environment and `exec`s the agent's argv (same pid, same stdin). Everything
 * else (namespaces, mounts, cgroup, seccomp, rlimits, user) was set up by the runtime as for a
 * cold start, so the agent runs under exactly the same confinement.
 *
 * The line is built here from untrusted strings (the caller's args and env values): every value
 * is single-quoted (`'` written as `'\''`) and every newline written as `'"$n"'` (the shim sets
 * `n` to a newline), so the line has no newline and `eval` sees only literal words. NUL cannot
 * occur (argv and environ cannot carry it). Names are checked against ENV_NAME.
 *
 * ARCHITECTURE NOTE: the shim runs as the agent, inside the agent's sandbox: what it evaluates
 * can only do what the agent itself may. dash's `read` takes its input one byte at a time from a
 * pipe, so the agent's stdin starts right after the line. Pure.
 */
import { ENV_NAME } from '../policy/env.js';

/**
 * The shim's argv (the container's process). `n` holds a newline, `l` the line; neither is
 * exported. The shell's own PWD (dash exports it) is removed: the agent's environment is the
 * runtime's plus the line's, as for a cold start.
 */
export const SHIM_ARGV: readonly string[] = [
  '/bin/sh',
  '-c',
  'unset PWD OLDPWD; n=\'\n\'; IFS= read -r l || exit 125; eval "$l"',
  'aegis-shim',
];

/** A single-quoted shell word for any string (newlines through `$n`). */
function quote(v: string): string {
  return "'" + v.replace(/'/g, "'\\''").replace(/\n/g, '\'"$n"\'') + "'";
}

/** The one line the shim evaluates: `export` of every variable, then `exec` of argv. */
export function shimLine(argv: readonly string[], env: Readonly<Record<string, string>>): string {
  if (argv.length === 0) throw new Error('empty argv');
  const exports = Object.entries(env).map(([k, v]) => {
    if (!ENV_NAME.test(k)) throw new Error(`not an environment variable name: ${JSON.stringify(k)}`);
    return `export ${k}=${quote(v)}; `;
  });
  return `${exports.join('')}exec ${argv.map(quote).join(' ')}\n`;
}

/**
 * "Did you mean" for manifest keys. Pure.
 *
 * A key is suggested when it is a known alias of a real key (words users bring from other tools:
 * `timeout` for `execution_time`), or when it is a small edit away from a real key or an alias
 * (`enviroment` -> `environment` -> `env`). Keys are compared after lower-casing and dropping
 * `_` and `-`, so `ratelimit` and `rate-limit` find `rate_limit`. A suggestion only names a key
 * that exists at that level of the manifest.
 */

/** Other tools' words for our keys: alias -> key. */
const KEY_ALIASES: Readonly<Record<string, string>> = {
  timeout: 'execution_time',
  time_limit: 'execution_time',
  max_time: 'execution_time',
  duration: 'execution_time',
  environment: 'env',
  environ: 'env',
  env_vars: 'env',
  variables: 'env',
  mem: 'memory',
  memory_limit: 'memory',
  cpu: 'cpu_quota',
  cpus: 'cpu_quota',
  pids: 'processes',
  max_processes: 'processes',
  image: 'runtime',
  command: 'entrypoint',
  cmd: 'entrypoint',
  args: 'entrypoint',
  net: 'network',
  egress: 'network',
  filesystem: 'fs',
  allowlist: 'allow',
  hosts: 'allow',
  domains: 'allow',
  seccomp: 'syscalls',
  quota: 'byte_quota',
};

function squash(s: string): string {
  return s.toLowerCase().replace(/[_-]/g, '');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions), capped at `max + 1`. */
export function editDistance(a: string, b: string, max = 3): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row = new Array<number>(b.length + 1).fill(0);
    row[0] = i;
    rows.push(row);
  }
  for (let j = 0; j <= b.length; j++) rows[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = v;
    }
  }
  return Math.min(rows[a.length]![b.length]!, max + 1);
}

/** How far a typo may be from a word of this length: 1 for short words, up to 3. */
function tolerance(word: string): number {
  return Math.min(3, Math.max(1, Math.floor(word.length / 3)));
}

/**
 * The known key `key` most likely meant, or undefined. `known` are the keys valid at that level.
 * Untrusted input: the key is bounded before any comparison (no suggestion for long keys).
 */
export function suggestKey(key: string, known: readonly string[]): string | undefined {
  if (key.length === 0 || key.length > 64 || known.length === 0) return undefined;
  const k = squash(key);
  let best: { key: string; d: number } | undefined;
  const consider = (word: string, target: string): void => {
    if (!known.includes(target)) return;
    const w = squash(word);
    const d = editDistance(k, w);
    if (d <= tolerance(w) && (best === undefined || d < best.d)) best = { key: target, d };
  };
  for (const target of known) consider(target, target);
  for (const [alias, target] of Object.entries(KEY_ALIASES)) consider(alias, target);
  return best?.key === key ? undefined : best?.key;
}

/**
 * `aegis image build <ref>`: builds a minimal Debian rootfs from a known recipe with
 * debootstrap (variant minbase) from the host's configured Debian mirror, installs the
 * recipe's packages with apt-get inside a chroot, smoke-tests it and seals it into the store.
 * Adapter: runs debootstrap/chroot as child processes; must run as root. Progress goes to
 * `log` (stderr in the CLI).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AptSource, imageSourcesList, parseDeb822, parseOneLine, pickMirror } from './apt-sources.js';
import { ImageError } from './errors.js';
import type { ImageRef } from '../policy/types.js';
import { removeStaging, sweepStaging } from './staging.js';
import { type CommitResult, commitImage, ensureStore, makeStaging, paths } from './store.js';
import { findExecutable, runCommand } from '../host/exec.js';
import { pidAlive } from '../host/pid-lock.js';

export { type Recipe, RECIPES } from './recipes.js';
import { RECIPES } from './recipes.js';

export const DEFAULT_IMAGE = 'python:3.11';

/** Empty directories the runtime mounts over; present in every built image so a runtime never has to create them. */
export const MOUNTPOINTS = ['proc', 'sys', 'dev', 'tmp', 'run', 'agent', 'workspace'];

/** Reads the host's APT sources (one-line and deb822). */
export function hostAptSources(etc = '/etc/apt'): AptSource[] {
  const out: AptSource[] = [];
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return null;
    }
  };
  const main = read(join(etc, 'sources.list'));
  if (main) out.push(...parseOneLine(main));
  let names: string[] = [];
  try {
    names = readdirSync(join(etc, 'sources.list.d')).sort();
  } catch {
    /* none */
  }
  for (const n of names) {
    const t = read(join(etc, 'sources.list.d', n));
    if (t === null) continue;
    if (n.endsWith('.list')) out.push(...parseOneLine(t));
    else if (n.endsWith('.sources')) out.push(...parseDeb822(t));
  }
  return out;
}

const CHROOT_ENV = {
  PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
  LC_ALL: 'C',
  DEBIAN_FRONTEND: 'noninteractive',
  HOME: '/root',
};

/**
 * Runs a command (bounded by `timeoutMs`, default 30 min: a slow mirror); streams condensed
 * output to `log`; rejects with image.build_failed.
 */
async function run(
  argv: readonly string[],
  log: (s: string) => void,
  opts: { env?: NodeJS.ProcessEnv; quietPrefixes?: readonly string[]; capture?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  const cmd = argv[0] ?? '';
  const tail: string[] = [];
  const shown = new Set<string>();
  const onLine = (line: string): void => {
    if (!line.trim()) return;
    tail.push(line);
    if (tail.length > 20) tail.shift();
    if (opts.capture) return;
    // debootstrap prints one "I: <Verb> <pkg>..." line per package: show each verb once.
    const verb = /^I: (\w+)/.exec(line)?.[1] ?? '';
    if (verb && (opts.quietPrefixes ?? []).includes(verb)) {
      if (!shown.has(verb)) log(`  ${cmd}: ${verb.toLowerCase()} packages...\n`);
      shown.add(verb);
      return;
    }
    log(`  ${cmd}: ${line}\n`);
  };
  const r = await runCommand([findExecutable(cmd) ?? cmd, ...argv.slice(1)], {
    timeoutMs: opts.timeoutMs ?? 30 * 60_000,
    onLine,
    ...(opts.env ? { env: opts.env } : {}),
  }).catch((err: unknown) => {
    throw new ImageError('image.build_failed', `cannot run ${cmd}: ${(err as Error).message}`, { cause: err });
  });
  if (r.code !== 0) {
    const how = r.timedOut ? 'timed out' : r.signal !== null ? r.signal : `exit ${r.code}`;
    throw new ImageError('image.build_failed', `${argv.join(' ')} failed (${how}):\n${tail.join('\n')}`);
  }
  return r.stdout;
}

export interface BuildResult extends CommitResult {
  ref: string;
  seconds: number;
}

/** Removes what a build leaves that is host- or time-specific and not part of the image. */
function tidy(rootfs: string): void {
  const empty = (rel: string) => {
    const p = join(rootfs, rel);
    if (!existsSync(p)) return;
    for (const n of readdirSync(p)) rmSync(join(p, n), { recursive: true, force: true });
  };
  empty('var/lib/apt/lists');
  empty('var/cache/apt');
  empty('var/cache/debconf');
  empty('var/log');
  empty('tmp');
  empty('run');
  empty('dev');
  rmSync(join(rootfs, 'var/lib/apt/lists'), { recursive: true, force: true });
  mkdirSync(join(rootfs, 'var/lib/apt/lists/partial'), { recursive: true, mode: 0o755 });
  for (const m of MOUNTPOINTS) mkdirSync(join(rootfs, m), { recursive: true, mode: 0o755 });
  // The runtime bind-mounts these; keep neutral contents in the image.
  writeFileSync(join(rootfs, 'etc/resolv.conf'), '');
  writeFileSync(join(rootfs, 'etc/hostname'), 'sandbox\n');
  writeFileSync(join(rootfs, 'etc/hosts'), '127.0.0.1\tlocalhost\n::1\tlocalhost\n');
  writeFileSync(join(rootfs, 'etc/machine-id'), '');
}

/**
 * Builds `ref` from its recipe into the store at `imagesDir` and tags it. Takes ~30-60 s.
 */
export async function buildImage(
  ref: ImageRef,
  opts: { imagesDir: string; log: (s: string) => void; aptEtc?: string },
): Promise<BuildResult> {
  const key = `${ref.name}:${ref.tag}`;
  const recipe = RECIPES[key];
  if (!recipe)
    throw new ImageError(
      'image.unknown_recipe',
      `no build recipe for ${key}; known: ${Object.keys(RECIPES).join(', ')} (use \`aegis image import\` for others)`,
    );
  if (ref.digest !== null)
    throw new ImageError('image.bad_ref', 'a build cannot be pinned to a digest; build the tag, then pin the digest it prints');
  if ((process.geteuid?.() ?? 0) !== 0)
    throw new ImageError('image.build_failed', 'aegis image build must run as root (debootstrap, chroot)');
  for (const tool of ['debootstrap', 'chroot']) {
    if (findExecutable(tool) === null)
      throw new ImageError('image.build_failed', `${tool} is not installed: apt-get install debootstrap (or run \`aegis doctor --fix\`)`);
  }
  const choice = pickMirror(hostAptSources(opts.aptEtc), recipe.suite);
  if (!choice) throw new ImageError('image.build_failed', `no Debian mirror for ${recipe.suite} in /etc/apt/sources.list*`);
  const t0 = Date.now();
  const { log } = opts;
  ensureStore(opts.imagesDir);
  sweepStaging(paths.tmp(opts.imagesDir), pidAlive);
  const staging = makeStaging(opts.imagesDir, 'build');
  const rootfs = join(staging, 'rootfs');
  try {
    const cache = join(paths.cache(opts.imagesDir), 'debootstrap');
    mkdirSync(cache, { recursive: true, mode: 0o700 });
    log(`[1/4] debootstrap --variant=minbase ${recipe.suite} from ${choice.mirror}\n`);
    // Retried once from scratch (downloaded packages stay in the cache): mirrors and networks hiccup.
    for (let attempt = 1; ; attempt++) {
      try {
        await run(['debootstrap', '--variant=minbase', `--cache-dir=${cache}`, recipe.suite, rootfs, choice.mirror], log, {
          quietPrefixes: ['Retrieving', 'Validating', 'Extracting', 'Unpacking', 'Configuring'],
        });
        break;
      } catch (err) {
        if (attempt >= 2) throw err;
        log(`  debootstrap failed (attempt ${attempt}/2), retrying in 5 s\n`);
        removeStaging(rootfs);
        await new Promise((r) => setTimeout(r, 5000));
      }
    }
    writeFileSync(join(rootfs, 'etc/apt/sources.list'), imageSourcesList(choice, recipe.suite));
    if (recipe.packages.length) {
      log(`[2/4] apt-get install ${recipe.packages.join(' ')} (chroot)\n`);
      // --error-on=any: a failed index download must fail the build, or the image silently
      // misses bookworm-updates / bookworm-security. Retried: mirrors and networks hiccup.
      for (let attempt = 1; ; attempt++) {
        try {
          await run(['chroot', rootfs, 'apt-get', 'update', '-qq', '--error-on=any'], log, { env: CHROOT_ENV });
          break;
        } catch (err) {
          if (attempt >= 3) throw err;
          log(`  apt-get update failed (attempt ${attempt}/3), retrying in 5 s\n`);
          await new Promise((r) => setTimeout(r, 5000));
        }
      }
      await run(['chroot', rootfs, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...recipe.packages], log, {
        env: CHROOT_ENV,
        capture: true,
      });
      await run(['chroot', rootfs, 'apt-get', 'clean'], log, { env: CHROOT_ENV });
    } else {
      log('[2/4] no extra packages\n');
    }
    tidy(rootfs);
    if (recipe.smoke) {
      log(`[3/4] smoke test: ${recipe.smoke.argv.join(' ')}\n`);
      const out = await run(['chroot', rootfs, ...recipe.smoke.argv], log, { env: CHROOT_ENV, capture: true });
      if (!out.trim().startsWith(recipe.smoke.expect)) {
        throw new ImageError('image.build_failed', `smoke test printed ${JSON.stringify(out.trim())}, expected ${recipe.smoke.expect}`);
      }
    }
    log('[4/4] hashing files and sealing the image\n');
    const res = await commitImage(
      opts.imagesDir,
      staging,
      {
        source: { kind: 'build', recipe: key, suite: recipe.suite, mirror: choice.mirror, packages: recipe.packages.join(' ') },
        config: { env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8'] },
      },
      [key],
    );
    return { ...res, ref: key, seconds: (Date.now() - t0) / 1000 };
  } catch (err) {
    if (existsSync(staging)) removeStaging(staging);
    throw err;
  }
}

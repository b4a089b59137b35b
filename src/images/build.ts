/**
 * `aegis image build <ref>`: builds a minimal Debian rootfs from a known recipe with
 * debootstrap (variant minbase) from the host's configured Debian mirror, installs the
 * recipe's packages with apt-get inside a chroot, smoke-tests it and seals it into the store.
 * Adapter: runs debootstrap/chroot as child processes; must run as root. Progress goes to
 * `log` (stderr in the CLI).
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type AptSource, imageSourcesList, parseDeb822, parseOneLine, pickMirror } from './apt-sources.js';
import { ImageError } from './errors.js';
import type { ImageRef } from '../policy/types.js';
import { removeStaging, sweepStaging } from './staging.js';
import { type BuildSpec, checkRequirements, requirementsHaveHashes } from './buildspec.js';
import { type CommitResult, commitImage, ensureStore, makeStaging, paths, resolveImageChecked } from './store.js';
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

/**
 * `apt-get update` in the image's chroot, retried up to 3 times (mirrors and networks hiccup).
 * --error-on=any: a failed index download must fail the build, or the image silently misses
 * bookworm-updates / bookworm-security.
 */
async function aptUpdate(rootfs: string, log: (s: string) => void): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await run(['chroot', rootfs, 'apt-get', 'update', '-qq', '--error-on=any'], log, { env: CHROOT_ENV });
      return;
    } catch (err) {
      if (attempt >= 3) throw err;
      log(`  apt-get update failed (attempt ${attempt}/3), retrying in 5 s\n`);
      await new Promise((r) => setTimeout(r, 5000));
    }
  }
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
      await aptUpdate(rootfs, log);
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

export interface DerivedBuildOptions {
  readonly imagesDir: string;
  readonly log: (s: string) => void;
  /** The validated spec (src/images/buildspec.ts); `from` must be set. */
  readonly spec: BuildSpec;
  /** Absolute paths of the pip inputs (the spec's paths resolved by the caller). */
  readonly pipFiles?: { readonly requirements: string; readonly findLinks: string | null };
  /** Absolute path of the package-lock.json (package.json beside it). */
  readonly npmLock?: string;
  /** The spec file's text, recorded (with its hash) in the image metadata. */
  readonly specText?: string;
}

const sha256hex = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Digests of every regular file directly in a wheel folder (what pip may install from it). */
function folderDigests(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of readdirSync(dir).sort()) {
    const p = join(dir, n);
    if (lstatSync(p).isFile()) out[n] = sha256hex(readFileSync(p));
  }
  return out;
}

/**
 * `aegis image build <ref> --from <base> [--apt <pkg>]... [--pip <requirements.txt>]`: copies the
 * base image's rootfs, installs Debian packages with apt-get and Python requirements with pip
 * inside a chroot, and seals the result as a new content-addressed image.
 *
 * ARCHITECTURE NOTE: pip runs only during the build. When the base has no pip, Debian's
 * python3-pip is installed for the build and purged (with what it pulled in) before sealing, so
 * the image has no pip unless `--apt python3-pip` asked for it. Requirements go to /usr/local
 * (`--break-system-packages`: the image is single-purpose). With a requirements file that pins
 * hashes, pip runs with `--require-hashes`. With `--find-links` and no `--index-url`, pip runs
 * with `--no-index`: nothing is fetched from the network.
 * LIMITATION: apt packages come from the Debian mirror the base was built from (its
 * /etc/apt/sources.list), trusted through Debian's signed archive; wheels from an index are
 * trusted only as far as the hashes in the requirements file pin them.
 */
export async function buildDerivedImage(ref: ImageRef, opts: DerivedBuildOptions): Promise<BuildResult> {
  const key = `${ref.name}:${ref.tag}`;
  const { spec, log } = opts;
  if (ref.digest !== null) throw new ImageError('image.bad_ref', 'a build cannot be pinned to a digest');
  if (!spec.from) throw new ImageError('image.spec_invalid', 'no base image: pass --from <name:tag> or set from: in the spec');
  if (!spec.apt.length && !spec.pip && !spec.npm)
    throw new ImageError('image.spec_invalid', 'nothing to add: give --apt, --pip, --npm or a spec');
  if (spec.npm && !opts.npmLock) throw new ImageError('image.spec_invalid', 'npm lockfile given without its path');
  if (spec.pip && !opts.pipFiles) throw new ImageError('image.spec_invalid', 'pip requirements given without their file');
  if ((process.geteuid?.() ?? 0) !== 0) throw new ImageError('image.build_failed', 'aegis image build must run as root (chroot)');
  if (findExecutable('chroot') === null) throw new ImageError('image.build_failed', 'chroot is not installed');
  const t0 = Date.now();
  const base = await resolveImageChecked(spec.from, { imagesDir: opts.imagesDir, verify: 'stat' });
  const inputs: Record<string, unknown> = { base: base.digest };
  let reqText = '';
  if (spec.pip && opts.pipFiles) {
    let reqBytes: Buffer;
    try {
      reqBytes = readFileSync(opts.pipFiles.requirements);
    } catch (err) {
      throw new ImageError('image.spec_invalid', `cannot read ${opts.pipFiles.requirements}: ${(err as Error).message}`);
    }
    reqText = reqBytes.toString('utf8');
    checkRequirements(reqText);
    inputs['requirements'] = sha256hex(reqBytes);
    if (opts.pipFiles.findLinks !== null) {
      try {
        inputs['find_links'] = folderDigests(opts.pipFiles.findLinks);
      } catch (err) {
        throw new ImageError('image.spec_invalid', `cannot read the wheel folder ${opts.pipFiles.findLinks}: ${(err as Error).message}`);
      }
    }
  }
  if (opts.specText !== undefined) inputs['spec'] = sha256hex(opts.specText);
  const npmFiles = opts.npmLock ? readNpmProject(opts.npmLock) : null;
  if (npmFiles) inputs['npm'] = { 'package-lock.json': sha256hex(npmFiles.lock), 'package.json': sha256hex(npmFiles.pkg) };
  ensureStore(opts.imagesDir);
  sweepStaging(paths.tmp(opts.imagesDir), pidAlive);
  const staging = makeStaging(opts.imagesDir, 'build');
  const rootfs = join(staging, 'rootfs');
  try {
    log(`[1/5] copying ${spec.from.ref} (${base.digest.slice(0, 19)})\n`);
    await run(['cp', '-a', base.rootfs, rootfs], log, { timeoutMs: 10 * 60_000 });
    // Name resolution and the basic device nodes apt and pip need, for the build only (no
    // mounts to leak); tidy() empties /dev and writes the neutral files back.
    writeFileSync(join(rootfs, 'etc/resolv.conf'), readFileSync('/etc/resolv.conf'));
    for (const [name, minor] of [
      ['null', 3],
      ['zero', 5],
      ['full', 7],
      ['random', 8],
      ['urandom', 9],
    ] as const) {
      // A base may hold a regular file there (a recipe's smoke test redirected into /dev/null after tidy()).
      rmSync(join(rootfs, 'dev', name), { force: true });
      await run(['mknod', '-m', '666', join(rootfs, 'dev', name), 'c', '1', String(minor)], log);
    }
    const hasPip = existsSync(join(rootfs, 'usr/lib/python3/dist-packages/pip'));
    const needPython = spec.pip !== null && !existsSync(join(rootfs, 'usr/bin/python3'));
    if (needPython) throw new ImageError('image.spec_invalid', `--pip needs a base with Python (${spec.from.ref} has no /usr/bin/python3)`);
    const buildOnly = spec.pip && !hasPip && !spec.apt.includes('python3-pip') ? ['python3-pip'] : [];
    const aptAll = [...spec.apt, ...buildOnly];
    if (aptAll.length) {
      log(`[2/5] apt-get install ${aptAll.join(' ')} (chroot)\n`);
      await aptUpdate(rootfs, log);
      if (spec.apt.length)
        await run(['chroot', rootfs, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...spec.apt], log, {
          env: CHROOT_ENV,
          capture: true,
        });
      if (buildOnly.length)
        await run(['chroot', rootfs, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...buildOnly], log, {
          env: CHROOT_ENV,
          capture: true,
        });
    } else log('[2/5] no Debian packages\n');
    if (spec.pip && opts.pipFiles) {
      const work = join(rootfs, 'tmp/aegis-build');
      mkdirSync(work, { recursive: true, mode: 0o700 });
      writeFileSync(join(work, 'requirements.txt'), reqText);
      const argv = ['chroot', rootfs, '/usr/bin/python3', '-m', 'pip', 'install', '--no-cache-dir', '--disable-pip-version-check'];
      argv.push('--break-system-packages', '--root-user-action=ignore', '--no-input', '--no-compile');
      if (opts.pipFiles.findLinks !== null) {
        await run(['cp', '-r', opts.pipFiles.findLinks, join(work, 'wheels')], log, { timeoutMs: 5 * 60_000 });
        argv.push('--find-links', '/tmp/aegis-build/wheels');
        if (spec.pip.indexUrl === null) argv.push('--no-index');
      }
      if (spec.pip.indexUrl !== null) argv.push('--index-url', spec.pip.indexUrl);
      const hashes = requirementsHaveHashes(reqText);
      if (hashes) argv.push('--require-hashes');
      inputs['require_hashes'] = hashes;
      log(`[3/5] pip install -r requirements.txt${hashes ? ' --require-hashes' : ''} (chroot)\n`);
      await run([...argv, '-r', '/tmp/aegis-build/requirements.txt'], log, { env: CHROOT_ENV, capture: true, timeoutMs: 20 * 60_000 });
      rmSync(work, { recursive: true, force: true });
      if (buildOnly.length) {
        log(`  removing the build-only ${buildOnly.join(' ')}\n`);
        await run(['chroot', rootfs, 'apt-get', 'purge', '-y', '-qq', '--auto-remove', ...buildOnly], log, {
          env: CHROOT_ENV,
          capture: true,
        });
      }
    } else log('[3/5] no Python requirements\n');
    if (npmFiles) {
      if (!existsSync(join(rootfs, 'usr/bin/node')))
        throw new ImageError('image.spec_invalid', `--npm needs a base with Node.js (${spec.from.ref} has no /usr/bin/node)`);
      await npmInstall(rootfs, staging, npmFiles, log);
    }
    await run(['chroot', rootfs, 'apt-get', 'clean'], log, { env: CHROOT_ENV });
    tidy(rootfs);
    log('[4/5] smoke test\n');
    const out = await run(['chroot', rootfs, '/bin/sh', '-c', 'echo ok'], log, { env: CHROOT_ENV, capture: true });
    if (out.trim() !== 'ok') throw new ImageError('image.build_failed', 'the built image cannot run /bin/sh');
    log('[5/5] hashing files and sealing the image\n');
    const res = await commitImage(
      opts.imagesDir,
      staging,
      {
        source: {
          kind: 'build',
          from: spec.from.ref,
          base: base.digest,
          packages: spec.apt.join(' '),
          spec: JSON.stringify({
            from: spec.from.ref,
            apt: spec.apt,
            pip: spec.pip && { requirements: spec.pip.requirements, index_url: spec.pip.indexUrl, find_links: spec.pip.findLinks },
            npm: spec.npm,
          }),
          inputs: JSON.stringify(inputs),
        },
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

/** package-lock.json and the package.json beside it (both required by `npm ci`). */
function readNpmProject(lockPath: string): { lock: Buffer; pkg: Buffer } {
  try {
    const lock = readFileSync(lockPath);
    const pkg = readFileSync(join(dirname(lockPath), 'package.json'));
    const v = JSON.parse(lock.toString('utf8')) as { lockfileVersion?: unknown };
    if (typeof v !== 'object' || v === null || typeof v.lockfileVersion !== 'number')
      throw new Error('not an npm lockfile (no lockfileVersion)');
    return { lock, pkg };
  } catch (err) {
    throw new ImageError('image.spec_invalid', `cannot use ${lockPath}: ${(err as Error).message}`);
  }
}

/**
 * `npm ci` of the lockfile into the image's /node_modules (found by both `require` and `import`
 * from /agent, which resolve up to the root).
 *
 * ARCHITECTURE NOTE: npm is the HOST's (the base images have none), run outside the chroot
 * with `--ignore-scripts` (no package code runs during the build, so native addons are not
 * built: pure-JavaScript packages only) and `--omit=dev`. `npm ci` installs exactly the
 * lockfile and checks every tarball against its `integrity` hash; the registry is npm's
 * configured one. LIMITATION: packages that need install scripts do not work.
 */
async function npmInstall(rootfs: string, staging: string, files: { lock: Buffer; pkg: Buffer }, log: (s: string) => void): Promise<void> {
  const npm = findExecutable('npm');
  if (npm === null) throw new ImageError('image.build_failed', '--npm needs npm on the host (in the system directories)');
  const work = join(staging, 'npm');
  mkdirSync(work, { mode: 0o700 });
  writeFileSync(join(work, 'package-lock.json'), files.lock);
  writeFileSync(join(work, 'package.json'), files.pkg);
  log('[3/5] npm ci --omit=dev --ignore-scripts (lockfile integrity checked)\n');
  // The operator's npm configuration (registry mirror, proxy) applies; the cache is the build's own.
  const argv = [
    npm,
    'ci',
    '--omit=dev',
    '--ignore-scripts',
    '--no-audit',
    '--no-fund',
    // Retries stay (networks hiccup) but short: a tarball that fails its integrity check is retried too.
    '--fetch-retry-mintimeout=1000',
    '--fetch-retry-maxtimeout=5000',
    '--cache',
    join(staging, 'npm-cache'),
    '--prefix',
    work,
  ];
  await run(argv, log, { capture: true, timeoutMs: 20 * 60_000 });
  if (existsSync(join(rootfs, 'node_modules'))) throw new ImageError('image.spec_invalid', `the base already has /node_modules`);
  renameSync(join(work, 'node_modules'), join(rootfs, 'node_modules'));
  await run(['chown', '-R', '0:0', join(rootfs, 'node_modules')], log);
  rmSync(work, { recursive: true, force: true });
  rmSync(join(staging, 'npm-cache'), { recursive: true, force: true });
}

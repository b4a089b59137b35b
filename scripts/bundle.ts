/**
 * Bundles the CLI (issue 18: start-up cost): `npm run build` runs it after tsc. Output in
 * dist/bundle/: `aegis.js` (what bin/aegis.js imports), chunks for what the commands import
 * lazily (`await import()`: each command's action, the server, the gateway...), and the worker
 * threads' own entry points (`encode-worker.js`, `verify-worker.js`), each with a source map.
 *
 * Why: Node's ESM loader costs about 1 ms per module (resolve, read, link) and the CJS
 * packages imported from ESM go through cjs-module-lexer; `aegis run` loaded some 130 files.
 *
 * What stays outside (loaded from node_modules by a lazy import, as before): every package not
 * in BUNDLED (native addons such as better-sqlite3, and the server-side dependencies: fastify,
 * pg, dockerode, the MCP SDK, x509), so a command that does not need one never loads it.
 *
 * `import.meta.url` in a bundled module is rewritten to the URL of that module's tsc output
 * (dist/src/...), so the paths computed from it (the default alert pack, the package files, the
 * code stamps of the manifest cache, the microVM launcher) are the same bundled or not; only the
 * two worker URLs stay relative to the bundle, where their entry points are written.
 * `meta.json` (esbuild's metafile) says which sources each output file holds.
 *
 *   node dist/scripts/bundle.js
 */
import { build, type Plugin } from 'esbuild';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = join(ROOT, 'dist', 'bundle');

/** Pure-JavaScript packages on the path of the common commands, bundled in. */
const BUNDLED = new Set(['commander', 'tldts', 'tldts-core', 'ipaddr.js', 'yaml', 'zod', 'dns-packet', '@leichtgewicht/ip-codec']);

/** Worker threads whose URL (`new URL('./<name>.js', import.meta.url)`) is kept relative to the bundle. */
const WORKERS = ['encode-worker', 'verify-worker'];

function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? spec);
}

/**
 * Side-effect-only imports of our own modules (`import './x.js';`) that must run before the
 * external imports after them: esbuild evaluates a chunk's external imports before any of its
 * bundled code, so these stay separate files (their tsc output), imported in their place.
 * The reflect shim installs what @peculiar/x509's tsyringe checks for at load time. Any other
 * side-effect import in src/ stops the build until it is listed here (see moduleUrls).
 */
const SEPARATE = new Set(['src/gateway/intercept/reflect-shim.ts']);

const separate: Plugin = {
  name: 'aegis-separate',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      const source = relative(ROOT, join(dirname(args.importer), args.path)).replace(/\.js$/, '.ts');
      if (!SEPARATE.has(source)) return undefined;
      return { path: './' + relative(OUT, join(ROOT, 'dist', source)).replace(/\.ts$/, '.js'), external: true };
    });
  },
};

/** Every package outside BUNDLED stays an import of node_modules. */
const externals: Plugin = {
  name: 'aegis-externals',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      return BUNDLED.has(packageName(args.path)) ? undefined : { path: args.path, external: true };
    });
  },
};

/**
 * A bundled CommonJS package's `require('node:events')` becomes `process.getBuiltinModule`
 * (Node >= 20.16; esbuild cannot emit `require` in ESM output), instead of a `createRequire`
 * shim in every chunk (the first `createRequire` call alone cost about 7 ms).
 */
const builtins: Plugin = {
  name: 'aegis-builtins',
  setup(b) {
    const names = new Set(builtinModules);
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (!args.path.startsWith('node:') && !names.has(args.path)) return undefined;
      return args.kind === 'require-call' ? { path: args.path, namespace: 'aegis-builtin' } : { path: args.path, external: true };
    });
    b.onLoad({ filter: /.*/, namespace: 'aegis-builtin' }, (args) => ({
      contents: `module.exports = process.getBuiltinModule(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};

/**
 * Packages whose evaluation is deferred to the first call of the named functions: tldts builds
 * its public-suffix tables when it is evaluated (5-18 ms here), and only host names need it
 * (compiling a manifest's allowlist, the gateway's decisions), not a run without network.
 */
const LAZY: Readonly<Record<string, readonly string[]>> = { tldts: ['getPublicSuffix'] };

const lazyPackages: Plugin = {
  name: 'aegis-lazy-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) =>
      args.kind === 'import-statement' && LAZY[args.path] !== undefined ? { path: args.path, namespace: 'aegis-lazy' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'aegis-lazy' }, (args) => ({
      contents: [
        'let m;',
        ...(LAZY[args.path] ?? []).map(
          (f) => `export function ${f}(...a) { m ??= require(${JSON.stringify(args.path)}); return m.${f}(...a); }`,
        ),
      ].join('\n'),
      resolveDir: ROOT,
      loader: 'js',
    }));
  },
};

/** `import.meta.url` of src/x/y.ts becomes the URL of dist/src/x/y.js (see the header). */
const moduleUrls: Plugin = {
  name: 'aegis-module-urls',
  setup(b) {
    b.onLoad({ filter: /\/src\/.*\.ts$/ }, async (args) => {
      let text = await readFile(args.path, 'utf8');
      for (const m of text.matchAll(/^import '(\.[^']+)';/gm)) {
        const source = relative(ROOT, join(dirname(args.path), m[1] ?? '')).replace(/\.js$/, '.ts');
        if (!SEPARATE.has(source)) throw new Error(`${relative(ROOT, args.path)}: side-effect import ${m[1]} must be listed in SEPARATE`);
      }
      for (const w of WORKERS) text = text.split(`new URL('./${w}.js', import.meta.url)`).join(`new URL('./${w}.js', __BUNDLE_URL__)`);
      const compiled = relative(OUT, join(ROOT, 'dist', relative(ROOT, args.path))).replace(/\.ts$/, '.js');
      text = text.split('import.meta.url').join(`new URL(${JSON.stringify(compiled)}, import.meta.url).href`);
      text = text.split('__BUNDLE_URL__').join('import.meta.url');
      return { contents: text, loader: 'ts' };
    });
  },
};

export async function bundle(): Promise<void> {
  await rm(OUT, { recursive: true, force: true });
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: {
      aegis: 'src/cli/main.ts',
      ...Object.fromEntries(WORKERS.map((w) => [w, `src/audit/${w}.ts`])),
    },
    outdir: OUT,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'linked',
    plugins: [lazyPackages, builtins, separate, externals, moduleUrls],
    logLevel: 'warning',
    metafile: true,
  });
  // Which sources each output holds (test/integration/run-startup.test.ts checks what a run loads).
  await writeFile(join(OUT, 'meta.json'), JSON.stringify(result.metafile));
}

await bundle();

/**
 * `aegis image build|import|tag|ls|verify|sbom|scan|rm`: the host-wide image store ($AEGIS_IMAGES).
 *
 *   image build <name:tag> [--json]        build from a recipe (python:3.11, node:18, debian:12); progress on stderr
 *   image build <name:tag> --from <base> [--apt pkg]... [--pip requirements.txt] [--index-url u] [--find-links dir] [--npm package-lock.json] [--spec image.yaml]
 *   image import <dir|tar> [--tag n:t]     import an OCI image layout or a `docker save` tarball
 *   image ls [--json]                      list images and their tags
 *   image verify <ref|sha256:..> [--stat] [--key <pub>]...  re-hash every file (or compare metadata only) against
 *                                          the manifest; with --key, also require a valid signature by one of the keys
 *   image pull <host>/<repo>:<tag>|@sha256:.. [--tag n:t] [--ca-file F]   fetch over the OCI distribution API (with its signatures)
 *   image push <ref> <host>/<repo>:<tag> [--ca-file F]                      publish (with its signatures, cosign-style)
 *   image sign <ref> [--key <file>]        sign the image's digest (Ed25519; default key $AEGIS_HOME/image-signing.key)
 *   image tag <ref> <newref>               another tag for an image in the store
 *   image sbom <ref> --format spdx|cyclonedx  SBOM document on stdout
 *   image scan <ref> --db <dir> [--json] [--fail-on low|medium|high|critical]   OSV advisories; exit 1 at/above the level
 *   image rm <ref|sha256:..> [--force]     remove a tag (and the image when no tag is left) or an image
 *
 * Exit codes: 0 ok; 1 the operation failed (coded error on stderr, `--json` prints {ok:false, code});
 * `verify`: 1 when the image does not match its digest or (--key) has no valid signature by a key given; `scan`: 1 when a finding is at or above
 * --fail-on (and on any error: an unreadable advisory folder is never a clean scan); 2 bad arguments.
 */
import type { Command } from 'commander';
import { type CliContext, EXIT } from './context.js';
import { formatBytes } from '../manifest/units.js';

function json(ctx: CliContext, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2) + '\n');
}

/** Runs an action; turns ImageError into a coded message and exit code 1 (2 for bad refs). */
async function guarded(ctx: CliContext, asJson: boolean, fn: () => Promise<void>): Promise<void> {
  const { ImageError } = await import('../images/errors.js');
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof ImageError)) throw err;
    if (asJson) json(ctx, { ok: false, code: err.code, message: err.message });
    ctx.err(`aegis image: ${err.code}: ${err.message}\n`);
    ctx.exitCode = err.code === 'image.bad_ref' ? EXIT.usage : EXIT.failure;
  }
}

/** The registry's extra CA (flag, else AEGIS_REGISTRY_CA_FILE) and credentials (AEGIS_REGISTRY_AUTH_FILE). */
async function registryAccess(
  config: { registryAuthFile: string; registryCaFile: string | undefined },
  registry: string,
  caFlag: string | undefined,
): Promise<{ ca?: string; credentials?: { username: string; password: string } }> {
  const { ImageError } = await import('../images/errors.js');
  const { readFile } = await import('node:fs/promises');
  const { readRegistryCredentials } = await import('../images/registry/auth.js');
  const caFile = caFlag ?? config.registryCaFile;
  let ca: string | undefined;
  if (caFile !== undefined) {
    try {
      ca = await readFile(caFile, 'utf8');
    } catch (cause) {
      throw new ImageError('image.registry_unreachable', `cannot read the registry CA ${caFile}: ${(cause as Error).message}`, { cause });
    }
  }
  const credentials = await readRegistryCredentials(config.registryAuthFile, registry);
  return { ...(ca !== undefined ? { ca } : {}), ...(credentials !== undefined ? { credentials } : {}) };
}

export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program
    .command('image')
    .description('Manage runtime images (the host-wide store in $AEGIS_IMAGES, default /var/lib/aegis/images)');

  image
    .command('build')
    .description('Build a runtime image from a recipe (debootstrap), or on top of a base image with --from / --spec')
    .argument('<ref>', 'name:tag, e.g. python:3.11')
    .option('--from <base>', 'base image in the store (name:tag[@sha256:...]): build on top of it instead of a recipe')
    .option('--apt <pkg>', 'Debian package to install (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--pip <requirements.txt>', 'Python requirements to install with pip (hashes enforced when the file has them)')
    .option('--index-url <url>', 'pip index (default: none reachable here; use --find-links)')
    .option('--find-links <dir>', 'local folder of wheels for pip (no index is used unless --index-url)')
    .option('--npm <package-lock.json>', 'node bases: `npm ci` of this lockfile (package.json beside it) into /node_modules')
    .option('--spec <image.yaml>', 'declarative spec: from, apt, pip (command-line options add to / override it)')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        refText: string,
        o: {
          json?: boolean;
          from?: string;
          apt: string[];
          pip?: string;
          indexUrl?: string;
          findLinks?: string;
          spec?: string;
          npm?: string;
        },
      ) => {
        await guarded(ctx, !!o.json, async () => {
          const { parseImageRef } = await import('../images/ref.js');
          const { buildImage, buildDerivedImage } = await import('../images/build.js');
          const ref = parseImageRef(refText);
          const imagesDir = ctx.config().imagesDir;
          ctx.err(`building ${ref.ref} into ${imagesDir}\n`);
          const derived = o.from !== undefined || o.spec !== undefined || o.apt.length > 0 || o.pip !== undefined || o.npm !== undefined;
          let r;
          if (!derived) {
            if (o.indexUrl !== undefined || o.findLinks !== undefined) {
              const { ImageError } = await import('../images/errors.js');
              throw new ImageError('image.spec_invalid', '--index-url and --find-links need --pip <requirements.txt>');
            }
            r = await buildImage(ref, { imagesDir, log: (s) => ctx.err(s) });
          } else {
            const { readFileSync } = await import('node:fs');
            const { dirname, resolve } = await import('node:path');
            const { parseBuildSpec, mergeBuildSpec } = await import('../images/buildspec.js');
            const { ImageError } = await import('../images/errors.js');
            let specText: string | undefined;
            let specDir = process.cwd();
            if (o.spec !== undefined) {
              try {
                specText = readFileSync(o.spec, 'utf8');
              } catch (err) {
                throw new ImageError('image.spec_invalid', `cannot read ${o.spec}: ${(err as Error).message}`);
              }
              specDir = dirname(resolve(o.spec));
            }
            const fromSpec = parseBuildSpec(specText ?? '');
            // Paths in the spec are relative to the spec file, paths on the command line to the working directory.
            const specPip = fromSpec.pip && {
              ...fromSpec.pip,
              requirements: resolve(specDir, fromSpec.pip.requirements),
              findLinks: fromSpec.pip.findLinks === null ? null : resolve(specDir, fromSpec.pip.findLinks),
            };
            const spec = mergeBuildSpec(
              { ...fromSpec, pip: specPip, npm: fromSpec.npm === null ? null : resolve(specDir, fromSpec.npm) },
              {
                ...(o.from !== undefined ? { from: parseImageRef(o.from) } : {}),
                apt: o.apt,
                ...(o.pip !== undefined ? { pip: resolve(o.pip) } : {}),
                ...(o.indexUrl !== undefined ? { indexUrl: o.indexUrl } : {}),
                ...(o.findLinks !== undefined ? { findLinks: resolve(o.findLinks) } : {}),
                ...(o.npm !== undefined ? { npm: resolve(o.npm) } : {}),
              },
            );
            r = await buildDerivedImage(ref, {
              imagesDir,
              log: (s) => ctx.err(s),
              spec,
              ...(spec.pip ? { pipFiles: { requirements: spec.pip.requirements, findLinks: spec.pip.findLinks } } : {}),
              ...(specText !== undefined ? { specText } : {}),
              ...(spec.npm !== null ? { npmLock: spec.npm } : {}),
            });
          }
          ctx.err(
            `built ${r.ref} ${r.digest} (${r.files} entries, ${formatBytes(r.bytes)}) in ${r.seconds.toFixed(1)} s${r.created ? '' : ' (identical image already stored)'}\n`,
          );
          if (o.json)
            json(ctx, { ok: true, ref: r.ref, digest: r.digest, files: r.files, bytes: r.bytes, seconds: r.seconds, created: r.created });
          else ctx.out(`${r.ref}@${r.digest}\n`);
        });
      },
    );

  image
    .command('import')
    .description('Import an OCI image layout directory or a `docker save` tarball (untrusted input: hostile entries are refused)')
    .argument('<path>', 'OCI layout directory, or .tar from `docker save` / an OCI layout tarball')
    .option('-t, --tag <name:tag>', 'tag to give the image (default: the name recorded in the archive)')
    .option('--max-size <bytes>', 'refuse images whose files add up to more than this many bytes (default 16 GiB)')
    .option('--max-entries <n>', 'refuse images with more tar entries than this (default 1000000)')
    .option('--json', 'print the result as JSON')
    .action(async (path: string, o: { tag?: string; json?: boolean; maxSize?: string; maxEntries?: string }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseImageRef } = await import('../images/ref.js');
        const { importImage } = await import('../images/import.js');
        const tag = o.tag ? parseImageRef(o.tag) : null;
        const { ImageError } = await import('../images/errors.js');
        const num = (v: string | undefined, what: string): number | undefined => {
          if (v === undefined) return undefined;
          if (!/^[1-9][0-9]{0,15}$/.test(v)) throw new ImageError('image.bad_ref', `${what} must be a positive integer`);
          return Number(v);
        };
        const limits = { maxBytes: num(o.maxSize, '--max-size'), maxEntries: num(o.maxEntries, '--max-entries') };
        const r = await importImage(path, {
          imagesDir: ctx.config().imagesDir,
          tag,
          log: (s) => ctx.err(s),
          ...(limits.maxBytes !== undefined ? { maxBytes: limits.maxBytes } : {}),
          ...(limits.maxEntries !== undefined ? { maxEntries: limits.maxEntries } : {}),
        });
        if (r.skipped.length) ctx.err(`skipped ${r.skipped.length} device/FIFO/socket entries (the runtime provides /dev)\n`);
        if (o.json) json(ctx, { ok: true, ...r });
        else ctx.out(`${r.tags.length ? `${r.tags.join(', ')}@` : ''}${r.digest}\n`);
      });
    });

  image
    .command('ls')
    .description('List images')
    .option('--json', 'print as JSON')
    .action(async (o: { json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { listImages } = await import('../images/store.js');
        const dir = ctx.config().imagesDir;
        const list = listImages(dir);
        if (o.json) {
          json(ctx, {
            imagesDir: dir,
            images: list.map((i) => ({
              digest: i.digest,
              tags: i.tags,
              created: i.record?.created ?? null,
              files: i.record?.files ?? null,
              bytes: i.record?.bytes ?? null,
              source: i.record?.source ?? null,
              problem: i.problem ?? null,
            })),
          });
          return;
        }
        const rows = [['TAG', 'DIGEST', 'SIZE', 'CREATED']];
        for (const i of list) {
          for (const t of i.tags.length ? i.tags : ['<none>']) {
            rows.push([
              t,
              i.digest.slice(0, 19),
              i.record ? formatBytes(i.record.bytes) : '?',
              i.problem ? `(${i.problem})` : (i.record?.created ?? ''),
            ]);
          }
        }
        const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
        for (const r of rows)
          ctx.out(
            r
              .map((x, c) => x.padEnd(w[c]!))
              .join('  ')
              .trimEnd() + '\n',
          );
      });
    });

  image
    .command('verify')
    .description('Re-hash every file of an image and compare with its digest; with --key, also check its signature (exit 1 on any failure)')
    .argument('<ref>', 'name:tag, name:tag@sha256:..., or sha256:...')
    .option('--stat', 'compare type, mode, owner, size and link targets only (fast, no content hashing)')
    .option(
      '--key <pub>',
      'Ed25519 public key (PEM) that must have signed the image (repeatable: any one of them)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--json', 'print as JSON')
    .action(async (refText: string, o: { stat?: boolean; key: string[]; json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseRefOrDigest } = await import('../images/ref.js');
        const { checkImage, readSignatures } = await import('../images/store.js');
        const imagesDir = ctx.config().imagesDir;
        // The keys are read first: a key that cannot be used is an error, never "no signature".
        const trusted = o.key.length > 0 ? await (await import('../images/signing.js')).readPublicKeys(o.key) : [];
        const t0 = Date.now();
        const r = await checkImage(imagesDir, parseRefOrDigest(refText), o.stat ? 'stat' : 'full');
        const ms = Date.now() - t0;
        const intact = r.differences.length === 0;
        let signature: { ok: true; keyId: string; name: string } | { ok: false; reason: string } | undefined;
        if (o.key.length > 0) {
          const { checkSignatures } = await import('../images/signature.js');
          signature = checkSignatures(r.digest, readSignatures(imagesDir, r.digest), trusted);
        }
        const ok = intact && (signature === undefined || signature.ok);
        if (o.json)
          json(ctx, {
            ok,
            ref: r.ref,
            digest: r.digest,
            mode: r.mode,
            ms,
            differences: r.differences,
            ...(signature ? { signature } : {}),
          });
        else {
          for (const d of r.differences) ctx.out(`${d.kind}\t${d.path}${d.fields ? `\t${d.fields.join(',')}` : ''}\n`);
          ctx.err(
            intact
              ? `ok: ${r.ref} matches ${r.digest} (${r.mode}, ${ms} ms)\n`
              : `MISMATCH: ${r.ref} differs from ${r.digest} in ${r.differences.length} entries\n`,
          );
          if (signature?.ok === true) ctx.err(`signed: ${r.digest} by ${signature.keyId} (as ${signature.name})\n`);
          else if (signature !== undefined) {
            const why: Record<string, string> = {
              no_signature: 'the image has no signature',
              no_trusted_key: 'no signature by any of the keys given',
              bad_signature: 'a signature by a key given does not verify (the signature or the image was altered)',
              wrong_digest: "a key given signed another image's digest",
            };
            ctx.err(`NOT SIGNED: ${r.ref} (${r.digest}): ${why[signature.reason] ?? signature.reason}\n`);
          }
        }
        if (!ok) ctx.exitCode = EXIT.failure;
      });
    });

  image
    .command('pull')
    .description('Fetch an image from an OCI registry into the store (every blob checked against its digest; its signatures too)')
    .argument('<remote>', 'host[:port]/repository:tag or host[:port]/repository@sha256:...')
    .option('--tag <name:tag>', 'local name (default: repository:tag)')
    .option('--ca-file <pem>', 'extra CA for the registry (default AEGIS_REGISTRY_CA_FILE)')
    .option('--json', 'print the result as JSON')
    .action(async (remote: string, o: { tag?: string; caFile?: string; json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseRemoteRef } = await import('../images/registry/reference.js');
        const { pullImage } = await import('../images/registry/pull.js');
        const { parseImageRef } = await import('../images/ref.js');
        const config = ctx.config();
        const ref = parseRemoteRef(remote);
        const { ca, credentials } = await registryAccess(config, ref.registry, o.caFile);
        const r = await pullImage({
          imagesDir: config.imagesDir,
          ref,
          ...(o.tag !== undefined ? { tag: parseImageRef(o.tag) } : {}),
          ...(ca !== undefined ? { ca } : {}),
          ...(credentials !== undefined ? { credentials } : {}),
          log: (l) => ctx.err(l),
        });
        if (o.json) json(ctx, { ok: true, ...r });
        else ctx.out(`${r.tags[0] ?? r.digest}@${r.digest} (manifest ${r.manifestDigest}, ${r.signatures} signature(s))\n`);
      });
    });

  image
    .command('push')
    .description('Publish an image of the store to an OCI registry (one gzip layer; its signatures as cosign-style artifacts)')
    .argument('<ref>', 'name:tag, name:tag@sha256:..., or sha256:...')
    .argument('<remote>', 'host[:port]/repository:tag')
    .option('--ca-file <pem>', 'extra CA for the registry (default AEGIS_REGISTRY_CA_FILE)')
    .option('--json', 'print the result as JSON')
    .action(async (refText: string, remote: string, o: { caFile?: string; json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseRemoteRef } = await import('../images/registry/reference.js');
        const { pushImage } = await import('../images/registry/push.js');
        const { parseRefOrDigest } = await import('../images/ref.js');
        const config = ctx.config();
        const ref = parseRemoteRef(remote);
        const { ca, credentials } = await registryAccess(config, ref.registry, o.caFile);
        const r = await pushImage({
          imagesDir: config.imagesDir,
          image: parseRefOrDigest(refText),
          ref,
          ...(ca !== undefined ? { ca } : {}),
          ...(credentials !== undefined ? { credentials } : {}),
          log: (l) => ctx.err(l),
        });
        if (o.json) json(ctx, { ok: true, ...r });
        else ctx.out(`${remote}@${r.manifestDigest} (image ${r.digest}, ${r.signatures} signature(s))\n`);
      });
    });

  image
    .command('sign')
    .description("Sign an image's digest with an Ed25519 key (the signature is kept in the store beside the image)")
    .argument('<ref>', 'name:tag, name:tag@sha256:..., or sha256:...')
    .option('--key <file>', 'Ed25519 PKCS#8 PEM private key (mode 0600); default $AEGIS_HOME/image-signing.key, made on first use')
    .option('--json', 'print as JSON')
    .action(async (refText: string, o: { key?: string; json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseRefOrDigest } = await import('../images/ref.js');
        const { checkImage, writeSignature } = await import('../images/store.js');
        const { loadSigningKey } = await import('../images/signing.js');
        const { signImageDigest } = await import('../images/signature.js');
        const config = ctx.config();
        const what = parseRefOrDigest(refText);
        const key = await loadSigningKey(o.key, config.home);
        // Only an intact image is signed: a signature vouches for the content, so check it all first.
        const r = await checkImage(config.imagesDir, what, 'full');
        if (r.differences.length > 0) {
          const { ImageError } = await import('../images/errors.js');
          throw new ImageError('image.digest_mismatch', `${r.ref} differs from ${r.digest} in ${r.differences.length} entries: not signed`);
        }
        const name = what.kind === 'ref' ? what.ref.name : r.digest;
        const stored = await writeSignature(
          config.imagesDir,
          { kind: 'digest', digest: r.digest },
          signImageDigest(name, r.digest, key.key),
        );
        if (o.json)
          json(ctx, {
            ok: true,
            ref: r.ref,
            digest: r.digest,
            keyId: key.keyId,
            signature: stored.path,
            ...(key.publicPath ? { publicKey: key.publicPath } : {}),
          });
        else {
          if (key.created) ctx.err(`made a new signing key ${key.path}\n`);
          ctx.out(`signed ${r.ref}@${r.digest} with ${key.keyId}\n`);
          if (key.publicPath) ctx.err(`public key (give it to verifiers, or list it in AEGIS_IMAGE_TRUSTED_KEYS): ${key.publicPath}\n`);
        }
      });
    });

  image
    .command('tag')
    .description('Give an image in the store another tag (moves the tag if it exists)')
    .argument('<ref>', 'name:tag, name:tag@sha256:..., or sha256:...')
    .argument('<newref>', 'name:tag')
    .option('--json', 'print as JSON')
    .action(async (refText: string, newText: string, o: { json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseRefOrDigest, parseImageRef } = await import('../images/ref.js');
        const { tagImage } = await import('../images/store.js');
        const r = await tagImage(ctx.config().imagesDir, parseRefOrDigest(refText), parseImageRef(newText));
        if (o.json) json(ctx, { ok: true, ...r });
        else ctx.out(`${r.tag}@${r.digest}\n`);
      });
    });

  image
    .command('sbom')
    .description('Print a software bill of materials of an image (dpkg, Python dist-info, npm lockfiles) on stdout')
    .argument('<ref>', 'name:tag, name:tag@sha256:..., or sha256:...')
    .requiredOption('--format <format>', 'spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.5 JSON)')
    .action(async (refText: string, o: { format: string }) => {
      await guarded(ctx, false, async () => {
        const { ImageError } = await import('../images/errors.js');
        if (o.format !== 'spdx' && o.format !== 'cyclonedx') throw new ImageError('image.bad_ref', '--format must be spdx or cyclonedx');
        const { parseRefOrDigest } = await import('../images/ref.js');
        const { openImageChecked } = await import('../images/store.js');
        const { collectSbom, toSpdx, toCycloneDx } = await import('../images/sbom.js');
        const img = await openImageChecked(ctx.config().imagesDir, parseRefOrDigest(refText));
        const sbom = collectSbom(img.rootfs, img.ref, img.digest);
        json(ctx, o.format === 'spdx' ? toSpdx(sbom, new Date()) : toCycloneDx(sbom, new Date()));
      });
    });

  image
    .command('scan')
    .description("Match an image's packages against an offline folder of OSV advisories; exit 1 when a finding is at or above --fail-on")
    .argument('<ref>', 'name:tag, name:tag@sha256:..., or sha256:...')
    .requiredOption('--db <dir>', 'folder of OSV-format advisory files (*.json, searched recursively)')
    .option('--fail-on <level>', 'low, medium, high or critical', 'high')
    .option('--json', 'print the findings as JSON')
    .action(async (refText: string, o: { db: string; failOn: string; json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { ImageError } = await import('../images/errors.js');
        const { LEVELS, failsAt, loadAdvisoryDb, matchAdvisories } = await import('../images/scan.js');
        const failOn = LEVELS.find((l) => l === o.failOn);
        if (!failOn) throw new ImageError('image.bad_ref', `--fail-on must be one of ${LEVELS.join(', ')}`);
        const { parseRefOrDigest } = await import('../images/ref.js');
        const { openImageChecked } = await import('../images/store.js');
        const { collectSbom } = await import('../images/sbom.js');
        const what = parseRefOrDigest(refText);
        const advisories = loadAdvisoryDb(o.db);
        const img = await openImageChecked(ctx.config().imagesDir, what);
        const sbom = collectSbom(img.rootfs, img.ref, img.digest);
        const findings = matchAdvisories(sbom, advisories);
        const failed = failsAt(findings, failOn);
        if (o.json)
          json(ctx, {
            ok: !failed,
            ref: img.ref,
            digest: img.digest,
            failOn,
            packages: sbom.packages.length,
            advisories: advisories.length,
            findings,
          });
        else
          for (const f of findings)
            ctx.out(
              `${f.level.toUpperCase()}\t${f.id}\t${f.package} ${f.version}\t${f.fixed ? `fixed in ${f.fixed}` : 'no fix listed'}${f.uncertain ? ' (versions not comparable: reported as affected)' : ''}\t${f.summary}\n`,
            );
        const count = (l: string) => findings.filter((f) => f.level === l).length;
        ctx.err(
          `${img.ref}: ${sbom.packages.length} packages, ${advisories.length} advisories, ${findings.length} findings (${LEVELS.map((l) => `${count(l)} ${l}`).join(', ')}); fail-on ${failOn}: ${failed ? 'FAIL' : 'pass'}\n`,
        );
        if (failed) ctx.exitCode = EXIT.failure;
      });
    });

  image
    .command('rm')
    .description('Remove a tag (and its image when no other tag points at it), or an image by digest')
    .argument('<ref>', 'name:tag or sha256:...')
    .option('-f, --force', 'remove an image by digest even though tags point at it (removes those tags)')
    .option('--json', 'print as JSON')
    .action(async (refText: string, o: { force?: boolean; json?: boolean }) => {
      await guarded(ctx, !!o.json, async () => {
        const { parseRefOrDigest } = await import('../images/ref.js');
        const { removeImage } = await import('../images/store.js');
        const r = await removeImage(ctx.config().imagesDir, parseRefOrDigest(refText), { force: !!o.force });
        if (o.json) json(ctx, { ok: true, ...r });
        else {
          for (const t of r.untagged) ctx.out(`untagged ${t}\n`);
          for (const d of r.removed) ctx.out(`removed ${d}\n`);
        }
      });
    });
}

/**
 * Software bills of materials for images in the store: `aegis image sbom <ref> --format
 * spdx|cyclonedx`. Three sources inside the rootfs (all untrusted bytes, parsed defensively):
 *
 * - Debian packages from `var/lib/dpkg/status` (only stanzas whose Status is `install ok
 *   installed`), with their source package (`Source: name (version)`, for advisory matching);
 * - Python distributions from `*.dist-info/METADATA` and `*.egg-info` (PKG-INFO) in the
 *   dist-packages / site-packages directories under /usr and /opt;
 * - npm packages from `package-lock.json` / `node_modules/.package-lock.json` (lockfile v2/v3
 *   `packages` map) in /node_modules and anywhere under /usr, /opt, /srv, /app, /home, /root, /agent.
 *
 * The parsers and the two document writers are pure (the rootfs reader is the only I/O; the
 * creation time is passed in). LIMITATION: only what these databases record is listed:
 * files copied in by hand, static binaries, vendored code and npm trees without a lockfile
 * are not seen.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export type Ecosystem = 'deb' | 'pypi' | 'npm';

export interface SbomPackage {
  readonly ecosystem: Ecosystem;
  readonly name: string;
  readonly version: string;
  /** Package URL (https://github.com/package-url/purl-spec). */
  readonly purl: string;
  /** Debian: the source package and its version (advisories name source packages). */
  readonly source?: { readonly name: string; readonly version: string };
  readonly arch?: string;
  /** Where it was found in the image (dpkg status, a dist-info directory, a lockfile). */
  readonly location: string;
}

export interface ImageSbom {
  readonly ref: string;
  readonly digest: string;
  /** `debian-12` from etc/os-release, or null. */
  readonly distro: string | null;
  readonly packages: readonly SbomPackage[];
}

const MAX_FILE = 64 * 1024 * 1024;

/** Percent-encodes a purl component (purl spec: everything but unreserved characters). */
function pct(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** PEP 503 normalized name (also the purl spec's rule for pypi). */
export function normalizePypiName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

export function debPurl(name: string, version: string, arch: string | undefined, distro: string | null): string {
  const q = [arch ? `arch=${pct(arch)}` : null, distro ? `distro=${pct(distro)}` : null].filter((x) => x !== null);
  return `pkg:deb/debian/${pct(name)}@${pct(version)}${q.length ? `?${q.join('&')}` : ''}`;
}

export function pypiPurl(name: string, version: string): string {
  return `pkg:pypi/${pct(normalizePypiName(name))}@${pct(version)}`;
}

export function npmPurl(name: string, version: string): string {
  const at = name.startsWith('@') ? name.indexOf('/') : -1;
  const ns = at > 0 ? `${pct(name.slice(0, at))}/` : '';
  return `pkg:npm/${ns}${pct(at > 0 ? name.slice(at + 1) : name)}@${pct(version)}`;
}

/** Debian package names and versions as dpkg accepts them (policy 5.6.1, 5.6.12). */
const DEB_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const DEB_VERSION = /^([0-9]+:)?[0-9][A-Za-z0-9.+~:-]*$/;

/** Parses dpkg's status file (deb822 stanzas); installed packages only; malformed stanzas are skipped. */
export function parseDpkgStatus(text: string, distro: string | null): SbomPackage[] {
  const out: SbomPackage[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const f = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      if (!line || line.startsWith(' ') || line.startsWith('\t')) continue;
      const c = line.indexOf(':');
      if (c > 0) f.set(line.slice(0, c).toLowerCase(), line.slice(c + 1).trim());
    }
    const name = f.get('package') ?? '';
    const version = f.get('version') ?? '';
    const status = (f.get('status') ?? '').split(/\s+/);
    if (status[2] !== 'installed' || !DEB_NAME.test(name) || !DEB_VERSION.test(version)) continue;
    const arch = f.get('architecture');
    // "Source: openssl" or "Source: openssl (3.0.11-1)" when the source version differs.
    const src = /^([a-z0-9][a-z0-9+.-]+)(?:\s+\(([^)\s]+)\))?$/.exec(f.get('source') ?? '');
    const source = src ? { name: src[1]!, version: src[2] && DEB_VERSION.test(src[2]) ? src[2] : version } : { name, version };
    out.push({
      ecosystem: 'deb',
      name,
      version,
      purl: debPurl(name, version, arch, distro),
      source,
      ...(arch ? { arch } : {}),
      location: '/var/lib/dpkg/status',
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Name and Version from a core-metadata file (METADATA / PKG-INFO: RFC 822 style headers). */
export function parsePythonMetadata(text: string): { name: string; version: string } | null {
  let name = '';
  let version = '';
  for (const line of text.split('\n')) {
    if (line === '' || line === '\r') break; // the body (long description) starts after a blank line
    const m = /^(Name|Version):\s*(.*?)\s*$/i.exec(line);
    if (m?.[1]?.toLowerCase() === 'name' && !name) name = m[2] ?? '';
    if (m?.[1]?.toLowerCase() === 'version' && !version) version = m[2] ?? '';
  }
  if (!/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/.test(name) || !/^[A-Za-z0-9!+._-]{1,100}$/.test(version)) return null;
  return { name, version };
}

/** Packages of an npm lockfile (v2/v3 `packages` map; v1 `dependencies` tree). Null if it is not one. */
export function parseNpmLock(text: string): Array<{ name: string; version: string }> | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const out: Array<{ name: string; version: string }> = [];
  const ok = (n: unknown, ver: unknown): ver is string =>
    typeof n === 'string' &&
    /^(@[a-z0-9._~-]+\/)?[a-z0-9._~-]+$/i.test(n) &&
    typeof ver === 'string' &&
    /^[0-9A-Za-z.+-]{1,100}$/.test(ver);
  const pk = o['packages'];
  if (typeof pk === 'object' && pk !== null && !Array.isArray(pk)) {
    for (const [key, e] of Object.entries(pk as Record<string, unknown>)) {
      const i = key.lastIndexOf('node_modules/');
      if (i < 0 || typeof e !== 'object' || e === null) continue; // "" is the project itself
      const ent = e as Record<string, unknown>;
      if (ent['link'] === true) continue;
      const name = typeof ent['name'] === 'string' ? ent['name'] : key.slice(i + 'node_modules/'.length);
      if (ok(name, ent['version'])) out.push({ name, version: ent['version'] });
    }
    return out;
  }
  const walk = (deps: unknown, depth: number): void => {
    if (depth > 64 || typeof deps !== 'object' || deps === null) return;
    for (const [name, e] of Object.entries(deps as Record<string, unknown>)) {
      if (typeof e !== 'object' || e === null) continue;
      const ent = e as Record<string, unknown>;
      if (ok(name, ent['version'])) out.push({ name, version: ent['version'] });
      walk(ent['dependencies'], depth + 1);
    }
  };
  if (o['dependencies'] !== undefined) {
    walk(o['dependencies'], 0);
    return out;
  }
  return null;
}

/** `debian-12` from os-release text (ID and VERSION_ID), or null. */
export function distroOf(osRelease: string): string | null {
  const get = (k: string) => new RegExp(`^${k}="?([a-z0-9._-]+)"?$`, 'm').exec(osRelease)?.[1] ?? null;
  const id = get('ID');
  const ver = get('VERSION_ID');
  return id && ver ? `${id}-${ver}` : null;
}

// ---------------------------------------------------------------------------------------------
// Reading a rootfs (adapter)

function readSmall(p: string): string | null {
  try {
    const st = lstatSync(p);
    if (!st.isFile() || st.size > MAX_FILE) return null;
    return readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

function dirNames(p: string): string[] {
  try {
    if (!lstatSync(p).isDirectory()) return [];
    return readdirSync(p).sort();
  } catch {
    return [];
  }
}

/** Python package directories: {usr,usr/local,opt/*}/lib/python3*\/{dist,site}-packages and usr/lib/python3/dist-packages. */
function pythonDirs(rootfs: string): string[] {
  const out: string[] = [];
  const libs = ['usr/lib', 'usr/local/lib', ...dirNames(join(rootfs, 'opt')).map((n) => `opt/${n}/lib`)];
  for (const lib of libs)
    for (const py of dirNames(join(rootfs, lib)))
      if (/^python3(\.\d+)?$/.test(py)) for (const sub of ['dist-packages', 'site-packages']) out.push(`${lib}/${py}/${sub}`);
  return out;
}

/** Lockfiles under the usual application roots (never following symlinks; bounded depth). */
function findLockfiles(rootfs: string): string[] {
  const out: string[] = [];
  const visit = (rel: string, depth: number) => {
    if (depth > 12) return;
    for (const n of dirNames(join(rootfs, rel))) {
      const r = `${rel}/${n}`;
      let st;
      try {
        st = lstatSync(join(rootfs, r));
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        // Inside node_modules only the hidden lockfile of the tree is read, not every package.
        if (n === 'node_modules') {
          if (readSmall(join(rootfs, r, '.package-lock.json')) !== null) out.push(`${r}/.package-lock.json`);
          continue;
        }
        visit(r, depth + 1);
      } else if (st.isFile() && n === 'package-lock.json') out.push(r);
    }
  };
  // /node_modules: where `aegis image build --npm` installs (found from /agent by require and import).
  if (readSmall(join(rootfs, 'node_modules/.package-lock.json')) !== null) out.push('node_modules/.package-lock.json');
  for (const top of ['usr', 'opt', 'srv', 'app', 'home', 'root', 'agent']) visit(top, 0);
  return out;
}

/** Collects the packages of the image rooted at `rootfs`. */
export function collectSbom(rootfs: string, ref: string, digest: string): ImageSbom {
  const distro = distroOf(readSmall(join(rootfs, 'etc/os-release')) ?? readSmall(join(rootfs, 'usr/lib/os-release')) ?? '');
  const packages: SbomPackage[] = [...parseDpkgStatus(readSmall(join(rootfs, 'var/lib/dpkg/status')) ?? '', distro)];
  for (const dir of pythonDirs(rootfs)) {
    for (const n of dirNames(join(rootfs, dir))) {
      let meta: string | null = null;
      if (n.endsWith('.dist-info')) meta = readSmall(join(rootfs, dir, n, 'METADATA'));
      else if (n.endsWith('.egg-info')) meta = readSmall(join(rootfs, dir, n, 'PKG-INFO')) ?? readSmall(join(rootfs, dir, n));
      const m = meta === null ? null : parsePythonMetadata(meta);
      if (m) packages.push({ ecosystem: 'pypi', ...m, purl: pypiPurl(m.name, m.version), location: `/${dir}/${n}` });
    }
  }
  const seen = new Set<string>();
  for (const lock of findLockfiles(rootfs)) {
    for (const p of parseNpmLock(readSmall(join(rootfs, lock)) ?? '') ?? []) {
      const purl = npmPurl(p.name, p.version);
      if (seen.has(`${purl} ${lock}`)) continue;
      seen.add(`${purl} ${lock}`);
      packages.push({ ecosystem: 'npm', ...p, purl, location: `/${lock}` });
    }
  }
  return { ref, digest, distro, packages };
}

// ---------------------------------------------------------------------------------------------
// Documents (pure)

/** A UUID (version 5 layout) derived from `seed`: the same image gives the same document ids. */
function uuidFrom(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

const TOOL = 'aegis';

/**
 * SPDX 2.3 JSON (https://spdx.github.io/spdx-spec/v2.3/): the image is one package that the
 * document DESCRIBES and that CONTAINS every package found, each with its purl as a
 * PACKAGE-MANAGER external reference.
 */
export function toSpdx(sbom: ImageSbom, created: Date): Record<string, unknown> {
  const hex = sbom.digest.replace(/^sha256:/, '');
  const packages: Array<Record<string, unknown>> = [
    {
      name: sbom.ref,
      SPDXID: 'SPDXRef-Image',
      versionInfo: sbom.digest,
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      primaryPackagePurpose: 'CONTAINER',
      checksums: [{ algorithm: 'SHA256', checksumValue: hex }],
    },
  ];
  const relationships: Array<Record<string, string>> = [
    { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: 'SPDXRef-Image' },
  ];
  sbom.packages.forEach((p, i) => {
    const id = `SPDXRef-Package-${p.ecosystem}-${i + 1}`;
    packages.push({
      name: p.name,
      SPDXID: id,
      versionInfo: p.version,
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      primaryPackagePurpose: 'LIBRARY',
      ...(p.source && p.source.name !== p.name
        ? { sourceInfo: `built from the Debian source package ${p.source.name} ${p.source.version}` }
        : {}),
      comment: `found in ${p.location}`,
      externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: p.purl }],
    });
    relationships.push({ spdxElementId: 'SPDXRef-Image', relationshipType: 'CONTAINS', relatedSpdxElement: id });
  });
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `aegis-image-${sbom.ref}`,
    documentNamespace: `https://aegis.invalid/spdx/${encodeURIComponent(sbom.ref)}/${hex}-${uuidFrom(sbom.digest)}`,
    creationInfo: { created: created.toISOString().replace(/\.\d{3}Z$/, 'Z'), creators: [`Tool: ${TOOL}`] },
    packages,
    relationships,
  };
}

/** CycloneDX 1.5 JSON (https://cyclonedx.org/docs/1.5/json/): the image is metadata.component (a container). */
export function toCycloneDx(sbom: ImageSbom, created: Date): Record<string, unknown> {
  const imageRef = `image:${sbom.digest}`;
  const components = sbom.packages.map((p, i) => ({
    type: 'library',
    'bom-ref': `${p.purl}#${i + 1}`,
    name: p.name,
    version: p.version,
    purl: p.purl,
    properties: [
      { name: 'aegis:location', value: p.location },
      ...(p.source ? [{ name: 'aegis:deb:source', value: `${p.source.name} ${p.source.version}` }] : []),
    ],
  }));
  return {
    bomFormat: 'CycloneDX',
    specVersion: '1.5',
    serialNumber: `urn:uuid:${uuidFrom(sbom.digest)}`,
    version: 1,
    metadata: {
      timestamp: created.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      tools: { components: [{ type: 'application', name: TOOL }] },
      component: {
        type: 'container',
        'bom-ref': imageRef,
        name: sbom.ref,
        version: sbom.digest,
        hashes: [{ alg: 'SHA-256', content: sbom.digest.replace(/^sha256:/, '') }],
      },
    },
    components,
    dependencies: [{ ref: imageRef, dependsOn: components.map((c) => c['bom-ref']) }],
  };
}

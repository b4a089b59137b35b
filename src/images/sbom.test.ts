import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ImageSbom,
  debPurl,
  distroOf,
  npmPurl,
  parseDpkgStatus,
  parseNpmLock,
  parsePythonMetadata,
  pypiPurl,
  toCycloneDx,
  toSpdx,
} from './sbom.js';

const STATUS = `Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit
 multi-line description

Package: libpam0g
Status: install ok installed
Architecture: amd64
Source: pam (1.5.2-6+deb12u1)
Version: 1.5.2-6+deb12u1

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0-1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: epochy
Status: install ok installed
Architecture: amd64
Source: epoch-src (1:2.0-1)
Version: 1:2.0-1+b1

Package: Bad Name
Status: install ok installed
Version: 1.0
`;

describe('SBOM sources', () => {
  it('dpkg status: installed packages only, with source package and version', () => {
    const p = parseDpkgStatus(STATUS, 'debian-12');
    assert.deepEqual(
      p.map((x) => [x.name, x.version, x.source?.name, x.source?.version]),
      [
        ['epochy', '1:2.0-1+b1', 'epoch-src', '1:2.0-1'],
        ['libpam0g', '1.5.2-6+deb12u1', 'pam', '1.5.2-6+deb12u1'],
        ['libssl3', '3.0.11-1~deb12u2', 'openssl', '3.0.11-1~deb12u2'],
        ['tzdata', '2024a-0+deb12u1', 'tzdata', '2024a-0+deb12u1'],
      ],
    );
    assert.equal(p[0]!.purl, 'pkg:deb/debian/epochy@1%3A2.0-1%2Bb1?arch=amd64&distro=debian-12');
  });

  it('purls follow the purl spec per type (pypi names normalized, npm scopes as namespace)', () => {
    assert.equal(pypiPurl('Foo_Bar.baz', '1.0'), 'pkg:pypi/foo-bar-baz@1.0');
    assert.equal(npmPurl('@types/node', '20.1.0'), 'pkg:npm/%40types/node@20.1.0');
    assert.equal(npmPurl('left-pad', '1.3.0'), 'pkg:npm/left-pad@1.3.0');
    assert.equal(debPurl('bash', '5.2.15-2+b2', 'amd64', null), 'pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64');
  });

  it('Python core metadata: Name and Version from the headers, not the body', () => {
    assert.deepEqual(parsePythonMetadata('Metadata-Version: 2.1\nName: requests\nVersion: 2.28.1\n\nName: not-this\n'), {
      name: 'requests',
      version: '2.28.1',
    });
    assert.equal(parsePythonMetadata('Name: ../../etc\nVersion: 1\n'), null);
    assert.equal(parsePythonMetadata('garbage'), null);
  });

  it('npm lockfiles v3 (packages map, nested and scoped) and v1 (dependencies tree); anything else is null', () => {
    const v3 = JSON.stringify({
      lockfileVersion: 3,
      packages: {
        '': { name: 'app', version: '1.0.0' },
        'node_modules/lodash': { version: '4.17.20' },
        'node_modules/@scope/x': { version: '2.0.0' },
        'node_modules/a/node_modules/lodash': { version: '3.10.1' },
        'node_modules/linked': { link: true, resolved: '../linked' },
      },
    });
    assert.deepEqual(parseNpmLock(v3), [
      { name: 'lodash', version: '4.17.20' },
      { name: '@scope/x', version: '2.0.0' },
      { name: 'lodash', version: '3.10.1' },
    ]);
    const v1 = JSON.stringify({ lockfileVersion: 1, dependencies: { a: { version: '1.0.0', dependencies: { b: { version: '0.1.0' } } } } });
    assert.deepEqual(parseNpmLock(v1), [
      { name: 'a', version: '1.0.0' },
      { name: 'b', version: '0.1.0' },
    ]);
    assert.equal(parseNpmLock('not json'), null);
    assert.equal(parseNpmLock('[1,2]'), null);
  });

  it('os-release gives the purl distro qualifier', () => {
    assert.equal(distroOf('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'), 'debian-12');
    assert.equal(distroOf('ID=debian\n'), null);
  });
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the documents are walked as JSON
type Any = any;

const SBOM: ImageSbom = {
  ref: 'demo:1',
  digest: `sha256:${'ab'.repeat(32)}`,
  distro: 'debian-12',
  packages: [
    ...parseDpkgStatus(STATUS, 'debian-12'),
    { ecosystem: 'pypi', name: 'aegisdemo', version: '1.0', purl: pypiPurl('aegisdemo', '1.0'), location: '/usr/local/x' },
    { ecosystem: 'npm', name: '@scope/x', version: '2.0.0', purl: npmPurl('@scope/x', '2.0.0'), location: '/app/package-lock.json' },
  ],
};
const WHEN = new Date('2026-11-30T06:00:00.123Z');

describe('SPDX 2.3 JSON document', () => {
  const d = toSpdx(SBOM, WHEN) as Any;

  it('has the document fields SPDX 2.3 requires (clause 6) with their fixed values', () => {
    assert.equal(d.spdxVersion, 'SPDX-2.3');
    assert.equal(d.dataLicense, 'CC0-1.0');
    assert.equal(d.SPDXID, 'SPDXRef-DOCUMENT');
    assert.equal(typeof d.name, 'string');
    assert.match(d.documentNamespace, /^https:\/\/[^#\s]+$/);
    assert.equal(d.creationInfo.created, '2026-11-30T06:00:00Z');
    assert.match(d.creationInfo.creators[0], /^Tool: /);
  });

  it('every package has a unique SPDXID, name, downloadLocation, and its purl; the image CONTAINS each', () => {
    const ids = d.packages.map((p: Any) => p.SPDXID);
    assert.equal(new Set(ids).size, ids.length);
    for (const p of d.packages) {
      assert.match(p.SPDXID, /^SPDXRef-[A-Za-z0-9.-]+$/);
      assert.ok(p.name && p.downloadLocation && p.versionInfo);
      assert.equal(p.filesAnalyzed, false);
    }
    assert.equal(d.packages.length, SBOM.packages.length + 1);
    const purls = d.packages.slice(1).map((p: Any) => p.externalRefs[0]);
    assert.ok(purls.every((r: Any) => r.referenceCategory === 'PACKAGE-MANAGER' && r.referenceType === 'purl'));
    assert.deepEqual(
      purls.map((r: Any) => r.referenceLocator),
      SBOM.packages.map((p) => p.purl),
    );
    assert.deepEqual(d.relationships[0], {
      spdxElementId: 'SPDXRef-DOCUMENT',
      relationshipType: 'DESCRIBES',
      relatedSpdxElement: 'SPDXRef-Image',
    });
    assert.equal(d.relationships.filter((r: Any) => r.relationshipType === 'CONTAINS').length, SBOM.packages.length);
  });
});

describe('CycloneDX 1.5 JSON document', () => {
  const d = toCycloneDx(SBOM, WHEN) as Any;

  it('has bomFormat, specVersion, a urn:uuid serialNumber, version and the image as a container component', () => {
    assert.equal(d.bomFormat, 'CycloneDX');
    assert.equal(d.specVersion, '1.5');
    assert.match(d.serialNumber, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(d.version, 1);
    assert.equal(d.metadata.timestamp, '2026-11-30T06:00:00Z');
    assert.equal(d.metadata.component.type, 'container');
    assert.equal(d.metadata.component.hashes[0].alg, 'SHA-256');
  });

  it('every component is a library with name, version, purl and a unique bom-ref; the image depends on all', () => {
    const refs = d.components.map((c: Any) => c['bom-ref']);
    assert.equal(new Set(refs).size, refs.length);
    for (const c of d.components) {
      assert.equal(c.type, 'library');
      assert.ok(c.name && c.version);
      assert.match(c.purl, /^pkg:(deb|pypi|npm)\//);
    }
    assert.deepEqual(d.dependencies[0].dependsOn, refs);
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { ImageError } from './errors.js';
import { type ImageSbom, parseDpkgStatus, pypiPurl, npmPurl } from './sbom.js';
import { cvss3BaseScore, failsAt, loadAdvisoryDb, matchAdvisories, parseOsv } from './scan.js';
import { comparePep440, compareSemver } from './versions.js';

const STATUS = `Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2

Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo (1:2.0-1)
Version: 1:2.0-1+b1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
`;

const SBOM: ImageSbom = {
  ref: 'demo:1',
  digest: `sha256:${'cd'.repeat(32)}`,
  distro: 'debian-12',
  packages: [
    ...parseDpkgStatus(STATUS, 'debian-12'),
    { ecosystem: 'pypi', name: 'Aegis_Demo', version: '1.0rc1', purl: pypiPurl('Aegis_Demo', '1.0rc1'), location: '/x' },
    { ecosystem: 'npm', name: '@scope/lib', version: '2.0.0-beta.2', purl: npmPurl('@scope/lib', '2.0.0-beta.2'), location: '/y' },
  ],
};

const osv = (id: string, eco: string, name: string, events: object[], extra: object = {}) =>
  parseOsv(
    { id, summary: `${id} summary`, affected: [{ package: { ecosystem: eco, name }, ranges: [{ type: 'ECOSYSTEM', events }] }], ...extra },
    't',
  );

const ids = (adv: ReturnType<typeof osv>[]) => matchAdvisories(SBOM, adv).map((f) => `${f.id}:${f.package}`);

describe('advisory matching (OSV ranges)', () => {
  it('Debian: by source package, with tilde and epoch edges decided by the Debian order', () => {
    const advs = [
      osv('FIXED-AFTER', 'Debian:12', 'openssl', [{ introduced: '0' }, { fixed: '3.0.11-1~deb12u3' }], {
        database_specific: { severity: 'HIGH' },
      }),
      // ~deb12u1 sorts BEFORE the installed ~deb12u2: already fixed.
      osv('FIXED-BEFORE', 'Debian:12', 'openssl', [{ introduced: '0' }, { fixed: '3.0.11-1~deb12u1' }]),
      // 3.0.11-1 (no tilde) is after 3.0.11-1~deb12u2: affected.
      osv('TILDE', 'Debian:12', 'openssl', [{ introduced: '0' }, { fixed: '3.0.11-1' }]),
      // The epoch makes 1:2.0-1 newer than 2.5-1: installed foo is affected up to last_affected 1:2.0-1 inclusive.
      osv('EPOCH-LAST', 'Debian', 'foo', [{ introduced: '0' }, { last_affected: '1:2.0-1' }]),
      osv('EPOCH-FIXED', 'Debian', 'foo', [{ introduced: '0' }, { fixed: '2.5-1' }]),
      osv('OTHER-RELEASE', 'Debian:11', 'openssl', [{ introduced: '0' }]),
      osv('BINARY-NAME', 'Debian:12', 'libssl3', [{ introduced: '0' }]),
      osv('INTRODUCED-LATER', 'Debian:12', 'tzdata', [{ introduced: '2024b-0' }]),
    ];
    assert.deepEqual(ids(advs).sort(), ['EPOCH-LAST:libfoo1', 'FIXED-AFTER:libssl3', 'TILDE:libssl3']);
    const f = matchAdvisories(SBOM, advs).find((x) => x.id === 'FIXED-AFTER')!;
    assert.equal(f.fixed, '3.0.11-1~deb12u3');
    assert.equal(f.level, 'high');
  });

  it('PyPI (PEP 503 names, PEP 440 order) and npm (semver pre-releases)', () => {
    const advs = [
      osv('PY-PRE', 'PyPI', 'aegis-demo', [{ introduced: '0' }, { fixed: '1.0' }]), // 1.0rc1 < 1.0
      osv('PY-DEV', 'PyPI', 'AEGIS.demo', [{ introduced: '0' }, { fixed: '1.0rc1.dev1' }]), // dev of rc1 < rc1: fixed
      osv('NPM-PRE', 'npm', '@scope/lib', [{ introduced: '2.0.0-alpha' }, { fixed: '2.0.0-beta.10' }]), // beta.2 < beta.10 numerically
      osv('NPM-REL', 'npm', '@scope/lib', [{ introduced: '2.0.0' }]),
    ];
    assert.deepEqual(ids(advs).sort(), ['NPM-PRE:@scope/lib', 'PY-PRE:Aegis_Demo']);
  });

  it('multiple ranges in one range list, and exact versions', () => {
    const a = osv('TWO', 'Debian:12', 'tzdata', [
      { introduced: '0' },
      { fixed: '2020a-1' },
      { introduced: '2024a-0' },
      { fixed: '2024b-0' },
    ]);
    const b = parseOsv({ id: 'EXACT', affected: [{ package: { ecosystem: 'PyPI', name: 'aegis-demo' }, versions: ['1.0rc1'] }] }, 't');
    assert.deepEqual(ids([a, b]).sort(), ['EXACT:Aegis_Demo', 'TWO:tzdata']);
  });

  it('a version that cannot be ordered is reported as affected (fail secure)', () => {
    const f = matchAdvisories(SBOM, [osv('WEIRD', 'npm', '@scope/lib', [{ introduced: '0' }, { fixed: 'not-a-version' }])]);
    assert.equal(f.length, 1);
    assert.ok(f[0]!.uncertain);
  });

  it('severity: labels, CVSS 3.1 vectors (spec examples), none = critical; fail-on thresholds', () => {
    assert.equal(cvss3BaseScore('CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H'), 9.8);
    assert.equal(cvss3BaseScore('CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H'), 10);
    assert.equal(cvss3BaseScore('CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N'), 6.1);
    assert.equal(cvss3BaseScore('CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N'), 5.5);
    assert.equal(cvss3BaseScore('CVSS:2.0/AV:N'), null);
    const low = osv('L', 'Debian:12', 'openssl', [{ introduced: '0' }], { database_specific: { severity: 'LOW' } });
    const med = osv('M', 'Debian:12', 'openssl', [{ introduced: '0' }], {
      severity: [{ type: 'CVSS_V3', score: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N' }],
    });
    const none = osv('N', 'Debian:12', 'openssl', [{ introduced: '0' }]);
    assert.equal(matchAdvisories(SBOM, [med])[0]!.level, 'medium');
    assert.equal(matchAdvisories(SBOM, [none])[0]!.level, 'critical');
    const lowF = matchAdvisories(SBOM, [low]);
    assert.equal(failsAt(lowF, 'low'), true);
    assert.equal(failsAt(lowF, 'medium'), false);
    assert.equal(failsAt(matchAdvisories(SBOM, [med]), 'high'), false);
    assert.equal(failsAt([], 'low'), false);
  });

  it('PEP 440 and semver orderings', () => {
    const pep = ['1.0.dev1', '1.0a1', '1.0a2.dev1', '1.0a2', '1.0b1', '1.0rc1', '1.0', '1.0.post1.dev1', '1.0.post1', '1.1', '1!0.1'];
    for (let i = 0; i + 1 < pep.length; i++) assert.equal(comparePep440(pep[i]!, pep[i + 1]!), -1, `${pep[i]} < ${pep[i + 1]}`);
    assert.equal(comparePep440('1.0', '1.0.0'), 0);
    const sem = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0'];
    for (let i = 0; i + 1 < sem.length; i++) assert.equal(compareSemver(sem[i]!, sem[i + 1]!), -1, `${sem[i]} < ${sem[i + 1]}`);
  });
});

describe('when the advisory folder is hostile or broken', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-osv-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads every *.json recursively, one object or a list per file', () => {
    const d = join(dir, 'ok');
    mkdirSync(join(d, 'sub'), { recursive: true });
    writeFileSync(join(d, 'a.json'), JSON.stringify({ id: 'A-1', affected: [] }));
    writeFileSync(
      join(d, 'sub', 'b.json'),
      JSON.stringify([
        { id: 'B-1', affected: [] },
        { id: 'B-2', affected: [] },
      ]),
    );
    writeFileSync(join(d, 'README.md'), 'ignored');
    assert.deepEqual(
      loadAdvisoryDb(d).map((a) => a.id),
      ['A-1', 'B-1', 'B-2'],
    );
  });

  for (const [what, text] of [
    ['a file that is not JSON', '{"id": '],
    ['an advisory without an id', '{"affected": []}'],
    ['affected that is not a list', '{"id":"X","affected":{}}'],
    [
      'an event with two keys',
      '{"id":"X","affected":[{"package":{"ecosystem":"npm","name":"a"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}',
    ],
    ['a package without a name', '{"id":"X","affected":[{"package":{"ecosystem":"npm"}}]}'],
  ] as const) {
    it(`${what} is image.advisory_invalid, never a clean scan`, () => {
      const d = join(dir, what.replace(/\W+/g, '-'));
      mkdirSync(d);
      writeFileSync(join(d, 'x.json'), text);
      assert.throws(() => loadAdvisoryDb(d), hasCode(ImageError, 'image.advisory_invalid'));
    });
  }

  it('a missing folder is image.advisory_invalid', () => {
    assert.throws(() => loadAdvisoryDb(join(dir, 'nope')), hasCode(ImageError, 'image.advisory_invalid'));
  });
});

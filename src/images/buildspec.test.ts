import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../test-support/errors.js';
import { ImageError } from './errors.js';
import { checkRequirements, mergeBuildSpec, parseBuildSpec, requirementsHaveHashes } from './buildspec.js';

describe('image build specs (image.yaml)', () => {
  it('parses from, apt and pip', () => {
    const s = parseBuildSpec(
      'from: python:3.11\napt: [jq, libxml2=2.9.14+dfsg-1.3~deb12u1]\npip:\n  requirements: req.txt\n  find_links: wheels\n',
    );
    assert.equal(s.from?.ref, 'python:3.11');
    assert.deepEqual(s.apt, ['jq', 'libxml2=2.9.14+dfsg-1.3~deb12u1']);
    assert.deepEqual(s.pip, { requirements: 'req.txt', indexUrl: null, findLinks: 'wheels' });
  });

  it('an empty spec is an empty build (the command line gives the rest)', () => {
    assert.deepEqual(parseBuildSpec(''), { from: null, apt: [], pip: null, npm: null });
    assert.equal(parseBuildSpec('npm: {lockfile: app/package-lock.json}\n').npm, 'app/package-lock.json');
  });

  for (const [what, text] of [
    ['an unknown key (a typo must not build something else)', 'form: python:3.11\n'],
    ['an unknown pip key', 'pip:\n  requirements: r.txt\n  extra_index_url: http://x\n'],
    ['an apt option smuggled as a package', 'apt: ["-o=APT::Get::AllowUnauthenticated=true"]\n'],
    ['a package name with a space', 'apt: ["jq curl"]\n'],
    ['a bad base reference', 'from: "python"\n'],
    ['pip without requirements', 'pip: {find_links: w}\n'],
    ['an index URL with credentials', 'pip: {requirements: r.txt, index_url: "https://u:p@pypi.example/simple"}\n'],
    ['an index URL that is not http(s)', 'pip: {requirements: r.txt, index_url: "file:///etc"}\n'],
    ['a list instead of a mapping', '- a\n- b\n'],
    ['npm without a lockfile', 'npm: {}\n'],
    ['an unknown npm key', 'npm: {lockfile: l.json, registry: "http://evil"}\n'],
    ['YAML that does not parse', 'apt: [a\n'],
  ] as const) {
    it(`refuses ${what} (image.spec_invalid)`, () => {
      assert.throws(() => parseBuildSpec(text), hasCode(ImageError, 'image.spec_invalid'));
    });
  }

  it('the command line adds apt packages and overrides from/pip', () => {
    const base = parseBuildSpec('from: python:3.11\napt: [jq]\npip: {requirements: a.txt, index_url: "https://pypi.example/simple"}\n');
    const m = mergeBuildSpec(base, { apt: ['curl', 'jq'], pip: '/x/b.txt', findLinks: '/x/w' });
    assert.deepEqual(m.apt, ['jq', 'curl']);
    assert.deepEqual(m.pip, { requirements: '/x/b.txt', indexUrl: 'https://pypi.example/simple', findLinks: '/x/w' });
    assert.throws(() => mergeBuildSpec(parseBuildSpec(''), { findLinks: '/w' }), hasCode(ImageError, 'image.spec_invalid'));
    assert.throws(() => mergeBuildSpec(base, { apt: ['--allow-unauthenticated'] }), hasCode(ImageError, 'image.spec_invalid'));
  });

  it('detects hash-pinned requirements (then --require-hashes is enforced)', () => {
    assert.equal(requirementsHaveHashes('demo==1.0 \\\n    --hash=sha256:abcd\n'), true);
    assert.equal(requirementsHaveHashes('demo==1.0\n# --hash=sha256:abcd is only a comment\n'), false);
  });

  it('refuses requirement lines that reach outside the build (nested files, local paths, index options)', () => {
    for (const l of [
      '-r other.txt',
      '-rother.txt',
      '-e git+https://x/y',
      '--extra-index-url http://evil',
      '--trusted-host evil',
      '-fhttp://evil/wheels',
      './local-dir',
      '~/x',
      'demo @ FILE:///etc/passwd',
    ])
      assert.throws(() => checkRequirements(`ok==1\n${l}\n`), hasCode(ImageError, 'image.spec_invalid'), l);
    checkRequirements('# comment\nrequests==2.31.0 ; python_version >= "3.8"\n\n--require-hashes\n');
    checkRequirements('demo==1.0 \\\n    --hash=sha256:abcd \\\n    --hash=sha256:ef01\n--only-binary :all:\n');
  });
});

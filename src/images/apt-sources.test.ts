import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { imageSourcesList, parseDeb822, parseOneLine, pickMirror } from './apt-sources.js';

// The Debian 12 cloud image's /etc/apt/sources.list.d/debian.sources (as on the build hosts).
const DEB822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

describe('APT sources', () => {
  it('reads the deb822 sources of a Debian 12 host', () => {
    const s = parseDeb822(DEB822);
    assert.equal(s.length, 2);
    assert.deepEqual(pickMirror(s, 'bookworm'), {
      mirror: 'http://deb.debian.org/debian',
      security: 'http://deb.debian.org/debian-security',
      updates: true,
    });
    assert.equal(
      imageSourcesList(pickMirror(s, 'bookworm')!, 'bookworm'),
      'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n',
    );
  });
  it('reads one-line sources, skipping deb-src, comments, options and disabled entries', () => {
    const s = parseOneLine(
      '# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n',
    );
    assert.deepEqual(pickMirror(s, 'bookworm'), { mirror: 'http://mirror.example/debian', security: null, updates: false });
    assert.equal(pickMirror(parseDeb822('Types: deb\nURIs: http://x/debian\nSuites: bookworm\nEnabled: no\n'), 'bookworm'), null);
    assert.equal(pickMirror(s, 'trixie'), null);
  });
});

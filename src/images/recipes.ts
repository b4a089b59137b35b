/**
 * The build recipes `aegis image build <name:tag>` knows, and what to tell a user whose
 * runtime is not in the store. Pure data: no I/O.
 */

export interface Recipe {
  /** Debian suite debootstrap installs. */
  readonly suite: string;
  /** Extra packages installed with apt-get (no recommends). */
  readonly packages: readonly string[];
  /** Command run in the chroot after the build; its stdout must start with `expect`. */
  readonly smoke: { readonly argv: readonly string[]; readonly expect: string } | null;
}

const DEBIAN_TOOLS = ['ca-certificates', 'procps', 'less', 'xz-utils', 'bzip2', 'unzip', 'file', 'curl', 'iproute2'];
const DEBIAN_SMOKE = {
  argv: ['/bin/bash', '-c', 'ps --version >/dev/null && curl --version >/dev/null && xz --version >/dev/null && echo ok'],
  expect: 'ok',
};

/** Known build recipes by `name:tag`. Debian 12 (bookworm) ships Python 3.11. */
export const RECIPES: Readonly<Record<string, Recipe>> = {
  'python:3.11': {
    suite: 'bookworm',
    // The full standard library (json, ssl, urllib: what agents use) and the CA bundle for TLS.
    packages: ['python3', 'ca-certificates'],
    smoke: {
      argv: ['/usr/bin/python3', '-c', 'import json, ssl, sys, urllib.request; print("%d.%d" % sys.version_info[:2])'],
      expect: '3.11',
    },
  },
  /**
   * Real network clients from Debian, for the egress compatibility suite
   * (test/integration/gateway-compat.test.ts) and agents that want them: Python HTTP clients
   * (requests, httpx, aiohttp), psycopg2 and psql, curl, git, the OpenSSH client, and Node.js
   * (Debian 12's nodejs 18.x, for `fetch`/`https`). Kept out of python:3.11, which stays lean.
   */
  'egress-clients:bookworm': {
    suite: 'bookworm',
    packages: [
      'python3',
      'ca-certificates',
      'python3-requests',
      'python3-httpx',
      'python3-aiohttp',
      'python3-psycopg2',
      'postgresql-client',
      'curl',
      'git',
      'openssh-client',
      'nodejs',
    ],
    smoke: {
      argv: [
        '/bin/sh',
        '-c',
        'python3 -c "import requests, httpx, aiohttp, psycopg2; print(\'clients\')" && node -e "fetch; require(\'https\')" && curl --version >/dev/null && git --version >/dev/null && ssh -V 2>/dev/null && psql --version >/dev/null',
      ],
      expect: 'clients',
    },
  },
  /** Node.js as Debian 12 ships it (nodejs 18.x; npm is not in the image, see `aegis image build --from`). */
  'node:18': {
    suite: 'bookworm',
    packages: ['nodejs', 'ca-certificates'],
    smoke: { argv: ['/usr/bin/node', '-e', 'console.log(process.versions.node)'], expect: '18.' },
  },
  /** Debian 12 with a shell and the usual tools (minbase has bash, coreutils, grep, sed, tar, gzip, findutils). */
  'debian:12': { suite: 'bookworm', packages: DEBIAN_TOOLS, smoke: DEBIAN_SMOKE },
  'debian:bookworm': { suite: 'bookworm', packages: DEBIAN_TOOLS, smoke: DEBIAN_SMOKE },
};

/**
 * The command that puts `ref` (name:tag) into the store: `aegis image build <ref>` when a
 * recipe exists, else an import of an archive you bring under that tag.
 */
export function howToObtain(ref: string): string {
  return Object.hasOwn(RECIPES, ref) ? `aegis image build ${ref}` : `aegis image import <oci-layout-or-docker-save.tar> --tag ${ref}`;
}

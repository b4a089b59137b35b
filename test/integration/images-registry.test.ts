/**
 * `aegis image push` / `aegis image pull` (issue 14) against a real registry: Debian's
 * docker-registry (the OCI distribution registry 2.8) on 127.0.0.1 with TLS (a throw-away CA)
 * and htpasswd (bcrypt) authentication, started by the test in a temp folder.
 *
 * Round trip with the same AEGIS digest and the signature travelling with the image (cosign-style
 * artifact); credentials and TLS refusals; a registry whose stored blob no longer matches its
 * digest (refused, nothing stored); an interrupted download resumed from its partial file; a
 * multi-architecture index (linux/amd64 picked); a zstd-compressed layer.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RegistrySession } from '../../src/images/registry/http.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { makeServerPki } from '../../src/test-support/tls.js';
import { removeTempDirs, tarOf, tempDir, writeOciLayout } from './images-support.js';

const REGISTRY = '/usr/bin/docker-registry';
const HTPASSWD = '/usr/bin/htpasswd';

interface Res {
  code: number | null;
  out: string;
  err: string;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function waitForPort(port: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`the registry did not listen on ${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('aegis image push / pull against a real registry (TLS, htpasswd)', { timeout: 300_000 }, () => {
  let work = '';
  let registry: ChildProcess | null = null;
  let host = '';
  let storage = '';
  let caFile = '';
  let auth = '';
  let srcStore = '';
  let home = '';
  let pub = '';
  let imageDigest = '';
  const missing = [REGISTRY, HTPASSWD, '/usr/bin/openssl', '/usr/bin/zstd'].filter((p) => !existsSync(p));

  const cli = (args: string[], env: Record<string, string> = {}): Res => {
    const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, AEGIS_HOME: home, AEGIS_REGISTRY_AUTH_FILE: auth, AEGIS_REGISTRY_CA_FILE: caFile, ...env },
      timeout: 120_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const code = (r: Res): string => (JSON.parse(r.out) as { code: string }).code;

  before(async () => {
    // CI installs these (scripts/setup.sh); a machine without them fails here rather than skipping.
    assert.deepEqual(missing, [], `install docker-registry apache2-utils zstd (scripts/setup.sh)`);
    work = tempDir('registry');
    home = join(work, 'home');
    mkdirSync(home);
    const pki = makeServerPki(work, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    caFile = pki.caFile;
    const htpasswd = execFileSync(HTPASSWD, ['-Bbn', 'aegis', 'correct horse'], { encoding: 'utf8' });
    writeFileSync(join(work, 'htpasswd'), htpasswd);
    storage = join(work, 'storage');
    mkdirSync(storage);
    // A free port: bind 0, read it, release it (the registry takes it right after).
    const port = await new Promise<number>((resolve) => {
      const srv = createServer();
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    host = `localhost:${port}`;
    writeFileSync(
      join(work, 'config.yml'),
      [
        'version: 0.1',
        'log: { level: warn }',
        `storage: { filesystem: { rootdirectory: ${storage} }, delete: { enabled: true } }`,
        `http: { addr: "127.0.0.1:${port}", tls: { certificate: ${pki.certFile}, key: ${pki.keyFile} } }`,
        `auth: { htpasswd: { realm: aegis-test, path: ${join(work, 'htpasswd')} } }`,
        '',
      ].join('\n'),
    );
    registry = spawn(REGISTRY, ['serve', join(work, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    registry.stderr?.resume();
    await waitForPort(port, 15_000);
    auth = join(work, 'auth.json');
    writeFileSync(auth, JSON.stringify({ auths: { [host]: { auth: Buffer.from('aegis:correct horse').toString('base64') } } }), {
      mode: 0o600,
    });

    // The image to publish: nested folders, a symlink, an owner other than root, setuid, and a key to sign it.
    srcStore = join(work, 'src-store');
    const layout = join(work, 'layout');
    writeOciLayout(layout, [
      await tarOf([
        { name: 'app/', type: 'directory', uid: 1000, gid: 1000, mode: 0o750 },
        { name: 'app/run.sh', content: '#!/bin/sh\necho hi\n', mode: 0o755, uid: 1000, gid: 1000 },
        { name: 'bin/', type: 'directory' },
        { name: 'bin/tool', content: Buffer.alloc(200_000, 7), mode: 0o4755 },
        { name: 'bin/link', type: 'symlink', linkname: 'tool' },
        { name: 'etc/', type: 'directory' },
        { name: 'etc/empty', content: '' },
      ]),
    ]);
    const imp = cli(['image', 'import', layout, '--tag', 'demo:1', '--json'], { AEGIS_IMAGES: srcStore });
    assert.equal(imp.code, 0, imp.err);
    imageDigest = (JSON.parse(imp.out) as { digest: string }).digest;
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(work, 'sign.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    pub = join(work, 'sign.pub');
    writeFileSync(pub, publicKey.export({ format: 'pem', type: 'spki' }));
    const s = cli(['image', 'sign', 'demo:1', '--key', join(work, 'sign.key')], { AEGIS_IMAGES: srcStore });
    assert.equal(s.code, 0, s.err);
  });
  after(() => {
    registry?.kill('SIGKILL');
    removeTempDirs();
  });

  it('push then pull into another store: the same image digest, and its signature verifies there', () => {
    const push = cli(['image', 'push', 'demo:1', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: srcStore });
    assert.equal(push.code, 0, push.err);
    const pr = JSON.parse(push.out) as { digest: string; manifestDigest: string; signatures: number; layer: { uploaded: boolean } };
    assert.equal(pr.digest, imageDigest);
    assert.equal(pr.signatures, 1);
    assert.equal(pr.layer.uploaded, true);
    // Pushing again uploads nothing new (the registry has the blob).
    const again = JSON.parse(cli(['image', 'push', 'demo:1', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: srcStore }).out) as {
      layer: { uploaded: boolean };
      manifestDigest: string;
    };
    assert.equal(again.layer.uploaded, false);
    assert.equal(again.manifestDigest, pr.manifestDigest, 'the layer and manifest are deterministic');

    const dst = join(work, 'dst-store');
    const pull = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst });
    assert.equal(pull.code, 0, pull.err);
    const pl = JSON.parse(pull.out) as { digest: string; manifestDigest: string; signatures: number; tags: string[] };
    assert.equal(pl.digest, imageDigest, 'the pulled image has the digest it was pushed with');
    assert.equal(pl.manifestDigest, pr.manifestDigest);
    assert.deepEqual(pl.tags, ['team/demo:1']);
    assert.equal(pl.signatures, 1);
    const v = cli(['image', 'verify', 'team/demo:1', '--key', pub, '--json'], { AEGIS_IMAGES: dst });
    assert.equal(v.code, 0, v.err);
    assert.equal((JSON.parse(v.out) as { signature: { ok: boolean } }).signature.ok, true);
    // By digest, under a local name of one's choosing.
    const byDigest = cli(['image', 'pull', `${host}/team/demo@${pr.manifestDigest}`, '--tag', 'pinned:1', '--json'], {
      AEGIS_IMAGES: join(work, 'dst2'),
    });
    assert.equal(byDigest.code, 0, byDigest.err);
    assert.equal((JSON.parse(byDigest.out) as { digest: string }).digest, imageDigest);
    // A pin the registry's content does not match.
    const wrongPin = cli(['image', 'pull', `${host}/team/demo@sha256:${'0'.repeat(64)}`, '--json'], { AEGIS_IMAGES: join(work, 'dst3') });
    assert.equal(wrongPin.code, 1);
    assert.match(code(wrongPin), /^image\.(registry_error|not_found)$/);
  });

  it('refuses: no credentials, wrong credentials, an auth file others can read, an untrusted certificate', () => {
    const dst = join(work, 'refused-store');
    const none = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], {
      AEGIS_IMAGES: dst,
      AEGIS_REGISTRY_AUTH_FILE: join(work, 'nope.json'),
    });
    assert.equal(none.code, 1);
    assert.equal(code(none), 'image.registry_auth');
    const wrongFile = join(work, 'wrong.json');
    writeFileSync(wrongFile, JSON.stringify({ auths: { [host]: { username: 'aegis', password: 'battery staple' } } }), { mode: 0o600 });
    const wrong = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst, AEGIS_REGISTRY_AUTH_FILE: wrongFile });
    assert.equal(code(wrong), 'image.registry_auth');
    const openFile = join(work, 'open.json');
    writeFileSync(openFile, readFileSync(auth), { mode: 0o644 });
    const open = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst, AEGIS_REGISTRY_AUTH_FILE: openFile });
    assert.equal(code(open), 'image.registry_auth');
    const untrusted = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst, AEGIS_REGISTRY_CA_FILE: '' });
    assert.equal(code(untrusted), 'image.registry_unreachable');
    assert.match(untrusted.err, /certificate/i);
    assert.equal(existsSync(join(dst, 'sha256')) && readdirSync(join(dst, 'sha256')).length > 0, false, 'nothing was stored');
  });

  it('an interrupted download resumes from its partial file; a blob whose content changed in the registry is refused', async () => {
    const push = JSON.parse(cli(['image', 'push', 'demo:1', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: srcStore }).out) as {
      layer: { digest: string };
    };
    const hex = push.layer.digest.slice(7);
    const blob = join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    const bytes = readFileSync(blob);
    // Resume: the first half is already in the cache as a partial download.
    const dst = join(work, 'resume-store');
    const cache = join(dst, 'cache/blobs/sha256');
    mkdirSync(cache, { recursive: true });
    writeFileSync(join(cache, `${hex}.partial`), bytes.subarray(0, Math.floor(bytes.length / 2)));
    const resumed = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst });
    assert.equal(resumed.code, 0, resumed.err);
    assert.match(resumed.err, /resuming/);
    assert.equal((JSON.parse(resumed.out) as { digest: string }).digest, imageDigest);
    // A partial file with wrong bytes in it: the whole file is hashed, refused and removed, never used.
    const dst2 = join(work, 'bad-partial-store');
    mkdirSync(join(dst2, 'cache/blobs/sha256'), { recursive: true });
    writeFileSync(join(dst2, 'cache/blobs/sha256', `${hex}.partial`), Buffer.alloc(100, 1));
    const badPartial = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst2 });
    assert.equal(badPartial.code, 1);
    assert.equal(code(badPartial), 'image.registry_error');
    assert.equal(existsSync(join(dst2, 'cache/blobs/sha256', `${hex}.partial`)), false, 'the bad partial file was removed');
    assert.equal(cli(['image', 'pull', `${host}/team/demo:1`], { AEGIS_IMAGES: dst2 }).code, 0, 'the next pull starts over and works');

    // The registry's stored blob altered on its disk: it serves bytes that do not hash to the digest.
    const altered = Buffer.from(bytes);
    altered[altered.length - 10] = altered[altered.length - 10]! ^ 0xff;
    writeFileSync(blob, altered);
    try {
      const dst3 = join(work, 'tampered-store');
      const bad = cli(['image', 'pull', `${host}/team/demo:1`, '--json'], { AEGIS_IMAGES: dst3 });
      assert.equal(bad.code, 1);
      assert.equal(code(bad), 'image.registry_error');
      assert.match(bad.err, /hashes to/);
      assert.equal(existsSync(join(dst3, 'sha256')) && readdirSync(join(dst3, 'sha256')).length > 0, false, 'no image stored');
      const left = existsSync(join(dst3, 'cache/blobs/sha256')) ? readdirSync(join(dst3, 'cache/blobs/sha256')) : [];
      assert.deepEqual(left, [], 'no blob or partial file kept');
    } finally {
      writeFileSync(blob, bytes);
    }
    assert.ok(statSync(blob).size === bytes.length);
  });

  it('a multi-architecture index: linux/amd64 is picked; a zstd layer is imported', async () => {
    // A zstd-compressed single-layer image and an index whose first entry is another architecture.
    const tar = await tarOf([
      { name: 'z/', type: 'directory' },
      { name: 'z/hello', content: 'zstd layer\n' },
    ]);
    const zst = execFileSync('/usr/bin/zstd', ['-q', '-c'], { input: tar });
    const config = Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } }),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: sha256(zst), size: zst.length }],
      }),
    );
    const s = new RegistrySession({
      registry: host,
      repository: 'team/multi',
      actions: 'pull,push',
      ca: readFileSync(caFile, 'utf8'),
      credentials: { username: 'aegis', password: 'correct horse' },
    });
    await s.login();
    for (const b of [zst, config]) {
      const start = await s.request('POST', 'blobs/uploads/', { 'content-length': '0' }, Buffer.alloc(0));
      start.body.resume();
      const u = new URL(String(start.headers.location), `https://${host}`);
      u.searchParams.set('digest', sha256(b));
      const put = await s.request('PUT', `${u.pathname}${u.search}`, { 'content-type': 'application/octet-stream' }, b);
      put.body.resume();
      assert.equal(put.status, 201);
    }
    const putManifest = async (ref: string, bytes: Buffer, type: string): Promise<void> => {
      const r = await s.request('PUT', `manifests/${ref}`, { 'content-type': type }, bytes);
      r.body.resume();
      assert.equal(r.status, 201, `PUT ${ref}`);
    };
    await putManifest('amd64', manifest, 'application/vnd.oci.image.manifest.v1+json');
    // The arm64 entry names a manifest that exists but is not an image for this host (an empty config).
    const otherConfig = Buffer.from('{}');
    const start = await s.request('POST', 'blobs/uploads/', { 'content-length': '0' }, Buffer.alloc(0));
    start.body.resume();
    const u = new URL(String(start.headers.location), `https://${host}`);
    u.searchParams.set('digest', sha256(otherConfig));
    (await s.request('PUT', `${u.pathname}${u.search}`, {}, otherConfig)).body.resume();
    const other = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(otherConfig), size: otherConfig.length },
        layers: [],
      }),
    );
    await putManifest('arm64', other, 'application/vnd.oci.image.manifest.v1+json');
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: sha256(other),
            size: other.length,
            platform: { os: 'linux', architecture: 'arm64' },
          },
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: sha256(manifest),
            size: manifest.length,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      }),
    );
    await putManifest('1', index, 'application/vnd.oci.image.index.v1+json');
    const dst = join(work, 'multi-store');
    const pull = cli(['image', 'pull', `${host}/team/multi:1`, '--json'], { AEGIS_IMAGES: dst });
    assert.equal(pull.code, 0, pull.err);
    const r = JSON.parse(pull.out) as { digest: string; manifestDigest: string };
    assert.equal(r.manifestDigest, sha256(manifest), 'the amd64 manifest was picked');
    assert.equal(readFileSync(join(dst, 'sha256', r.digest.slice(7), 'rootfs/z/hello'), 'utf8'), 'zstd layer\n');
  });
});

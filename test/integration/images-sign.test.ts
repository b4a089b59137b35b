/**
 * Signed images (issue 14), against the real CLI:
 * - `aegis image sign` / `aegis image verify --key` on an image imported into a throw-away store:
 *   the default key is made on first use (0600, public half beside it), a signature by another
 *   key or an altered signature is refused, a key file others may read is refused, an image whose
 *   files changed is not signed, and `image rm` takes its signatures with it;
 * - the host policy AEGIS_IMAGE_TRUSTED_KEYS: `aegis run` of an unsigned image does not start
 *   (125, `run.failed_to_start` with reason image.signature_missing), a signed one runs and its
 *   `run.spawn` provenance names the signer, an altered signature is image.signature_invalid.
 *   This part signs python:3.11 in the host store (from scripts/setup.sh) with a key made for the
 *   test and removes that signature afterwards.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { keyIdOf } from '../../src/images/signature.js';
import { AEGIS_BIN } from '../../src/test-support/repo.js';
import { removeTempDirs, tarOf, tempDir, writeOciLayout } from './images-support.js';
import { requireOrSkip, sandboxUnavailable } from './sandbox-conformance.js';

interface Res {
  code: number | null;
  out: string;
  err: string;
}

function cli(args: string[], env: Record<string, string>): Res {
  const r = spawnSync(process.execPath, [AEGIS_BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function keyPairFiles(dir: string, label: string): { key: string; pub: string; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = join(dir, `${label}.key`);
  const pub = join(dir, `${label}.pub`);
  writeFileSync(key, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  writeFileSync(pub, publicKey.export({ format: 'pem', type: 'spki' }));
  return { key, pub, keyId: keyIdOf(publicKey) };
}

/** Flips a bit of the stored signature (the record stays well-formed). */
function alterSignature(file: string): void {
  const rec = JSON.parse(readFileSync(file, 'utf8')) as { signature: string };
  const sig = Buffer.from(rec.signature, 'base64');
  sig[10] = sig[10]! ^ 0x40;
  writeFileSync(file, JSON.stringify({ ...rec, signature: sig.toString('base64') }) + '\n');
}

describe('aegis image sign / verify --key (a throw-away store)', () => {
  let store = '';
  let home = '';
  let keys = '';
  const env = () => ({ AEGIS_IMAGES: store, AEGIS_HOME: home });

  before(async () => {
    store = tempDir('sign-store');
    home = tempDir('sign-home');
    keys = tempDir('sign-keys');
    const layout = tempDir('sign-oci');
    writeOciLayout(layout, [
      await tarOf([
        { name: 'app/', type: 'directory' },
        { name: 'app/run.sh', content: 'echo hi\n', mode: 0o755 },
      ]),
    ]);
    const r = cli(['image', 'import', layout, '--tag', 'signed-demo:1'], env());
    assert.equal(r.code, 0, r.err);
  });
  after(() => removeTempDirs());

  it('signs with the default key (made on first use, 0600) and verifies with its public half', () => {
    const s = cli(['image', 'sign', 'signed-demo:1', '--json'], env());
    assert.equal(s.code, 0, s.err);
    const out = JSON.parse(s.out) as { ok: boolean; digest: string; keyId: string; signature: string; publicKey: string };
    assert.equal(out.ok, true);
    assert.equal(statSync(join(home, 'image-signing.key')).mode & 0o777, 0o600);
    assert.equal(out.publicKey, join(home, 'image-signing.pub'));
    assert.ok(out.signature.startsWith(join(store, 'signatures', out.digest.slice(7))));
    const v = cli(['image', 'verify', 'signed-demo:1', '--key', out.publicKey, '--json'], env());
    assert.equal(v.code, 0, v.err);
    const vr = JSON.parse(v.out) as { ok: boolean; signature: { ok: boolean; keyId: string; name: string } };
    assert.deepEqual(vr.signature, { ok: true, keyId: out.keyId, name: 'signed-demo' });
    // Signing again with the same key replaces the record: still one signature, still valid.
    assert.equal(cli(['image', 'sign', 'signed-demo:1'], env()).code, 0);
    assert.equal(cli(['image', 'verify', 'signed-demo:1', '--key', out.publicKey], env()).code, 0);
  });

  it('refuses: a key that did not sign, an altered signature, a key file others can read, a non-key', () => {
    const other = keyPairFiles(keys, 'other');
    const v = cli(['image', 'verify', 'signed-demo:1', '--key', other.pub], env());
    assert.equal(v.code, 1);
    assert.match(v.err, /NOT SIGNED: .*no signature by any of the keys given/);
    // Any one of several keys is enough.
    assert.equal(cli(['image', 'verify', 'signed-demo:1', '--key', other.pub, '--key', join(home, 'image-signing.pub')], env()).code, 0);

    const mine = keyPairFiles(keys, 'mine');
    const s = JSON.parse(cli(['image', 'sign', 'signed-demo:1', '--key', mine.key, '--json'], env()).out) as {
      signature: string;
      keyId: string;
    };
    assert.equal(s.keyId, mine.keyId);
    alterSignature(s.signature);
    const bad = cli(['image', 'verify', 'signed-demo:1', '--key', mine.pub, '--json'], env());
    assert.equal(bad.code, 1);
    assert.deepEqual((JSON.parse(bad.out) as { signature: unknown }).signature, { ok: false, reason: 'bad_signature' });

    chmodSync(mine.key, 0o644);
    const open = cli(['image', 'sign', 'signed-demo:1', '--key', mine.key, '--json'], env());
    assert.equal(open.code, 1);
    assert.equal((JSON.parse(open.out) as { code: string }).code, 'image.key_invalid');
    const notKey = join(keys, 'not-a-key.pub');
    writeFileSync(notKey, 'hello\n');
    const nk = cli(['image', 'verify', 'signed-demo:1', '--key', notKey, '--json'], env());
    assert.equal(nk.code, 1);
    assert.equal((JSON.parse(nk.out) as { code: string }).code, 'image.key_invalid');
  });

  it('an image whose files changed is not signed, and fails verification', () => {
    const layout = tempDir('sign-oci2');
    return tarOf([{ name: 'data.txt', content: 'original\n' }]).then((tar) => {
      writeOciLayout(layout, [tar]);
      const imp = cli(['image', 'import', layout, '--tag', 'signed-demo:2', '--json'], env());
      assert.equal(imp.code, 0, imp.err);
      const digest = (JSON.parse(imp.out) as { digest: string }).digest;
      writeFileSync(join(store, 'sha256', digest.slice(7), 'rootfs', 'data.txt'), 'changed\n');
      const s = cli(['image', 'sign', 'signed-demo:2', '--json'], env());
      assert.equal(s.code, 1);
      assert.equal((JSON.parse(s.out) as { code: string }).code, 'image.digest_mismatch');
      assert.equal(existsSync(join(store, 'signatures', digest.slice(7))), false, 'nothing was signed');
    });
  });

  it('image rm removes the signatures with the image', () => {
    const v = JSON.parse(cli(['image', 'verify', 'signed-demo:1', '--json'], env()).out) as { digest: string };
    assert.ok(existsSync(join(store, 'signatures', v.digest.slice(7))));
    assert.equal(cli(['image', 'rm', 'signed-demo:1'], env()).code, 0);
    assert.equal(existsSync(join(store, 'signatures', v.digest.slice(7))), false);
  });
});

describe('host policy: AEGIS_IMAGE_TRUSTED_KEYS (aegis run)', { timeout: 180_000 }, () => {
  let work = '';
  let unavailable: string | null = null;
  let key = { key: '', pub: '', keyId: '' };
  let signature = '';
  const file = () => join(work, 'agent', 'agent.yaml');
  const env = (extra: Record<string, string> = {}) => ({ AEGIS_HOME: join(work, 'home'), AEGIS_IMAGE_TRUSTED_KEYS: key.pub, ...extra });
  const events = (action: string): { reason?: string; payload: Record<string, unknown> }[] => {
    const q = cli(['audit', 'query', '--json', '--action', action], env());
    assert.equal(q.code, 0, q.err);
    return q.out
      .trim()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { event: { reason?: string; payload: Record<string, unknown> } }).event);
  };

  before(async () => {
    unavailable = await sandboxUnavailable();
    work = mkdtempSync('/var/tmp/aegis-sign-run-');
    chmodSync(work, 0o755);
    mkdirSync(join(work, 'home'));
    mkdirSync(join(work, 'agent'), { mode: 0o755 });
    chmodSync(join(work, 'agent'), 0o755);
    writeFileSync(
      file(),
      'version: "1.0"\nagent:\n  name: signed-probe\n  runtime: "python:3.11"\n  entrypoint: ["python3", "-c", "print(42)"]\n  isolation: crun\n',
    );
    key = keyPairFiles(work, 'trusted');
  });
  after(() => {
    if (signature !== '') rmSync(signature, { force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('an unsigned image does not start; signed, it runs and the provenance names the signer; altered, it is refused', (t) => {
    if (!requireOrSkip(t, unavailable)) return;
    const state = join(work, 'state');
    const unsigned = cli(['run', file(), '--state-dir', state], env());
    assert.equal(unsigned.code, 125, unsigned.err);
    assert.match(unsigned.err, /no signature by a trusted key/);
    assert.deepEqual(
      events('run.failed_to_start').map((e) => e.reason),
      ['image.signature_missing'],
    );

    const s = cli(['image', 'sign', 'python:3.11', '--key', key.key, '--json'], env());
    assert.equal(s.code, 0, s.err);
    signature = (JSON.parse(s.out) as { signature: string }).signature;
    const ok = cli(['run', file(), '--state-dir', state], env());
    assert.equal(ok.code, 0, ok.err);
    assert.equal(ok.out.trim(), '42');
    const spawned = events('run.spawn');
    assert.equal(spawned.length, 1);
    assert.equal((spawned[0]!.payload['image'] as { signedBy?: string }).signedBy, key.keyId);

    alterSignature(signature);
    const altered = cli(['run', file(), '--state-dir', state], env());
    assert.equal(altered.code, 125);
    assert.match(altered.err, /does not verify/);
    assert.deepEqual(
      events('run.failed_to_start').map((e) => e.reason),
      ['image.signature_missing', 'image.signature_invalid'],
    );
    // Without the host policy the same image runs: signatures are required only where configured.
    assert.equal(cli(['run', file(), '--state-dir', state], env({ AEGIS_IMAGE_TRUSTED_KEYS: '' })).code, 0);
  });
});

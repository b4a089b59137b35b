import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { AuditError, type AuditErrorCode } from '../errors.js';
import {
  encodeVerifierKey,
  noteSigner,
  noteVerifier,
  openCheckpoint,
  parseCheckpointBody,
  parseVerifierKey,
  rawEd25519PublicKey,
  signCheckpoint,
  verifyNote,
} from './index.js';
import { hasCode } from '../../test-support/errors.js';

function expectCode(fn: () => unknown, code: AuditErrorCode): void {
  assert.throws(fn, hasCode(AuditError, code));
}

function keys(name = 'example.com/log') {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { signer: noteSigner(name, privateKey), verifier: noteVerifier(name, rawEd25519PublicKey(publicKey)) };
}

const ROOT = new Uint8Array(32).fill(7);

describe('signed-note: the golang.org/x/mod/sumdb/note documentation example', () => {
  // Verifier key and signed note published in the Go note package documentation (PeterNeumann).
  const vkey = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
  const note =
    'If you think cryptography is the answer to your problem,\n' +
    "then you don't know what your problem is.\n" +
    '\n' +
    '\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
  it('parses the verifier key, checking its key hash', () => {
    const v = parseVerifierKey(vkey);
    assert.equal(encodeVerifierKey(v), vkey);
  });
  it('verifies the note', () => {
    assert.match(verifyNote(note, parseVerifierKey(vkey)), /^If you think/u);
  });
  it('rejects the note with one changed character', () => {
    expectCode(() => verifyNote(note.replace('answer', 'Answer'), parseVerifierKey(vkey)), 'audit.checkpoint_signature');
  });
});

describe('tlog-checkpoint', () => {
  it('round-trips a signed checkpoint', () => {
    const { signer, verifier } = keys();
    const note = signCheckpoint({ origin: 'example.com/log', size: 42, root: ROOT, extensions: [] }, signer);
    assert.match(note, /^example\.com\/log\n42\n[A-Za-z0-9+/=]{44}\n\n\u2014 example\.com\/log [A-Za-z0-9+/=]+\n$/u);
    const cp = openCheckpoint(note, verifier, 'example.com/log');
    assert.equal(cp.size, 42);
    assert.deepEqual(Buffer.from(cp.root), Buffer.from(ROOT));
  });

  it('round-trips verifier keys, including base64 keys that contain "+" (regression)', () => {
    for (let i = 0; i < 40; i++) {
      const { verifier } = keys();
      assert.deepEqual(parseVerifierKey(encodeVerifierKey(verifier)).rawPublicKey, verifier.rawPublicKey);
    }
  });

  describe('when the note is signed by another key', () => {
    it('fails with audit.checkpoint_signature', () => {
      const a = keys();
      const b = keys();
      const note = signCheckpoint({ origin: 'example.com/log', size: 1, root: ROOT, extensions: [] }, b.signer);
      expectCode(() => openCheckpoint(note, a.verifier, 'example.com/log'), 'audit.checkpoint_signature');
    });
  });

  describe('when the origin differs', () => {
    it('fails with audit.checkpoint_signature', () => {
      const { signer, verifier } = keys();
      const note = signCheckpoint({ origin: 'example.com/log', size: 1, root: ROOT, extensions: [] }, signer);
      expectCode(() => openCheckpoint(note, verifier, 'other/log'), 'audit.checkpoint_signature');
    });
  });

  describe('when the body is malformed', () => {
    const root = Buffer.from(ROOT).toString('base64');
    for (const [what, body] of [
      ['size has a leading zero', `o\n042\n${root}\n`],
      ['size is negative', `o\n-1\n${root}\n`],
      ['root is short', `o\n1\n${Buffer.alloc(31).toString('base64')}\n`],
      ['root line is missing', 'o\n1\n'],
      ['origin is empty', `\n1\n${root}\n`],
      ['no final newline', `o\n1\n${root}`],
      ['extension line is empty', `o\n1\n${root}\n\n`],
    ] as const) {
      it(`rejects it when ${what}`, () => expectCode(() => parseCheckpointBody(body), 'audit.checkpoint_malformed'));
    }
  });

  describe('when the note itself is malformed', () => {
    const { verifier } = keys();
    for (const [what, note] of [
      ['there is no signature block', 'o\n1\nAAAA\n'],
      ['the signature line lacks the em dash', 'text\n\n- example.com/log AAAAAAAA\n'],
      ['the signature is not base64', 'text\n\n\u2014 example.com/log !!!\n'],
      ['there is a control character', 'te\u0007xt\n\n\u2014 example.com/log AAAAAAAA\n'],
      ['the note is empty', ''],
    ] as const) {
      it(`rejects it when ${what}`, () => expectCode(() => verifyNote(note, verifier), 'audit.checkpoint_malformed'));
    }
  });
});

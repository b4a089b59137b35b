/**
 * The per-execution certificate authority of TLS termination (issue 12).
 *
 * ARCHITECTURE NOTE: the CA's private key is made with WebCrypto when the gateway starts,
 * marked non-extractable, and lives only in this process's memory: it is never written to a
 * file, never exported, and dies with the run. The sandbox gets only the CA certificate (a
 * bundle bind-mounted read-only). A leaf certificate is issued per intercepted host name, on
 * first use, and cached for the execution; all leaves share one key (also in memory only).
 * LIMITATION: the gateway process (root on the host) holds the key; anyone who can read its
 * memory can impersonate the intercepted hosts to this one sandbox, for this run only.
 */
import { webcrypto } from 'node:crypto';
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import './reflect-shim.js'; // before @peculiar/x509 (tsyringe checks Reflect.getMetadata at load)
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as never);

const ALG: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
/** Certificates are valid from an hour before the start (clock skew in the sandbox) for this long. */
const VALIDITY_MS = 48 * 3_600_000;

export interface LeafCertificate {
  /** PEM of the leaf followed by the CA (the chain the agent verifies). */
  readonly certPem: string;
  readonly keyPem: string;
}

export class ExecutionCa {
  private readonly leaves = new Map<string, Promise<LeafCertificate>>();

  private constructor(
    /** The CA certificate (PEM): what the sandbox trusts. */
    readonly certPem: string,
    private readonly caKey: CryptoKey,
    private readonly caName: string,
    private readonly leafKeys: CryptoKeyPair,
    private readonly leafKeyPem: string,
    private readonly notBefore: Date,
    private readonly notAfter: Date,
  ) {}

  /** A new CA for execution `executionId`; `now` in ms since the epoch. */
  static async create(executionId: string, now: number): Promise<ExecutionCa> {
    const notBefore = new Date(now - 3_600_000);
    const notAfter = new Date(now + VALIDITY_MS);
    const name = `CN=AEGIS execution CA ${executionId.replace(/[^A-Za-z0-9-]/g, '').slice(0, 40)}, O=AEGIS`;
    const caKeys = (await webcrypto.subtle.generateKey(ALG, false, ['sign', 'verify'])) as CryptoKeyPair;
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name,
      notBefore,
      notAfter,
      keys: caKeys as never,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey as never),
      ],
    });
    // The leaf key must be exported once (node:tls takes PEM); it never leaves this process.
    const leafKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey);
    const leafKeyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
    return new ExecutionCa(ca.toString('pem'), caKeys.privateKey, name, leafKeys, leafKeyPem, notBefore, notAfter);
  }

  /** The certificate for `host` (a normalized DNS name), issued once per execution. */
  leafFor(host: string): Promise<LeafCertificate> {
    let p = this.leaves.get(host);
    if (p === undefined) {
      p = this.issue(host);
      this.leaves.set(host, p);
    }
    return p;
  }

  private async issue(host: string): Promise<LeafCertificate> {
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${host}`,
      issuer: this.caName,
      notBefore: this.notBefore,
      notAfter: this.notAfter,
      publicKey: this.leafKeys.publicKey as never,
      signingKey: this.caKey as never,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: host }]),
      ],
    });
    return { certPem: `${cert.toString('pem')}\n${this.certPem}\n`, keyPem: this.leafKeyPem };
  }
}

function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = b[0]! & 0x7f; // positive
  return Buffer.from(b).toString('hex');
}

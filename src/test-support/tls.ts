/** Test helper: a throw-away CA and a server certificate for localhost / 127.0.0.1 / ::1 (openssl CLI). */
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestPki {
  readonly caFile: string;
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/**
 * A throw-away CA and one server certificate for `altNames` (`DNS:name` / `IP:address`), made
 * with the openssl CLI in `dir`. The CA file is world-readable (a sandbox reads it).
 */
export function makeServerPki(
  dir: string,
  cn: string,
  altNames: readonly string[],
): TestPki & { readonly certFile: string; readonly keyFile: string } {
  const p = (f: string): string => join(dir, f);
  const openssl = (args: string[]): void => void execFileSync('/usr/bin/openssl', args, { stdio: 'pipe', timeout: 30_000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=AEGIS throw-away test CA']);
  openssl(['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', `/CN=${cn}`]);
  writeFileSync(p('ext.cnf'), `subjectAltName=${altNames.join(',')}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl([
    'x509',
    '-req',
    '-in',
    p('server.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-out',
    p('server.pem'),
    '-days',
    '2',
    '-extfile',
    p('ext.cnf'),
  ]);
  chmodSync(p('ca.pem'), 0o644);
  return {
    caFile: p('ca.pem'),
    certFile: p('server.pem'),
    keyFile: p('server.key'),
    ca: readFileSync(p('ca.pem'), 'utf8'),
    cert: readFileSync(p('server.pem'), 'utf8'),
    key: readFileSync(p('server.key'), 'utf8'),
  };
}

/** A throw-away CA and a server certificate for localhost, 127.0.0.1 and ::1. */
export function makeLoopbackPki(dir: string): TestPki {
  return makeServerPki(dir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']);
}

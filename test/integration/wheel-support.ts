/**
 * Builds tiny pure-Python wheels (PEP 427) for the image build tests, offline and without
 * Python: a wheel is a zip archive (stored, no compression) with the package files, METADATA,
 * WHEEL and a RECORD of urlsafe-base64 SHA-256 hashes.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

function zipStored(files: ReadonlyArray<readonly [string, Buffer]>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const n = Buffer.from(name);
    const crc = crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(n.length, 28);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, n, data);
    centrals.push(ch, n);
    offset += lh.length + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** Writes `<name>-<version>-py3-none-any.whl` into `dir`; returns its path and `sha256:<hex>` of the file. */
export function writeWheel(dir: string, name: string, version: string, module: string): { path: string; sha256: string } {
  const info = `${name}-${version}.dist-info`;
  const files: Array<[string, Buffer]> = [
    [`${name}/__init__.py`, Buffer.from(module)],
    [`${info}/METADATA`, Buffer.from(`Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\nSummary: AEGIS test package\n`)],
    [`${info}/WHEEL`, Buffer.from('Wheel-Version: 1.0\nGenerator: aegis-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n')],
  ];
  const record = files.map(([p, b]) => `${p},sha256=${createHash('sha256').update(b).digest('base64url')},${b.length}`);
  files.push([`${info}/RECORD`, Buffer.from([...record, `${info}/RECORD,,`].join('\n') + '\n')]);
  const bytes = zipStored(files);
  const path = join(dir, `${name}-${version}-py3-none-any.whl`);
  writeFileSync(path, bytes);
  return { path, sha256: createHash('sha256').update(bytes).digest('hex') };
}

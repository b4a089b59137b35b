import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { propertyRuns } from '../../test-support/props.js';
import { GatewayError } from '../errors.js';
import { parseClientHello } from './sni.js';
import { CLIENT_HELLOS } from './testdata/client-hellos.js';

const code = (fn: () => unknown): string | null => {
  try {
    fn();
    return null;
  } catch (err) {
    assert.ok(err instanceof GatewayError, `threw a non-GatewayError: ${String(err)}`);
    return err.code;
  }
};

/** Re-frame a single-record hello as two records split inside the handshake message. */
function splitIntoTwoRecords(hello: Buffer, at: number): Buffer {
  const body = hello.subarray(5);
  const rec = (b: Buffer): Buffer => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, b.length >> 8, b.length & 255]), b]);
  return Buffer.concat([rec(body.subarray(0, at)), rec(body.subarray(at))]);
}

describe('parseClientHello on real ClientHellos', () => {
  for (const v of CLIENT_HELLOS) {
    it(`finds the SNI of ${v.source}`, () => {
      const r = parseClientHello(Buffer.from(v.hex, 'hex'));
      assert.deepEqual(r, { status: 'complete', sni: v.sni, ech: false });
    });
  }

  it('reports incomplete for every strict prefix, never throws', () => {
    const full = Buffer.from(CLIENT_HELLOS[0]!.hex, 'hex');
    for (let n = 0; n < full.length; n++) assert.deepEqual(parseClientHello(full.subarray(0, n)), { status: 'incomplete' });
  });

  it('reassembles a ClientHello split over two records', () => {
    const full = Buffer.from(CLIENT_HELLOS[0]!.hex, 'hex');
    for (const at of [1, 3, 4, 50, 300]) {
      const r = parseClientHello(splitIntoTwoRecords(full, at));
      assert.equal(r.status === 'complete' && r.sni, 'api.openai.com', `split at ${at}`);
    }
  });
});

describe('when the bytes are not a ClientHello', () => {
  it('an HTTP request is tls_malformed', () => {
    assert.equal(
      code(() => parseClientHello(Buffer.from('GET / HTTP/1.1\r\n'))),
      'gateway.tls_malformed',
    );
  });
  it('a handshake that is not ClientHello (ServerHello) is tls_malformed', () => {
    const b = Buffer.from(CLIENT_HELLOS[0]!.hex, 'hex');
    b[5] = 0x02;
    assert.equal(
      code(() => parseClientHello(b)),
      'gateway.tls_malformed',
    );
  });
  it('a declared ClientHello larger than the limit is refused before it is buffered', () => {
    const b = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]);
    assert.equal(
      code(() => parseClientHello(b)),
      'gateway.tls_malformed',
    );
  });
  it('a record length of zero is tls_malformed', () => {
    assert.equal(
      code(() => parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]))),
      'gateway.tls_malformed',
    );
  });
});

describe('when the server_name extension is hostile', () => {
  /** Build a minimal ClientHello with the given extensions block. */
  function hello(exts: Buffer): Buffer {
    const body = Buffer.concat([
      Buffer.from([0x03, 0x03]),
      Buffer.alloc(32),
      Buffer.from([0x00]), // session id
      Buffer.from([0x00, 0x02, 0x13, 0x01]), // one suite
      Buffer.from([0x01, 0x00]), // null compression
      Buffer.from([exts.length >> 8, exts.length & 255]),
      exts,
    ]);
    const hs = Buffer.concat([Buffer.from([0x01, 0, body.length >> 8, body.length & 255]), body]);
    return Buffer.concat([Buffer.from([0x16, 0x03, 0x01, hs.length >> 8, hs.length & 255]), hs]);
  }
  function ext(type: number, data: Buffer): Buffer {
    return Buffer.concat([Buffer.from([type >> 8, type & 255, data.length >> 8, data.length & 255]), data]);
  }
  function sni(...names: string[]): Buffer {
    const entries = Buffer.concat(
      names.map((n) => Buffer.concat([Buffer.from([0x00, n.length >> 8, n.length & 255]), Buffer.from(n, 'latin1')])),
    );
    return ext(0, Buffer.concat([Buffer.from([entries.length >> 8, entries.length & 255]), entries]));
  }

  it('a well-formed synthetic hello parses (control)', () => {
    assert.deepEqual(parseClientHello(hello(sni('API.OpenAI.com'))), { status: 'complete', sni: 'api.openai.com', ech: false });
  });
  it('two host_names (which one would the server use?) are refused', () => {
    assert.equal(
      code(() => parseClientHello(hello(sni('api.openai.com', 'attacker.com')))),
      'gateway.tls_malformed',
    );
  });
  it('two server_name extensions are refused', () => {
    assert.equal(
      code(() => parseClientHello(hello(Buffer.concat([sni('api.openai.com'), sni('attacker.com')])))),
      'gateway.tls_malformed',
    );
  });
  it('a NUL byte or a space in the name is refused', () => {
    assert.equal(
      code(() => parseClientHello(hello(sni('api.openai.com\u0000.attacker.com')))),
      'gateway.tls_malformed',
    );
    assert.equal(
      code(() => parseClientHello(hello(sni('api openai com')))),
      'gateway.tls_malformed',
    );
  });
  it('an extension length running past the hello is refused', () => {
    const h = hello(sni('api.openai.com'));
    h.writeUInt16BE(0x7000, h.length - 'api.openai.com'.length - 9 + 2); // the server_name ext length
    assert.equal(
      code(() => parseClientHello(h)),
      'gateway.tls_malformed',
    );
  });
  it('Encrypted Client Hello is reported (the gateway refuses it)', () => {
    const r = parseClientHello(hello(Buffer.concat([sni('public.example'), ext(0xfe0d, Buffer.from([0, 1, 2]))])));
    assert.deepEqual(r, { status: 'complete', sni: 'public.example', ech: true });
  });
});

describe('on arbitrary bytes (property)', () => {
  for (const [label, params] of propertyRuns(2000)) {
    it(`returns a result or throws GatewayError, nothing else (${label})`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
          const b = Buffer.from(bytes);
          if (b.length > 0) b[0] = 0x16; // get past the first check most of the time
          code(() => parseClientHello(b));
        }),
        params,
      );
    });
  }
  for (const [label, params] of propertyRuns(3000)) {
    it(`mutating one byte of a real hello never escapes as another error (${label})`, () => {
      const full = Buffer.from(CLIENT_HELLOS[0]!.hex, 'hex');
      fc.assert(
        fc.property(fc.integer({ min: 0, max: full.length - 1 }), fc.integer({ min: 0, max: 255 }), (i, v) => {
          const b = Buffer.from(full);
          b[i] = v;
          code(() => parseClientHello(b));
        }),
        params,
      );
    });
  }
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeString, parseLine } from './parse.js';

const printf = (data: string): string => JSON.stringify({ type: 'printf', data });
const map = (name: string, v: unknown): string => JSON.stringify({ type: 'map', data: { [name]: v } });

describe('monitor output parser', () => {
  it('reads the records of the host program, each with its cgroup (lines as bpftrace 0.17 -f json prints them)', () => {
    assert.deepEqual(parseLine('{"type": "printf", "data": "READY\\n"}'), { kind: 'ready' });
    assert.deepEqual(parseLine(printf('C 1 116229\n')), { kind: 'control', op: 1, cg: 116229 });
    assert.deepEqual(parseLine('{"type": "printf", "data": "X 116229 18831 18830 101000 /usr/bin/id\\n"}'), {
      kind: 'exec',
      cg: 116229,
      pid: 18831,
      ppid: 18830,
      uid: 101000,
      path: '/usr/bin/id',
    });
    assert.deepEqual(parseLine(printf('A 9 7 2 id; ls\n')), { kind: 'arg', cg: 9, pid: 7, index: 2, value: 'id; ls' });
    assert.deepEqual(parseLine(printf('A 9 7 1 \n')), { kind: 'arg', cg: 9, pid: 7, index: 1, value: '' });
    assert.deepEqual(parseLine(printf('R 9 7 -13\n')), { kind: 'exec_result', cg: 9, pid: 7, ret: -13 });
    assert.deepEqual(parseLine(printf('Q 9 7 512\n')), { kind: 'exit', cg: 9, pid: 7, status: 512 });
    assert.deepEqual(parseLine('{"type": "map", "data": {"@o": {"9,0,2,/tmp/wq/b,c": 1, "10,1,0,/dev/null": 2}}}'), {
      kind: 'opens',
      entries: [
        { cg: 9, write: false, errno: 2, path: '/tmp/wq/b,c', count: 1 },
        { cg: 10, write: true, errno: 0, path: '/dev/null', count: 2 },
      ],
    });
  });

  it('keeps commas, quotes, newlines and "]: " of an agent-chosen path inside the path (the path is the last field)', () => {
    const path = '/tmp/a\nb"]: 3, X 1 2 3 /fake,1,0';
    const r = parseLine(map('@o', { [`5,1,13,${path}`]: 5 }));
    assert.deepEqual(r, { kind: 'opens', entries: [{ cg: 5, write: true, errno: 13, path, count: 5 }] });
    const x = parseLine(printf(`X 5 1 2 3 ${path}\n`));
    assert.deepEqual(x, { kind: 'exec', cg: 5, pid: 1, ppid: 2, uid: 3, path });
  });

  it('turns bpftrace 0.17 \\uffffffXX escapes back into the UTF-8 bytes they stand for', () => {
    // What bpftrace printed for a file named "é" (0xc3 0xa9).
    const line = '{"type": "map", "data": {"@o": {"5,0,2,/tmp/wq/\\uffffffc3\\uffffffa9": 1}}}';
    assert.deepEqual(parseLine(line), { kind: 'opens', entries: [{ cg: 5, write: false, errno: 2, path: '/tmp/wq/é', count: 1 }] });
    assert.equal(decodeString('plain'), 'plain');
    assert.equal(decodeString('\uffffff80'), '\ufffd', 'an invalid UTF-8 byte becomes U+FFFD');
  });

  it('reads refused calls, the open totals and lost events, per cgroup', () => {
    assert.deepEqual(parseLine(map('@d', { '5,165,1': 3, '6,101,1': 1 })), {
      kind: 'denied',
      entries: [
        { cg: 5, nr: 165, errno: 1, count: 3 },
        { cg: 6, nr: 101, errno: 1, count: 1 },
      ],
    });
    assert.deepEqual(parseLine(map('@n', { '5': 1000000, '6': 2 })), {
      kind: 'open_totals',
      entries: [
        { cg: 5, count: 1000000 },
        { cg: 6, count: 2 },
      ],
    });
    assert.deepEqual(parseLine('{"type": "lost_events", "data": {"events": 12}}'), { kind: 'lost', count: 12 });
    assert.deepEqual(parseLine('{"type": "attached_probes", "data": {"probes": 15}}'), { kind: 'ignored' });
  });

  describe('when a line is malformed', () => {
    for (const [name, line] of [
      ['not JSON', '{"type": "printf", "data": "X 1 2'],
      ['an unknown tag', printf('Z 1 2 3\n')],
      ['a printf without its newline', printf('Q 1 1 0')],
      ['a non-numeric pid', printf('X 5 one 2 3 /bin/sh\n')],
      ['an exec result with trailing text', printf('R 5 1 0 extra\n')],
      ['a control record with a negative cgroup', printf('C 1 -5\n')],
      ['an open count that is not a count', map('@o', { '5,0,0,/a': -1 })],
      ['a negative errno', map('@o', { '5,0,-2,/a': 1 })],
      ['an open key without its path', map('@o', { '5,0,0': 1 })],
      ['an open key without its cgroup', map('@o', { '0,0,/a': 1 })],
      ['an open access that is not 0 or 1', map('@o', { '5,2,0,/a': 1 })],
      ['a refused-call key with four parts', map('@d', { '5,1,2,3': 1 })],
      ['a refused-call key without its cgroup', map('@d', { '165,1': 1 })],
      ['an open total that is not a map', map('@n', 12)],
      ['an open total with a non-numeric cgroup', map('@n', { x: 1 })],
      ['a map record with two maps', JSON.stringify({ type: 'map', data: { '@o': {}, '@d': {} } })],
      ['a number too large to be exact', printf('Q 123456789012345678901 0\n')],
      ['data of the wrong type', JSON.stringify({ type: 'printf', data: 5 })],
    ] as const) {
      it(`${name}: malformed, not an exception`, () => assert.deepEqual(parseLine(line), { kind: 'malformed' }));
    }
    it('any string at all parses to a record without throwing', () => {
      fc.assert(
        fc.property(fc.string(), (s) => {
          const r = parseLine(s);
          assert.equal(typeof r.kind, 'string');
        }),
      );
      fc.assert(
        fc.property(fc.string(), (s) => {
          assert.equal(typeof parseLine(printf(s)).kind, 'string');
          assert.equal(typeof parseLine(map('@o', { [s]: 1 })).kind, 'string');
        }),
      );
    });
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FACILITY_LOG_AUDIT, formatRfc5424, headerField, SD_ID, SEVERITY, sdValue } from './rfc5424.js';

describe('RFC 5424 formatting', () => {
  it('PARAM-VALUE escapes exactly ", \\ and ] (§6.3.3)', () => {
    assert.equal(sdValue('a"b\\c]d[e=f'), 'a\\"b\\\\c\\]d[e=f');
  });
  it('header fields: printable US-ASCII without spaces, bounded, NILVALUE when empty (§6.2)', () => {
    assert.equal(headerField('host name\té', 255), 'host_name__');
    assert.equal(headerField('x'.repeat(40), 32), 'x'.repeat(32));
    assert.equal(headerField('', 48), '-');
    assert.equal(headerField(undefined, 48), '-');
  });
  it('one message: PRI = facility * 8 + severity, version 1, header, one SD element, MSG', () => {
    const m = formatRfc5424({
      facility: FACILITY_LOG_AUDIT,
      severity: SEVERITY.critical,
      time: '2026-11-30T05:00:00.000Z',
      hostname: 'h1',
      appName: 'aegis',
      msgId: 'alert.raised',
      params: [
        ['rule', 'r"1]'],
        ['agent', undefined],
        ['level', 'critical'],
      ],
      msg: '{"a":1}',
    });
    const pri = 13 * 8 + 2;
    assert.equal(m, `<${pri}>1 2026-11-30T05:00:00.000Z h1 aegis - alert.raised [${SD_ID} rule="r\\"1\\]" level="critical"] {"a":1}`);
  });
});

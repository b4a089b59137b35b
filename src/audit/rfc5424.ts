/**
 * RFC 5424 syslog messages (pure: data in, text out), shared by `aegis audit export --format
 * rfc5424` and the alerts' syslog sink (src/alerts/syslog.ts).
 *
 *   SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]                          (RFC 5424 §6)
 *   HEADER     = "<" PRI ">" "1" SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
 *
 * Header fields are printable US-ASCII without spaces, bounded (HOSTNAME 255, APP-NAME 48,
 * PROCID 128, MSGID 32 characters, §6.2); what does not fit is replaced ('_') or cut, and an
 * absent field is the NILVALUE '-'. Structured-data values escape '"', '\' and ']' (§6.3.3).
 * The SD-ID uses the private enterprise number 32473, reserved for documentation (RFC 5612).
 */

/** RFC 5424 §6.2.1 table 1: facility 13 is "log audit". */
export const FACILITY_LOG_AUDIT = 13;

/** RFC 5424 §6.2.1 table 2. */
export const SEVERITY = { emergency: 0, alert: 1, critical: 2, error: 3, warning: 4, notice: 5, informational: 6, debug: 7 } as const;

/** The SD-ID of AEGIS's structured data. */
export const SD_ID = 'aegis@32473';

/** RFC 5424 §6.3.3: inside PARAM-VALUE, '"', '\' and ']' are escaped with a backslash. */
export function sdValue(v: string): string {
  return v.replace(/["\\\]]/gu, (c) => `\\${c}`);
}

/** RFC 5424 header fields are printable US-ASCII without spaces; '-' when absent. */
export function headerField(v: string | undefined, max: number): string {
  if (v === undefined || v === '') return '-';
  const clean = v.replace(/[^\x21-\x7e]/gu, '_').slice(0, max);
  return clean === '' ? '-' : clean;
}

export interface SyslogMessage {
  readonly facility: number;
  readonly severity: number;
  /** RFC 3339 time (the event's own). */
  readonly time: string;
  readonly hostname: string;
  readonly appName: string;
  readonly msgId: string | undefined;
  /** PARAM-NAME -> value, in order; undefined values are left out. Names must be SD-NAMEs. */
  readonly params: ReadonlyArray<readonly [string, string | undefined]>;
  /** The free-form MSG (AEGIS puts the event's JSON there). */
  readonly msg: string;
}

/** One RFC 5424 message, without any transport framing. */
export function formatRfc5424(m: SyslogMessage): string {
  const pri = m.facility * 8 + m.severity;
  const sd = `[${SD_ID}${m.params
    .filter((p): p is readonly [string, string] => p[1] !== undefined)
    .map(([k, v]) => ` ${k}="${sdValue(v)}"`)
    .join('')}]`;
  return `<${pri}>1 ${headerField(m.time, 64)} ${headerField(m.hostname, 255)} ${headerField(m.appName, 48)} - ${headerField(m.msgId, 32)} ${sd} ${m.msg}`;
}

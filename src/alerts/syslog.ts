/**
 * The syslog sink (adapter): each alert as an RFC 5424 message (src/audit/rfc5424.ts), facility
 * 13 (log audit), severity from the rule's level, the AlertRecord's JSON as MSG.
 *
 *   udp://host:port   one datagram per message (RFC 5426), at most 2048 bytes (§3.2: receivers
 *                     should take 2048); a longer message has its MSG cut to fit.
 *   tcp://host:port   octet-counting framing, "<length> <message>" (RFC 6587 §3.4.1)
 *   tls://host:port   the same framing over TLS (RFC 5425 §4.3), the server's certificate
 *                     verified against Node's default CAs plus the configured CA file
 * TCP and TLS messages are bounded at 8192 bytes (RFC 5425 §4.3.1: receivers should take 8192).
 * One connection is kept; after an error it is reopened on the next attempt (the queue's
 * exponential backoff paces the reconnects).
 * LIMITATION: syslog has no acknowledgement. A message counts as delivered once the datagram is
 * sent or the bytes are written to the connection; a receiver that dies with them unread loses
 * them (the alert stays in the audit log).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { rootCertificates, connect as tlsConnect } from 'node:tls';
import { FACILITY_LOG_AUDIT, formatRfc5424, SEVERITY } from '../audit/rfc5424.js';
import { type AlertRecord, RetryingSink, type RetryOptions } from './deliver.js';
import type { Level } from './rule.js';

export type SyslogProtocol = 'udp' | 'tcp' | 'tls';

export const UDP_MAX_BYTES = 2048;
export const STREAM_MAX_BYTES = 8192;

/** Alert level -> RFC 5424 severity. */
export const LEVEL_SEVERITY: Readonly<Record<Level, number>> = {
  critical: SEVERITY.critical,
  high: SEVERITY.error,
  medium: SEVERITY.warning,
  low: SEVERITY.notice,
  informational: SEVERITY.informational,
};

/** The RFC 5424 message of an alert, at most `maxBytes` bytes (the MSG is cut, never the header or structured data). */
export function syslogAlert(r: AlertRecord, hostname: string, maxBytes: number): string {
  const head = formatRfc5424({
    facility: FACILITY_LOG_AUDIT,
    severity: LEVEL_SEVERITY[r.level],
    time: r.time,
    hostname,
    appName: 'aegis',
    msgId: 'alert.raised',
    params: [
      ['id', r.id],
      ['rule', r.rule],
      ['level', r.level],
      ['agent', r.actor.agent],
      ['execution', r.actor.execution],
      ['principal', r.actor.principal],
    ],
    msg: '',
  });
  const room = maxBytes - Buffer.byteLength(head);
  const msg = JSON.stringify(r);
  if (room <= 0)
    return Buffer.from(head)
      .subarray(0, maxBytes)
      .toString('utf8')
      .replace(/\uFFFD$/u, '');
  if (Buffer.byteLength(msg) <= room) return head + msg;
  // Cut on a character boundary: a partial UTF-8 sequence decodes to U+FFFD, which is dropped.
  return (
    head +
    Buffer.from(msg)
      .subarray(0, room)
      .toString('utf8')
      .replace(/\uFFFD$/u, '')
  );
}

/** RFC 6587 §3.4.1 octet counting: "<MSG-LEN> <SYSLOG-MSG>", MSG-LEN in bytes. */
export function octetFrame(message: string): Buffer {
  const body = Buffer.from(message, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `, 'ascii'), body]);
}

export interface SyslogOptions extends RetryOptions {
  readonly protocol: SyslogProtocol;
  readonly host: string;
  readonly port: number;
  /** HOSTNAME of the messages (this machine's name). */
  readonly hostname: string;
  /** tls: extra CA certificates (PEM), added to Node's default ones. */
  readonly ca?: string;
  /** Connection and write limit per attempt (default 5 s). */
  readonly timeoutMs?: number;
}

export class SyslogSink extends RetryingSink<Buffer> {
  private socket: net.Socket | null = null;
  private udp: dgram.Socket | null = null;

  constructor(private readonly o: SyslogOptions) {
    super(`syslog ${o.protocol}://${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`, o);
  }

  protected encode(r: AlertRecord): Buffer {
    if (this.o.protocol === 'udp') return Buffer.from(syslogAlert(r, this.o.hostname, UDP_MAX_BYTES), 'utf8');
    return octetFrame(syslogAlert(r, this.o.hostname, STREAM_MAX_BYTES));
  }

  protected transmit(data: Buffer): Promise<void> {
    return this.o.protocol === 'udp' ? this.sendDatagram(data) : this.write(data);
  }

  private sendDatagram(data: Buffer): Promise<void> {
    if (this.udp === null) {
      this.udp = dgram.createSocket(net.isIPv6(this.o.host) ? 'udp6' : 'udp4');
      this.udp.on('error', () => this.dropUdp());
      this.udp.unref();
    }
    const sock = this.udp;
    return new Promise((resolve, reject) =>
      sock.send(data, this.o.port, this.o.host, (err) => {
        if (err) {
          this.dropUdp();
          reject(err);
        } else resolve();
      }),
    );
  }

  private dropUdp(): void {
    try {
      this.udp?.close();
    } catch {
      // already closed
    }
    this.udp = null;
  }

  private connected(): Promise<net.Socket> {
    if (this.socket !== null && !this.socket.destroyed) return Promise.resolve(this.socket);
    const timeout = this.o.timeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      const s =
        this.o.protocol === 'tls'
          ? tlsConnect({
              host: this.o.host,
              port: this.o.port,
              servername: net.isIP(this.o.host) === 0 ? this.o.host : undefined,
              ...(this.o.ca !== undefined ? { ca: [...rootCertificates, this.o.ca] } : {}),
            })
          : net.connect({ host: this.o.host, port: this.o.port });
      const timer = setTimeout(() => s.destroy(new Error('connection timed out')), timeout);
      timer.unref();
      const ready = this.o.protocol === 'tls' ? 'secureConnect' : 'connect';
      s.once(ready, () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        s.on('error', () => s.destroy());
        s.on('close', () => {
          if (this.socket === s) this.socket = null;
        });
        s.on('data', () => undefined); // syslog receivers do not answer; anything sent is ignored
        s.unref();
        this.socket = s;
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        s.destroy();
        reject(err);
      });
    });
  }

  private async write(data: Buffer): Promise<void> {
    const s = await this.connected();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => s.destroy(new Error('write timed out')), this.o.timeoutMs ?? 5000);
      timer.unref();
      const onClose = (): void => {
        clearTimeout(timer);
        reject(new Error('connection closed'));
      };
      s.once('close', onClose);
      s.write(data, (err) => {
        clearTimeout(timer);
        s.off('close', onClose);
        if (err) {
          s.destroy();
          reject(err);
        } else resolve();
      });
    });
  }

  protected shutdown(): void {
    this.socket?.destroy();
    this.socket = null;
    this.dropUdp();
  }
}

/**
 * The webhook sink (adapter): each alert is POSTed as a JSON body (an AlertRecord), signed.
 *
 * Signature scheme (what a receiver checks; docs/alerts.md):
 *   X-Aegis-Timestamp: <unix seconds when this attempt was sent>
 *   X-Aegis-Signature: sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>
 * where <body> is the exact bytes of the request body. The receiver recomputes the HMAC over the
 * raw body, compares in constant time, and refuses a timestamp outside its replay window (5
 * minutes is advised); retried attempts carry a fresh timestamp and signature, and the body's
 * `id` (the alert.raised event id) lets it drop duplicates.
 *
 * A 2xx answer is delivery. 5xx, 408, 429, a timeout or a network error is retried with backoff;
 * any other answer (a 4xx: the receiver refuses this request) is a permanent failure.
 * ARCHITECTURE NOTE: TLS is verified against Node's default CAs, plus an extra CA when one is
 * configured; there is no switch to turn verification off. Redirects are not followed.
 */
import { createHmac } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { type AlertRecord, PermanentDeliveryError, RetryingSink, type RetryOptions } from './deliver.js';
import { AlertError } from './errors.js';

/** `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, the X-Aegis-Signature value. */
export function signWebhook(secret: Buffer, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * The shared secret from its file. Like the audit key files, a file readable or writable by
 * group or others is refused (alerts.sink_invalid): a leaked secret lets anyone forge alerts.
 * Surrounding whitespace (a trailing newline) is not part of the secret.
 */
export function readWebhookSecret(path: string): Buffer {
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new AlertError('alerts.sink_invalid', `webhook secret ${path} is not a file`);
    if ((st.mode & 0o077) !== 0)
      throw new AlertError('alerts.sink_invalid', `webhook secret ${path} must not be readable by group or others (chmod 600)`);
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    if (err instanceof AlertError) throw err;
    throw new AlertError('alerts.sink_invalid', `cannot read the webhook secret ${path}: ${(err as Error).message}`);
  }
  if (text.length < 16) throw new AlertError('alerts.sink_invalid', `webhook secret ${path} is shorter than 16 characters`);
  return Buffer.from(text, 'utf8');
}

/** An extra CA certificate (PEM) for a TLS sink. */
export function readCaFile(path: string): string {
  try {
    const pem = readFileSync(path, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (err) {
    throw new AlertError('alerts.sink_invalid', `CA file ${path}: ${(err as Error).message}`);
  }
}

export interface WebhookOptions extends RetryOptions {
  readonly url: string;
  readonly secret: Buffer;
  /** Extra CA certificates (PEM), added to Node's default ones. */
  readonly ca?: string;
  /** One attempt's limit, connection to answer (default 5 s). */
  readonly timeoutMs?: number;
  /** Clock for X-Aegis-Timestamp (default Date.now). */
  readonly now?: () => number;
}

export class WebhookSink extends RetryingSink<string> {
  private readonly url: URL;
  private readonly agent: http.Agent;
  private readonly requests = new Set<http.ClientRequest>();

  constructor(private readonly o: WebhookOptions) {
    super(`webhook ${o.url}`, o);
    this.url = new URL(o.url);
    this.agent =
      this.url.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, ...(o.ca !== undefined ? { ca: [...rootCertificates, o.ca] } : {}) })
        : new http.Agent({ keepAlive: true });
  }

  protected encode(record: AlertRecord): string {
    return JSON.stringify(record);
  }

  protected transmit(body: string): Promise<void> {
    const timestamp = String(Math.floor((this.o.now ?? Date.now)() / 1000));
    const mod = this.url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(this.url, {
        method: 'POST',
        agent: this.agent,
        timeout: this.o.timeoutMs ?? 5000,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'aegis-alerts/1',
          'x-aegis-timestamp': timestamp,
          'x-aegis-signature': signWebhook(this.o.secret, timestamp, body),
        },
      });
      this.requests.add(req);
      const timer = setTimeout(() => req.destroy(new Error('no answer in time')), this.o.timeoutMs ?? 5000);
      timer.unref();
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        this.requests.delete(req);
        if (err) reject(err);
        else resolve();
      };
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (err) => settle(err));
      req.on('response', (res) => {
        res.resume(); // the body is not read; only the status counts
        res.on('error', () => undefined);
        const s = res.statusCode ?? 0;
        if (s >= 200 && s < 300) settle();
        else if (s >= 500 || s === 408 || s === 429) settle(new Error(`HTTP ${s}`));
        else settle(new PermanentDeliveryError(`HTTP ${s}`));
      });
      req.end(body);
    });
  }

  protected shutdown(): void {
    for (const r of this.requests) r.destroy(new Error('sink closed'));
    this.agent.destroy();
  }
}

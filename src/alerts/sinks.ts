/**
 * The delivery sinks a host configured (src/config: AEGIS_ALERT_WEBHOOK*, AEGIS_ALERT_SYSLOG*),
 * opened once per run. Reading the secret and CA files happens here, before the agent starts:
 * a sink that cannot be set up (unsafe secret file, bad CA) stops the run from starting (fail
 * secure: an operator who asked for alerts to leave the host is never silently without them).
 */
import { AlertDelivery, type AlertSinkAdapter, type RetryOptions } from './deliver.js';
import { SyslogSink, type SyslogProtocol } from './syslog.js';
import { readCaFile, readWebhookSecret, WebhookSink } from './webhook.js';

export interface DeliveryConfig {
  readonly webhook?: { readonly url: string; readonly secretFile: string; readonly caFile: string | undefined } | undefined;
  readonly syslog?:
    { readonly protocol: SyslogProtocol; readonly host: string; readonly port: number; readonly caFile: string | undefined } | undefined;
  /** HOSTNAME in syslog messages. */
  readonly hostname: string;
  /** Queue and retry settings for every sink (tests shorten them). */
  readonly retry?: RetryOptions;
}

/** The configured sinks behind one AlertDelivery, or null when none is configured (throws AlertError alerts.sink_invalid). */
export function openDelivery(c: DeliveryConfig): AlertDelivery | null {
  const sinks: AlertSinkAdapter[] = [];
  if (c.webhook !== undefined) {
    const w = c.webhook;
    sinks.push(
      new WebhookSink({
        ...c.retry,
        url: w.url,
        secret: readWebhookSecret(w.secretFile),
        ...(w.caFile !== undefined ? { ca: readCaFile(w.caFile) } : {}),
      }),
    );
  }
  if (c.syslog !== undefined) {
    const s = c.syslog;
    sinks.push(
      new SyslogSink({
        ...c.retry,
        protocol: s.protocol,
        host: s.host,
        port: s.port,
        hostname: c.hostname,
        ...(s.caFile !== undefined ? { ca: readCaFile(s.caFile) } : {}),
      }),
    );
  }
  return sinks.length === 0 ? null : new AlertDelivery(sinks);
}

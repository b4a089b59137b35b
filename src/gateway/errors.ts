/**
 * Errors of the egress gateway. Codes are API: callers and tests branch on `code`.
 */
import { AegisError } from '../errors.js';

export type GatewayErrorCode =
  /** Bytes from the agent that are not a TLS ClientHello (or a malformed one). */
  | 'gateway.tls_malformed'
  /** A proxy request line, header block or authority that does not parse. */
  | 'gateway.http_malformed'
  /** A SOCKS5 message that does not parse or uses an unsupported feature. */
  | 'gateway.socks_malformed'
  /** A DNS message from the agent or the upstream resolver that does not parse. */
  | 'gateway.dns_malformed'
  /** The upstream resolver did not answer in time or answered with an error. */
  | 'gateway.dns_upstream'
  /** Gateway configuration (environment or config file) is invalid. */
  | 'gateway.config_invalid'
  /** Creating or tearing down the sandbox network (netns, veth, nftables) failed. */
  | 'gateway.netns_failed'
  /** The sandbox subnet overlaps a route or address the host already uses (it would shadow it). */
  | 'gateway.subnet_conflict'
  /** No free sandbox address slot is left in the configured subnet. */
  | 'gateway.netns_exhausted'
  /** A gateway listener could not start; the sandbox must not start either. */
  | 'gateway.listen_failed';

export class GatewayError extends AegisError<GatewayErrorCode> {}

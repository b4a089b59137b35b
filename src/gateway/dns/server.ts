/**
 * The sandbox's DNS server (UDP and TCP on the gateway address, port 53 as the sandbox sees it).
 *
 * For every question: deny-first checks (parse, rate limit, policy on the name, question type),
 * then upstream resolution by the gateway itself, then the DNS-rebinding guard on every answer
 * address. Only A answers for allowed names leave this server; AAAA gets an empty NOERROR
 * (sandboxes have no IPv6), everything else REFUSED. One `net.dns` audit event per allowed
 * question; refused ones are written in full at first and then folded into `net.dns.summary`
 * counts (fold.ts), so a flood of refused questions cannot flood the audit log.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { GatewayError } from '../errors.js';
import { dnsEvent, gatewayDeny, upstreamFailed, verdictOf, type DnsFacts, type Verdict } from '../audit/events.js';
import { RefusalFolder, type FoldLimits } from './fold.js';
import { classifyHost } from '../../policy/host.js';
import type { Session } from '../session.js';
import {
  encodeFormErr,
  encodeResponse,
  MAX_QUERY_BYTES,
  parseQuery,
  salvageId,
  type AddressAnswer,
  type Question,
  type Rcode,
} from './message.js';

/** TTL given to the agent: short, so a policy decision is asked again soon. */
const ANSWER_TTL_MAX = 60;
const TCP_IDLE_MS = 10_000;
/** Header 12 + question <= 259 + 14 answers * 16 (compressed name 2, fixed 10, IPv4 4) = 495 <= 512. */
const MAX_ANSWERS = 14;

interface Outcome {
  readonly verdict: Verdict;
  readonly rcode: Rcode;
  readonly answers: readonly AddressAnswer[];
}

/** Decide and answer one question (exported for tests through the servers). */
export async function answerQuestion(session: Session, q: Question): Promise<Outcome> {
  const refuse = (verdict: Verdict, rcode: Rcode = 'REFUSED'): Outcome => ({ verdict, rcode, answers: [] });
  if (!session.dnsQueries.take()) return refuse(gatewayDeny('gateway.rate_limited', 'DNS query rate limit exceeded'));
  const byName = session.matcher.decideName(q.name);
  if (!byName.allow) return refuse(verdictOf(byName));
  if (q.type === 'AAAA') return { verdict: verdictOf(byName), rcode: 'NOERROR', answers: [] };
  if (q.type !== 'A') return refuse(gatewayDeny('gateway.dns_type_refused', `${q.type} questions are not answered (only A/AAAA)`));

  // Resolve the name the policy decided on (IDNA-mapped, lower case), never the agent's raw
  // spelling: `a\u00adpi.example.com` must not become a channel into the upstream resolver.
  const cls = classifyHost(q.name);
  if (cls.kind !== 'name') return refuse(gatewayDeny('gateway.malformed', `"${q.name}" is not a host name`));
  const name = cls.name;
  let res;
  try {
    res = await session.resolver.resolve(name, 'A');
  } catch (err) {
    return refuse(upstreamFailed(err instanceof Error ? err.message : String(err)), 'SERVFAIL');
  }
  if (res.rcode !== 'NOERROR') {
    const rcode: Rcode = res.rcode === 'NXDOMAIN' ? 'NXDOMAIN' : 'SERVFAIL';
    return { verdict: verdictOf(byName), rcode, answers: [] };
  }
  // DNS-rebinding guard: one special-range address refuses the whole answer.
  for (const address of res.addresses) {
    const d = session.matcher.decideResolvedAddress(address);
    if (!d.allow) return refuse(verdictOf(d));
  }
  session.noteResolved(name);
  session.noteAnswer(name, res.addresses.slice(0, MAX_ANSWERS));
  const ttl = Math.min(ANSWER_TTL_MAX, Math.max(1, res.ttl));
  // At most MAX_ANSWERS records, so that a reply always fits a 512-byte UDP message (RFC 1035 §4.2.1).
  const answers = res.addresses.slice(0, MAX_ANSWERS).map((address): AddressAnswer => ({ type: 'A', address, ttl }));
  return { verdict: verdictOf(byName), rcode: 'NOERROR', answers };
}

/** Per-server state: the folder for refusals, the questions in flight, whether close() began. */
interface ServerState {
  readonly session: Session;
  readonly folder: RefusalFolder;
  readonly inFlight: Set<InFlight>;
  /** UDP questions from arrival until their answer is handed to the socket (or dropped). */
  readonly replying: Set<Promise<void>>;
  closing: boolean;
  /** The last summaries are written: a refusal after that (a TCP connection not yet closed) is written in full. */
  final: boolean;
}

/** A question waiting for its answer (usually: for the upstream resolver). */
interface InFlight {
  readonly name: string;
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
  readonly settled: Promise<unknown>;
  /** Set by close(): its event is already written; a late answer is dropped. */
  cancelled: boolean;
}

/** Write one question's event: allowed ones always, refused ones first in full, then folded into counts. */
function record(st: ServerState, v: Verdict, f: DnsFacts): void {
  if (v.decision === 'deny' && !st.final && !st.folder.admit({ name: f.name, type: f.type, reason: v.reason })) return;
  st.session.emit(dnsEvent(st.session.actor, v, f));
}

async function handle(st: ServerState, raw: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | null> {
  let q: Question;
  try {
    q = parseQuery(raw);
  } catch (err) {
    const detail = err instanceof GatewayError ? err.message : 'unparseable DNS query';
    record(st, gatewayDeny('gateway.malformed', detail), { name: '', type: '', transport, rcode: 'FORMERR', answers: [] });
    const id = salvageId(raw);
    return id === null || st.closing ? null : encodeFormErr(id);
  }
  if (st.closing) {
    record(st, gatewayDeny('gateway.closed', CLOSED_DETAIL), { name: q.name, type: q.type, transport, rcode: 'none', answers: [] });
    return null;
  }
  const answering = answerQuestion(st.session, q);
  const entry: InFlight = { name: q.name, type: q.type, transport, settled: answering.catch(() => undefined), cancelled: false };
  st.inFlight.add(entry);
  let out: Outcome;
  try {
    out = await answering;
  } finally {
    st.inFlight.delete(entry);
  }
  // close() gave up on this question and wrote its event: the answer came too late to send.
  if (entry.cancelled) return null;
  record(st, out.verdict, { name: q.name, type: q.type, transport, rcode: out.rcode, answers: out.answers.map((a) => a.address) });
  return encodeResponse(q, out.rcode, out.answers);
}

const CLOSED_DETAIL = 'the gateway closed (the run ended) before this question was answered; no answer was sent';

/** How long close() waits for questions in flight (upstream lookups) before it cancels them. */
export const CLOSE_GRACE_MS = 500;
/** How often refusals counted by the folder become `net.dns.summary` events. */
export const SUMMARY_INTERVAL_MS = 1_000;

export interface DnsServerOptions {
  /** Override DEFAULT_FOLD_LIMITS (tests). */
  readonly foldLimits?: Partial<FoldLimits>;
  readonly closeGraceMs?: number;
  readonly summaryIntervalMs?: number;
}

export interface DnsServers {
  readonly udp: UdpSocket;
  readonly tcp: Server;
  readonly port: number;
  /**
   * Stop answering: waits up to `closeGraceMs` for questions in flight, then writes each one
   * still waiting as `gateway.closed` and drops its late answer (never sent on the closed
   * socket), writes the last summaries, and closes both listeners. Idempotent.
   */
  close(): Promise<void>;
}

/** Start UDP and TCP DNS on `host`; `port` 0 picks a free port (the same one for both). */
export async function startDnsServer(session: Session, host: string, port = 0, opts: DnsServerOptions = {}): Promise<DnsServers> {
  const st: ServerState = {
    session,
    folder: new RefusalFolder(session.actor, () => session.now(), opts.foldLimits),
    inFlight: new Set(),
    replying: new Set(),
    closing: false,
    final: false,
  };
  const tcp = createServer((sock) => serveTcp(st, sock));
  tcp.maxConnections = 64;
  await listenTcp(tcp, host, port);
  const actualPort = (tcp.address() as { port: number }).port;
  const udp = createSocket('udp4');
  let udpClosed = false;
  udp.on('message', (msg, rinfo) => {
    const work = handle(st, msg, 'udp')
      .then(
        (reply) =>
          new Promise<void>((sent) => {
            // A reply computed after close() must never reach send(): on a closed socket it throws
            // ERR_SOCKET_DGRAM_NOT_RUNNING, which once ended `aegis run` with exit 1 after the
            // agent had exited 0. Send errors go to the callback, never up the stack.
            if (reply && !udpClosed) udp.send(reply, rinfo.port, rinfo.address, () => sent());
            else sent();
          }),
      )
      .catch((err: unknown) => void process.stderr.write(`aegis gateway: dns: ${String(err)}\n`))
      .finally(() => st.replying.delete(work));
    st.replying.add(work);
  });
  udp.on('error', (err) => process.stderr.write(`aegis gateway: dns udp: ${err.message}\n`));
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(actualPort, host, () => {
      udp.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    tcp.close();
    throw new GatewayError('gateway.listen_failed', `DNS UDP listener on ${host}:${actualPort}: ${String(err)}`, { cause: err });
  });
  const flush = (): void => {
    for (const e of st.folder.flush()) session.emit(e);
  };
  const timer = setInterval(flush, opts.summaryIntervalMs ?? SUMMARY_INTERVAL_MS);
  timer.unref();
  let closing: Promise<void> | null = null;
  const close = async (): Promise<void> => {
    st.closing = true;
    clearInterval(timer);
    const tcpClosed = new Promise<void>((resolve) => tcp.close(() => resolve()));
    // Questions in flight get a bounded wait for their answer; the rest are cancelled, written now.
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...[...st.inFlight].map((f) => f.settled), ...st.replying]),
      new Promise<void>((r) => (grace = setTimeout(r, opts.closeGraceMs ?? CLOSE_GRACE_MS))),
    ]);
    clearTimeout(grace);
    for (const f of st.inFlight) {
      f.cancelled = true;
      record(st, gatewayDeny('gateway.closed', CLOSED_DETAIL), {
        name: f.name,
        type: f.type,
        transport: f.transport,
        rcode: 'none',
        answers: [],
      });
    }
    st.inFlight.clear();
    flush();
    st.final = true;
    udpClosed = true;
    udp.close();
    await tcpClosed;
  };
  return {
    udp,
    tcp,
    port: actualPort,
    close: () => (closing ??= close()),
  };
}

function listenTcp(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(new GatewayError('gateway.listen_failed', `listener on ${host}:${port}: ${err.message}`, { cause: err })),
    );
    server.listen(port, host, () => resolve());
  });
}

/** DNS over TCP (RFC 1035 §4.2.2, RFC 7766): 2-byte length prefix, several queries per connection. */
function serveTcp(st: ServerState, sock: Socket): void {
  st.session.track(sock);
  sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
  sock.on('error', () => sock.destroy());
  let buf = Buffer.alloc(0);
  let busy = Promise.resolve();
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2) {
      const len = buf.readUInt16BE(0);
      if (len > MAX_QUERY_BYTES) {
        sock.destroy();
        return;
      }
      if (buf.length < 2 + len) break;
      const msg = buf.subarray(2, 2 + len);
      buf = buf.subarray(2 + len);
      busy = busy
        .then(async () => {
          const reply = await handle(st, Buffer.from(msg), 'tcp');
          if (!reply) {
            sock.destroy();
            return;
          }
          const head = Buffer.alloc(2);
          head.writeUInt16BE(reply.length);
          if (!sock.destroyed) sock.write(Buffer.concat([head, reply]));
        })
        // One query's failure costs its own connection, never the gateway.
        .catch(() => void sock.destroy());
    }
    if (buf.length > 2 + MAX_QUERY_BYTES) sock.destroy();
  });
}

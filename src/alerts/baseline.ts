/**
 * The per-agent anomaly baseline (pure): features of one execution from its own audit events,
 * a robust model of an agent's past executions (median and MAD per feature), and a score that
 * says which feature is how far outside it.
 *
 * Method: for each feature, robust z = (value - median) / scale, where scale is
 * 1.4826 x MAD (the normal-consistent MAD) floored at max(absolute floor, 25 % of the median),
 * so a feature that never varied (CPU of a constant agent, zero denials) does not turn every
 * small wobble into an infinite z. An execution is anomalous when some feature is at least
 * Z_THRESHOLD above its median. Only increases count: doing less than usual (a shorter run,
 * fewer bytes) is not what an attacker does with an agent, and on a shared host it is mostly
 * noise. Fixed thresholds, no tuning: the model is quiet until MIN_HISTORY executions exist.
 *
 * ARCHITECTURE NOTE: pure (no I/O, no clock). The caller reads the history from the audit log
 * (src/cli/baseline-history.ts) and passes events in.
 * LIMITATION: the model counts distinct destinations, not which ones: an agent that swaps its
 * usual host for another one with the same traffic shape is not flagged by the baseline (the
 * policy's allowlist is what confines destinations). Executions that were themselves anomalous
 * stay in the history; the median tolerates up to half of the window being outliers.
 */

/** The features, in report order. */
export const FEATURES = [
  'durationMs',
  'cpuMs',
  'maxMemoryBytes',
  'bytesOut',
  'bytesIn',
  'destinations',
  'dnsQuestions',
  'denials',
] as const;
export type Feature = (typeof FEATURES)[number];
export type Features = Readonly<Record<Feature, number>>;

/** What the baseline needs of an audit event (the EngineEvent shape, id and time optional). */
export interface BaselineEvent {
  readonly time?: string;
  readonly action: string;
  readonly decision: string;
  readonly actor?: { readonly agent?: string; readonly execution?: string };
  readonly payload?: Readonly<Record<string, unknown>> | null;
}

/** Executions the model is built from: the most recent ones, at most this many. */
export const HISTORY_WINDOW = 50;
/** No alert before the agent has this many past executions (the default; configurable). */
export const MIN_HISTORY = 20;
/** Robust z at or above which a feature is anomalous. */
export const Z_THRESHOLD = 6;
/** 1 / Phi^-1(3/4): makes the MAD an estimate of the standard deviation for normal data. */
const MAD_TO_SIGMA = 1.4826;
/** The scale is never below this fraction of the median. */
const RELATIVE_FLOOR = 0.25;
/** The scale is never below these (one unit of each feature that matters). */
export const ABSOLUTE_FLOOR: Features = {
  durationMs: 250,
  cpuMs: 100,
  maxMemoryBytes: 16 * 1024 * 1024,
  bytesOut: 16 * 1024,
  bytesIn: 64 * 1024,
  destinations: 1,
  dnsQuestions: 2,
  denials: 1,
};

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

function hostOfUrl(u: unknown): string | null {
  if (typeof u !== 'string') return null;
  try {
    return new URL(u).hostname.toLowerCase();
  } catch {
    return null;
  }
}

/**
 * The features of one execution from its events (untrusted payloads: anything not a finite,
 * non-negative number counts as 0). Durations, CPU and memory from `resource.usage` (duration
 * from `run.exit` if there is no usage event); bytes from `net.connect` and `http.request`;
 * destinations: distinct hosts (or addresses) of connections, requests and dropped packets,
 * allowed or not; DNS questions: `net.dns` events plus the counts of `net.dns.summary`;
 * denials: `deny` events, a summary counting its `count`, `net.blocked` its `packets`.
 */
export function extractFeatures(events: Iterable<BaselineEvent>): Features {
  let durationMs = 0;
  let usageDuration: number | null = null;
  let cpuMs = 0;
  let maxMemoryBytes = 0;
  let bytesOut = 0;
  let bytesIn = 0;
  let dnsQuestions = 0;
  let denials = 0;
  const destinations = new Set<string>();
  for (const e of events) {
    const p = e.payload ?? {};
    switch (e.action) {
      case 'resource.usage':
        usageDuration = Math.max(usageDuration ?? 0, num(p['durationMs']));
        cpuMs = Math.max(cpuMs, num(p['cpuMs']));
        maxMemoryBytes = Math.max(maxMemoryBytes, num(p['maxMemoryBytes']));
        break;
      case 'run.exit':
        durationMs = Math.max(durationMs, num(p['durationMs']));
        break;
      case 'net.connect':
        bytesOut += num(p['bytesSent']);
        bytesIn += num(p['bytesReceived']);
        if (typeof p['host'] === 'string') destinations.add(p['host'].toLowerCase());
        break;
      case 'http.request': {
        bytesOut += num(p['bytesSent']);
        bytesIn += num(p['bytesReceived']);
        const h = hostOfUrl(p['url']);
        if (h !== null) destinations.add(h);
        break;
      }
      case 'net.blocked':
        if (Array.isArray(p['destinations']))
          for (const d of p['destinations'] as unknown[])
            if (d !== null && typeof d === 'object' && typeof (d as { address?: unknown }).address === 'string')
              destinations.add((d as { address: string }).address.toLowerCase());
        break;
      case 'net.dns':
        dnsQuestions++;
        break;
      case 'net.dns.summary':
        dnsQuestions += num(p['count']);
        break;
      default:
        break;
    }
    if (e.decision === 'deny') {
      if (e.action === 'net.dns.summary') denials += Math.max(1, num(p['count']));
      else if (e.action === 'net.blocked') denials += Math.max(1, num(p['packets']));
      else denials++;
    }
  }
  return {
    durationMs: usageDuration ?? durationMs,
    cpuMs,
    maxMemoryBytes,
    bytesOut,
    bytesIn,
    destinations: destinations.size,
    dnsQuestions,
    denials,
  };
}

/** One execution, grouped from the log. */
export interface ExecutionRecord {
  readonly execution: string;
  readonly agent: string;
  /** Time of its first event. */
  readonly time: string;
  /** Whether its end (`run.exit` or `resource.usage`) is in the events read. */
  readonly complete: boolean;
  readonly features: Features;
}

/** Groups events by execution (in order of first appearance); events without one are ignored. */
export function groupExecutions(events: Iterable<BaselineEvent>): ExecutionRecord[] {
  const byId = new Map<string, { agent: string; time: string; events: BaselineEvent[]; complete: boolean }>();
  for (const e of events) {
    const x = e.actor?.execution;
    if (typeof x !== 'string' || x === '' || e.action === 'alert.raised') continue;
    let g = byId.get(x);
    if (g === undefined) {
      g = { agent: '', time: e.time ?? '', events: [], complete: false };
      byId.set(x, g);
    }
    if (g.agent === '' && typeof e.actor?.agent === 'string') g.agent = e.actor.agent;
    if (e.action === 'run.exit' || e.action === 'resource.usage') g.complete = true;
    g.events.push(e);
  }
  return [...byId].map(([execution, g]) => ({
    execution,
    agent: g.agent,
    time: g.time,
    complete: g.complete,
    features: extractFeatures(g.events),
  }));
}

export interface FeatureModel {
  readonly median: number;
  readonly mad: number;
  /** The divisor of the z-score: max(1.4826 x MAD, absolute floor, 25 % of the median). */
  readonly scale: number;
}

export interface BaselineModel {
  readonly agent: string;
  /** Executions the model was built from. */
  readonly executions: number;
  readonly minHistory: number;
  /** Whether it may alert (executions >= minHistory). */
  readonly ready: boolean;
  readonly features: Readonly<Record<Feature, FeatureModel>>;
}

function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The model of an agent from its past executions (oldest first; the last HISTORY_WINDOW are used). */
export function buildModel(agent: string, history: readonly Features[], minHistory: number = MIN_HISTORY): BaselineModel {
  const recent = history.slice(-HISTORY_WINDOW);
  const features = {} as Record<Feature, FeatureModel>;
  for (const f of FEATURES) {
    const xs = recent.map((h) => h[f]);
    const med = median(xs);
    const mad = median(xs.map((x) => Math.abs(x - med)));
    features[f] = { median: med, mad, scale: Math.max(MAD_TO_SIGMA * mad, ABSOLUTE_FLOOR[f], RELATIVE_FLOOR * Math.abs(med)) };
  }
  return { agent, executions: recent.length, minHistory, ready: recent.length >= minHistory, features };
}

export interface FeatureScore {
  readonly feature: Feature;
  readonly value: number;
  readonly median: number;
  /** Robust z (positive: above the median). */
  readonly z: number;
}

export interface BaselineScore {
  /** True only when the model is ready and some feature is at least Z_THRESHOLD above. */
  readonly anomalous: boolean;
  /** Anomalous features, farthest first (empty when not anomalous). */
  readonly reasons: readonly FeatureScore[];
  /** Every feature's score, in FEATURES order. */
  readonly scores: readonly FeatureScore[];
}

export function scoreExecution(model: BaselineModel, x: Features): BaselineScore {
  const scores = FEATURES.map((f): FeatureScore => {
    const m = model.features[f];
    return { feature: f, value: x[f], median: m.median, z: Math.round(((x[f] - m.median) / m.scale) * 100) / 100 };
  });
  const reasons = model.ready ? scores.filter((s) => s.z >= Z_THRESHOLD).sort((a, b) => b.z - a.z) : [];
  return { anomalous: reasons.length > 0, reasons, scores };
}

/** One line: `bytesOut 5242880 (median 1024, z 320.5); destinations 12 (median 1, z 11)`. */
export function explain(reasons: readonly FeatureScore[]): string {
  return reasons.map((r) => `${r.feature} ${r.value} (median ${r.median}, z ${r.z})`).join('; ');
}

/**
 * Scores `current` against the agent's executions before it in `records` (the same agent, complete,
 * not `current` itself). Returns the model and the score.
 */
export function scoreAgainstHistory(
  records: readonly ExecutionRecord[],
  current: ExecutionRecord,
  minHistory: number = MIN_HISTORY,
): { model: BaselineModel; score: BaselineScore } {
  const idx = records.findIndex((r) => r.execution === current.execution);
  const before = (idx >= 0 ? records.slice(0, idx) : records).filter(
    (r) => r.agent === current.agent && r.complete && r.execution !== current.execution,
  );
  const model = buildModel(
    current.agent,
    before.map((r) => r.features),
    minHistory,
  );
  return { model, score: scoreExecution(model, current.features) };
}

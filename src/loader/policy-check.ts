/**
 * Checks that a value read back from the compiled-policy cache has exactly the shape of a Policy
 * (src/policy/types.ts), without loading the manifest parser (zod, yaml, tldts): the cache exists
 * to skip them. Pure. Cache files are untrusted input even in a private directory (a torn write,
 * another version, a hand edit): anything that is not a well-formed Policy is refused, and the
 * manifest is compiled again.
 *
 * This checks form, not meaning: values stay what the compiler wrote (the cache key binds the
 * manifest bytes and the compiler's identity; see loader.ts).
 */
import type { Policy } from '../policy/types.js';

type Obj = Record<string, unknown>;

function obj(v: unknown, keys: readonly string[]): Obj | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Obj;
  const own = Object.keys(o);
  if (own.length !== keys.length || !keys.every((k) => Object.prototype.hasOwnProperty.call(o, k))) return undefined;
  return o;
}

const str = (v: unknown): v is string => typeof v === 'string';
const nat = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every(str);
const port = (v: unknown): boolean => nat(v) && v >= 1 && v <= 65535;

function stringMap(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  return Object.values(v as Obj).every(str);
}

function portSpec(v: unknown): boolean {
  const kind = (v as Obj | null)?.['kind'];
  if (kind === 'default' || kind === 'any') return obj(v, ['kind']) !== undefined;
  const o = obj(v, ['kind', 'port']);
  return o !== undefined && kind === 'one' && port(o['port']);
}

/** HTTP method/path rules of a name rule (`http`, present only when the entry has them). */
function httpRule(v: unknown): boolean {
  const o = obj(v, ['methods', 'paths']);
  return o !== undefined && (o['methods'] === null || strings(o['methods'])) && (o['paths'] === null || strings(o['paths']));
}

function netRule(v: unknown): boolean {
  const kind = (v as Obj | null)?.['kind'];
  const withHttp = typeof v === 'object' && v !== null && Object.prototype.hasOwnProperty.call(v, 'http');
  const extra = withHttp ? ['http'] : [];
  if (kind === 'exact') {
    const o = obj(v, ['kind', 'host', 'ports', 'source', ...extra]);
    return o !== undefined && str(o['host']) && portSpec(o['ports']) && str(o['source']) && (!withHttp || httpRule(o['http']));
  }
  if (kind === 'wildcard') {
    const o = obj(v, ['kind', 'suffix', 'ports', 'source', ...extra]);
    return o !== undefined && str(o['suffix']) && portSpec(o['ports']) && str(o['source']) && (!withHttp || httpRule(o['http']));
  }
  if (kind === 'cidr') {
    const o = obj(v, ['kind', 'family', 'address', 'prefix', 'ports', 'source']);
    if (o === undefined || (o['family'] !== 4 && o['family'] !== 6) || !str(o['address']) || !nat(o['prefix'])) return false;
    return (o['prefix'] as number) <= (o['family'] === 4 ? 32 : 128) && portSpec(o['ports']) && str(o['source']);
  }
  return false;
}

function imageRef(v: unknown): boolean {
  const o = obj(v, ['name', 'tag', 'digest', 'ref']);
  return o !== undefined && str(o['name']) && str(o['tag']) && (o['digest'] === null || str(o['digest'])) && str(o['ref']);
}

function agent(v: unknown): boolean {
  const o = obj(v, ['name', 'runtime', 'entrypoint', 'env', 'secretRefs', 'isolation', 'code']);
  if (o === undefined) return false;
  const iso = o['isolation'];
  return (
    str(o['name']) &&
    imageRef(o['runtime']) &&
    strings(o['entrypoint']) &&
    stringMap(o['env']) &&
    stringMap(o['secretRefs']) &&
    (iso === null || iso === 'crun' || iso === 'runc' || iso === 'gvisor' || iso === 'microvm') &&
    str(o['code'])
  );
}

function network(v: unknown): boolean {
  const o = obj(v, ['rules', 'rateLimit', 'byteQuota']);
  if (o === undefined) return false;
  const rl = obj(o['rateLimit'], ['perSecond', 'burst']);
  const quota = o['byteQuota'];
  return (
    Array.isArray(o['rules']) &&
    o['rules'].every(netRule) &&
    rl !== undefined &&
    num(rl['perSecond']) &&
    nat(rl['burst']) &&
    (quota === null || nat(quota))
  );
}

function limits(v: unknown): boolean {
  const o = obj(v, ['timeoutMs', 'memoryBytes', 'cpu', 'pids']);
  if (o === undefined) return false;
  const cpu = obj(o['cpu'], ['quotaUs', 'periodUs', 'cores']);
  return (
    nat(o['timeoutMs']) &&
    nat(o['memoryBytes']) &&
    cpu !== undefined &&
    nat(cpu['quotaUs']) &&
    nat(cpu['periodUs']) &&
    num(cpu['cores']) &&
    nat(o['pids'])
  );
}

function toolServer(v: unknown): boolean {
  const o = obj(v, ['name', 'transport', 'allow', 'timeoutMs']);
  if (o === undefined || !str(o['name']) || !strings(o['allow']) || !nat(o['timeoutMs'])) return false;
  const kind = (o['transport'] as Obj | null)?.['kind'];
  if (kind === 'sandbox') {
    const t = obj(o['transport'], ['kind', 'manifest', 'volumes']);
    return t !== undefined && str(t['manifest']) && strings(t['volumes']);
  }
  const t = obj(o['transport'], ['kind', 'url', 'host', 'port', 'secret']);
  return (
    t !== undefined && kind === 'http' && str(t['url']) && str(t['host']) && port(t['port']) && (t['secret'] === null || str(t['secret']))
  );
}

function tools(v: unknown): boolean {
  const o = obj(v, ['servers']);
  return o !== undefined && Array.isArray(o['servers']) && o['servers'].every(toolServer);
}

/** `v` as a Policy when it has exactly a Policy's shape, else undefined. */
export function checkPolicy(v: unknown): Policy | undefined {
  const withTools = typeof v === 'object' && v !== null && Object.prototype.hasOwnProperty.call(v, 'tools');
  const o = obj(v, ['version', 'agent', 'network', 'fs', 'limits', 'syscalls', ...(withTools ? ['tools'] : [])]);
  if (o === undefined || o['version'] !== '1.0') return undefined;
  if (withTools && !tools(o['tools'])) return undefined;
  const fs = obj(o['fs'], ['read', 'write']);
  const sys = obj(o['syscalls'], ['deny']);
  const ok =
    agent(o['agent']) &&
    network(o['network']) &&
    fs !== undefined &&
    strings(fs['read']) &&
    strings(fs['write']) &&
    limits(o['limits']) &&
    sys !== undefined &&
    strings(sys['deny']);
  return ok ? (v as Policy) : undefined;
}

/**
 * Policy engine micro-benchmark: cost of one egress and one path decision, the calls the gateway
 * and the sandbox make on their hot paths. Prints medians over repeated batches.
 *
 *   npm run build && node dist/bench/policy.js
 */
import { parseManifest } from '../src/manifest/parse.js';
import { compilePolicy } from '../src/manifest/compile.js';
import { compileEgress } from '../src/policy/net.js';
import { decidePath } from '../src/policy/paths.js';

const text = `version: "1.0"
agent: { name: bench, runtime: "python:3.11", entrypoint: ["python3"] }
permissions:
  network:
    allow: ["api.openai.com", "*.googleapis.com", "db.internal:5432", "10.1.2.0/24:5432", ${Array.from({ length: 96 }, (_, i) => `"svc${i}.example.com"`).join(', ')}]
  fs: { read: ["/data/inputs"], write: ["/data/outputs"] }
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function bench(name: string, batch: number, fn: (i: number) => unknown): void {
  const samples: number[] = [];
  for (let round = 0; round < 31; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) fn(i);
    samples.push(Number(process.hrtime.bigint() - t0) / batch);
  }
  const ns = median(samples);
  console.log(`${name.padEnd(44)} ${ns.toFixed(0).padStart(7)} ns/op   ${(1e9 / ns / 1e6).toFixed(2)} M ops/s`);
}

const parsed = parseManifest(text);
if (!parsed.ok) throw new Error('bench manifest invalid');
const policy = compilePolicy(parsed.manifest);
const egress = compileEgress(policy.network);
const hosts = [
  'storage.googleapis.com',
  'api.openai.com',
  'attacker.com',
  'a.b.c.d.googleapis.com.attacker.net',
  '0x7f.1',
  '[::ffff:169.254.169.254]',
  'svc77.example.com',
  'ＡＰＩ.openai.com',
];

console.log('policy engine (median of 31 batches)');
bench('parseManifest + compilePolicy (100 rules)', 200, () => {
  const r = parseManifest(text);
  return r.ok ? compilePolicy(r.manifest) : null;
});
bench('compileEgress (100 rules)', 2000, () => compileEgress(policy.network));
for (const h of hosts) bench(`decide(${h}, 443)`, 20000, () => egress.decide(h, 443));
bench('decideName(storage.googleapis.com)', 20000, () => egress.decideName('storage.googleapis.com'));
bench('decideResolvedAddress(203.0.113.7)', 20000, () => egress.decideResolvedAddress('203.0.113.7'));
bench('decidePath(write, /data/outputs/a/../b.txt)', 20000, () => decidePath(policy.fs, 'write', '/data/outputs/a/../b.txt'));

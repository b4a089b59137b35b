/**
 * Parses the host's APT source configuration (one-line `sources.list` and deb822 `*.sources`)
 * to find the Debian mirror an image build should use. Pure: text in, entries out.
 * Formats: sources.list(5) in Debian 12 apt 2.6 (one-line style and deb822 style).
 */
export interface AptSource {
  readonly types: readonly string[];
  readonly uris: readonly string[];
  readonly suites: readonly string[];
  readonly components: readonly string[];
  readonly enabled: boolean;
}

/** One-line style: `deb [opts] uri suite [component...]`. Comments and `deb-src` are kept as types. */
export function parseOneLine(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    const words = line
      .replace(/\[[^\]]*\]/g, ' ')
      .split(/\s+/)
      .filter(Boolean);
    const [type, uri, suite, ...components] = words;
    if (!type || !uri || !suite || (type !== 'deb' && type !== 'deb-src')) continue;
    out.push({ types: [type], uris: [uri], suites: [suite], components, enabled: true });
  }
  return out;
}

/** deb822 style: paragraphs of `Field: value` separated by blank lines. */
export function parseDeb822(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const para of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | null = null;
    for (const raw of para.split('\n')) {
      if (raw.startsWith('#')) continue;
      if (/^\s/.test(raw) && last) {
        fields.set(last, `${fields.get(last) ?? ''} ${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(raw);
      if (!m) continue;
      last = (m[1] as string).toLowerCase();
      fields.set(last, (m[2] as string).trim());
    }
    const words = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    if (!fields.has('types') || !fields.has('uris') || !fields.has('suites')) continue;
    out.push({
      types: words('types'),
      uris: words('uris'),
      suites: words('suites'),
      components: words('components'),
      enabled: (fields.get('enabled') ?? 'yes').toLowerCase() !== 'no',
    });
  }
  return out;
}

export interface MirrorChoice {
  /** Mirror for `suite` and `suite-updates`. */
  mirror: string;
  /** Security mirror, if the host has one for `suite-security`. */
  security: string | null;
  /** Whether the host uses `suite-updates`. */
  updates: boolean;
}

const USABLE_URI = /^(https?|file):\/\/[^\s]+$/;

/** The first enabled binary (`deb`) http(s)/file source carrying `suite`, or null. */
export function pickMirror(sources: readonly AptSource[], suite: string): MirrorChoice | null {
  const deb = sources.filter((s) => s.enabled && s.types.includes('deb'));
  const find = (sn: string): string | null => {
    for (const s of deb) if (s.suites.includes(sn)) for (const u of s.uris) if (USABLE_URI.test(u)) return u;
    return null;
  };
  const mirror = find(suite);
  if (!mirror) return null;
  return { mirror, security: find(`${suite}-security`), updates: find(`${suite}-updates`) !== null };
}

/** The sources.list written into a built image (one-line style, main only). */
export function imageSourcesList(choice: MirrorChoice, suite: string): string {
  const lines = [`deb ${choice.mirror} ${suite} main`];
  if (choice.updates) lines.push(`deb ${choice.mirror} ${suite}-updates main`);
  if (choice.security) lines.push(`deb ${choice.security} ${suite}-security main`);
  return lines.join('\n') + '\n';
}

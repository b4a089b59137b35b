/**
 * /proc/<pid>/mountinfo, decoded (pure; the text comes in). One line per mount (proc(5)):
 *   36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   id parent major:minor root mount-point options optional-fields... - fstype source super-options
 * Paths are octal-escaped by the kernel (space \040, tab \011, newline \012, backslash \134).
 */

export interface MountEntry {
  /** Path of the mount's root within its filesystem. */
  readonly root: string;
  readonly mountPoint: string;
  readonly options: readonly string[];
  readonly fstype: string;
  readonly source: string;
  readonly superOptions: readonly string[];
}

/** Decodes the kernel's octal escapes (`\040` -> space). */
export function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Every well-formed line of `text`; malformed lines are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (left.length < 6 || right.length < 3 || left[4] === '') continue;
    out.push({
      root: unescapeMountPath(left[3]!),
      mountPoint: unescapeMountPath(left[4]!),
      options: left[5]!.split(','),
      fstype: right[0]!,
      source: unescapeMountPath(right[1]!),
      superOptions: right[2]!.split(','),
    });
  }
  return out;
}

/** Mount points at or below `dir`, deepest first. */
export function mountsBelow(dir: string, entries: readonly MountEntry[]): string[] {
  return entries
    .map((e) => e.mountPoint)
    .filter((mp) => mp === dir || mp.startsWith(dir === '/' ? '/' : `${dir}/`))
    .sort((a, b) => b.length - a.length);
}

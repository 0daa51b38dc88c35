// tevatron-ts's extensions to tfjs-node's native binding (native/): the patch that opens the binding to
// them (*.patch, unified diffs against the package's files) and the entry points (*.cc, *.h). Used by
// scripts/setup-tensorflow.ts, which applies the patches to a copy of the binding's sources and compiles
// the extensions with them; no `patch` program is needed.
import fs from 'node:fs';
import path from 'node:path';

export interface NativeExtensions {
  dir: string;
  /** Every file of native/, sorted: the build cache key covers them all. */
  files: string[];
  patches: string[];
  sources: string[];
  headers: string[];
  /** Names the sources register with TEVATRON_EXPORT: what the built binding must export. */
  exports: string[];
}

export function nativeExtensions(dir: string): NativeExtensions {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).sort().map((f) => path.join(dir, f)) : [];
  const sources = files.filter((f) => f.endsWith('.cc'));
  const exports = sources.flatMap((f) => [...fs.readFileSync(f, 'utf8').matchAll(/^TEVATRON_EXPORT\((\w+),/gm)].map((m) => m[1]));
  return { dir, files, patches: files.filter((f) => f.endsWith('.patch')), sources, headers: files.filter((f) => f.endsWith('.h')), exports };
}

interface Hunk {
  oldStart: number;
  before: string[];
  after: string[];
}

/** The files a unified diff changes (paths with the a/ and b/ prefixes stripped) and their hunks. */
export function parseUnifiedDiff(text: string): Map<string, Hunk[]> {
  const files = new Map<string, Hunk[]>();
  const lines = text.split('\n');
  let hunks: Hunk[] | null = null;
  let hunk: Hunk | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith('--- ') && lines[i + 1]?.startsWith('+++ ')) {
      const name = lines[i + 1].slice(4).split('\t')[0].replace(/^b\//, '');
      hunks = [];
      files.set(name, hunks);
      hunk = null;
      i++;
    } else if (line.startsWith('@@ ') && hunks) {
      const m = line.match(/^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@/);
      if (!m) throw new Error(`bad hunk header "${line}"`);
      hunk = { oldStart: Number(m[1]), before: [], after: [] };
      hunks.push(hunk);
    } else if (hunk && /^[ +-]/.test(line)) {
      if (line[0] !== '+') hunk.before.push(line.slice(1));
      if (line[0] !== '-') hunk.after.push(line.slice(1));
    } else if (hunk && line === '') {
      hunk = null; // a blank line ends the hunk (diff -u writes a context line as a single space)
    }
  }
  return files;
}

/**
 * `source` with `hunks` applied: each hunk's old lines must appear exactly, at the stated line or (if the
 * file moved) at exactly one other place. Throws naming the hunk that does not apply.
 */
export function applyHunks(source: string, hunks: Hunk[], name: string): string {
  const lines = source.split('\n');
  let shift = 0;
  hunks.forEach((h, k) => {
    const matchesAt = (at: number) => at >= 0 && at + h.before.length <= lines.length && h.before.every((l, j) => lines[at + j] === l);
    let at = h.oldStart - 1 + shift;
    if (!matchesAt(at)) {
      const found = lines.map((_, i) => i).filter(matchesAt);
      if (found.length !== 1) throw new Error(`hunk ${k + 1} of ${name} (line ${h.oldStart}) ${found.length ? 'matches several places' : 'does not match'}`);
      at = found[0];
    }
    lines.splice(at, h.before.length, ...h.after);
    shift = at - (h.oldStart - 1) + h.after.length - h.before.length;
  });
  return lines.join('\n');
}

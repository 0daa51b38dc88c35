// Hard-negative mining, Tevatron's build_train_hn step: the questions of a training file were searched
// with a trained model; each gets as negatives a sample of the passages that model ranks high which are
// neither its positives nor, for a question with answers, passages that contain one (DPR's has_answer).
// At full size (a 58k-question ranking at depth 100, a 21M-passage corpus) nothing is held as objects:
// pass 0 maps the training file's question ids to indices, pass 1 turns the ranking into typed arrays of
// passage indices, pass 2 finds each needed passage's bytes (in the corpus file itself, or in a spill file
// for gzipped, parquet or JSON-array corpora), pass 3 streams the training file into the output row by row.
import { closeSync, openSync, readSync, rmSync } from 'node:fs';
import { listDataFiles } from './data/load.ts';
import { PyRandom } from './data/pyrandom.ts';
import { blockLineRanges, isJsonArray, isParquet, parseLine, readLineBlocks, readLines, streamRows } from './data/stream.ts';
import { stagedTextFile, writeAll, type StagedTextFile } from './files.ts';
import { hasAnswer, parseRunLine } from './metrics.ts';

export interface MineOptions {
  /** The training file (or a directory of them) whose questions were searched: Tevatron's raw rows. */
  trainFile: string;
  /** search.ts's ranking of those questions: `qid docid score` (best first) or TREC. */
  ranking: string;
  /** The passages {docid, title?, text} that were encoded and searched. */
  corpus: string[];
  saveTo: string;
  /** Negatives come from ranks skipTop+1 .. depth. */
  depth: number;
  skipTop: number;
  nSample: number;
  seed: number;
  /** Append the file's own negatives after the mined ones (instead of replacing them). */
  keepNegatives: boolean;
  /** A line per pass, for progress. */
  log?: (line: string) => void;
}

export interface MineSummary {
  /** Rows of the training file. */
  questions: number;
  written: number;
  /** Rows left without a negative, not written. */
  dropped: number;
  /** Rows whose question the ranking lacks. */
  unranked: number;
  /** Hits in ranks skipTop+1 .. depth over all rows, and those excluded as positives or for containing an answer. */
  hits: number;
  positives: number;
  answers: number;
  mined: number;
  /** Rows with fewer candidates than nSample. */
  short: number;
  /** Mined negatives that were already among the row's own negatives (BM25's, for Tevatron's NQ). */
  overlap: number;
  /** The row's own negatives appended (keepNegatives). */
  kept: number;
  /** Corpus rows whose docid was already located (the first one is used). */
  duplicates: number;
}

export interface MinedPassage {
  docid: string;
  title?: string;
  text: string;
}

/**
 * A docid as a Map key: canonical integers as numbers (V8 stores those below 2^31 unboxed, so millions of
 * keys cost no string each), any other id as its string.
 */
const docKey = (docid: string): string | number => (/^(0|[1-9]\d{0,14})$/.test(docid) ? Number(docid) : docid);

/** An Int32Array that grows. */
class IntList {
  data = new Int32Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Int32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Pass 0: question id -> row index of its first row. */
async function questionIndex(files: string[]): Promise<{ index: Map<string, number>; rows: number }> {
  const index = new Map<string, number>();
  let rows = 0;
  for (const f of files) {
    for await (const { row, where } of streamRows(f)) {
      const r = row as Record<string, unknown>;
      if (typeof r !== 'object' || r === null || Array.isArray(r) || r.query_id === undefined) {
        throw new Error(`${where}: a training row needs "query_id" (Tevatron's raw rows: query_id, query, positive_passages, negative_passages): the ranking names questions by it`);
      }
      const qid = String(r.query_id);
      if (!index.has(qid)) index.set(qid, rows);
      rows++;
    }
  }
  return { index, rows };
}

interface Ranked {
  /** docid key -> passage index. */
  docs: Map<string | number, number>;
  /** The ranking line of each passage's first hit, for errors. */
  docLine: IntList;
  /** Per question row: its first entry in `hits` (-1: not ranked) and how many. */
  start: Int32Array;
  count: Int32Array;
  /** Passage indices of the hits in ranks skipTop+1 .. depth, best first, question by question. */
  hits: IntList;
  queries: number;
}

/**
 * Pass 1. The rank of a hit is its place among its query's lines, as Tevatron's build_train_hn reads a
 * ranking; so each query's lines must be together and best first (search.ts and faiss_retriever write them
 * so), which is checked rather than assumed.
 */
async function readRanking(file: string, questions: Map<string, number>, rows: number, o: MineOptions): Promise<Ranked> {
  const r: Ranked = { docs: new Map(), docLine: new IntList(), start: new Int32Array(rows).fill(-1), count: new Int32Array(rows), hits: new IntList(), queries: 0 };
  let current = -1;
  let position = 0;
  let last = -Infinity;
  for await (const { text, line } of readLines(file)) {
    if (text.trim() === '') continue;
    const at = `${file}:${line}`;
    const { qid, docid, key, trec } = parseRunLine(text, at);
    const q = questions.get(qid);
    if (q === undefined) throw new Error(`${at}: query '${qid}' is not in --train_file ${o.trainFile}; mine with the ranking of that file's own questions`);
    if (q !== current) {
      if (r.start[q] !== -1) throw new Error(`${at}: query '${qid}' appears again after other queries; list each query's hits together, best first, as search.ts writes them`);
      [current, position, last] = [q, 0, -Infinity];
      r.start[q] = r.hits.length;
      r.queries++;
    } else if (key < last) {
      throw new Error(`${at}: query '${qid}' is not best first here (${trec ? 'a lower rank than the line before' : 'a higher score than the line before'}); sort each query's hits best first, as search.ts writes them`);
    }
    last = key;
    if (position >= o.skipTop && position < o.depth) {
      const k = docKey(docid);
      let d = r.docs.get(k);
      if (d === undefined) {
        d = r.docs.size;
        r.docs.set(k, d);
        r.docLine.push(line);
      }
      r.hits.push(d);
      r.count[q]++;
    }
    position++;
  }
  return r;
}

/** Reads the needed passages back by index, from the byte ranges pass 2 found. */
export interface PassageReader {
  get(index: number): MinedPassage;
  close(): void;
}

function passageOf(row: unknown, where: string): { docid: string; row: Record<string, unknown> } {
  const r = row as Record<string, unknown>;
  if (typeof r !== 'object' || r === null || r.docid === undefined || typeof r.text !== 'string') throw new Error(`${where}: a passage needs "docid" and a string "text"`);
  return { docid: String(r.docid), row: r };
}

const minedPassage = (r: Record<string, unknown>): MinedPassage =>
  typeof r.title === 'string' ? { docid: String(r.docid), title: r.title, text: r.text as string } : { docid: String(r.docid), text: r.text as string };

/**
 * Pass 2. A plain JSON Lines corpus is read back where it lies (file, offset, length); the needed rows of a
 * gzipped, parquet or JSON-array corpus are copied to a spill file beside the output, deleted on close.
 */
async function locatePassages(files: string[], docs: Map<string | number, number>, spillPath: string): Promise<PassageReader & { duplicates: number; missing: number; firstMissing: number }> {
  const n = docs.size;
  const source = new Int16Array(n).fill(-1);
  const offset = new Float64Array(n);
  const length = new Int32Array(n);
  const fds: number[] = [];
  let spill = -1;
  let spillAt = 0;
  let spillBuffer: Buffer[] = [];
  let spillBuffered = 0;
  const flush = () => {
    writeAll(fds[spill], Buffer.concat(spillBuffer), null, spillPath);
    [spillBuffer, spillBuffered] = [[], 0];
  };
  let located = 0;
  let duplicates = 0;
  const locate = (docid: string, src: number, at: number, bytes: number): boolean => {
    const i = docs.get(docKey(docid));
    if (i === undefined) return false;
    if (source[i] !== -1) {
      duplicates++;
      return false;
    }
    [source[i], offset[i], length[i]] = [src, at, bytes];
    located++;
    return true;
  };
  const close = () => {
    fds.splice(0).forEach((fd) => closeSync(fd));
    if (spill >= 0) rmSync(spillPath, { force: true });
  };
  try {
    for (const file of files) {
      if (!isParquet(file) && !file.endsWith('.gz') && !(await isJsonArray(file))) {
        fds.push(openSync(file, 'r'));
        const src = fds.length - 1;
        let blockStart = 0;
        for await (const block of readLineBlocks(file)) {
          for (const l of blockLineRanges(block)) {
            if (l.text.trim() === '') continue;
            const { docid } = passageOf(parseLine(file, l).row, `${file}:${l.line}`);
            locate(docid, src, blockStart + l.start, l.end - l.start);
          }
          blockStart += block.bytes.length;
        }
      } else {
        if (spill < 0) {
          try {
            fds.push(openSync(spillPath, 'w+'));
          } catch (e) {
            throw new Error(`${spillPath}: cannot write the passages of ${file} (${(e as Error).message}); check that --save_to's directory is writable`);
          }
          spill = fds.length - 1;
        }
        for await (const { row, where } of streamRows(file)) {
          const p = passageOf(row, where);
          const bytes = Buffer.from(JSON.stringify(minedPassage(p.row)));
          if (!locate(p.docid, spill, spillAt, bytes.length)) continue;
          spillBuffer.push(bytes);
          spillAt += bytes.length;
          if ((spillBuffered += bytes.length) > 1 << 22) flush();
        }
      }
    }
    if (spill >= 0) flush();
  } catch (e) {
    close();
    throw e;
  }
  let scratch = Buffer.alloc(1 << 16);
  return {
    duplicates,
    missing: n - located,
    firstMissing: source.indexOf(-1),
    get(i) {
      if (length[i] > scratch.length) scratch = Buffer.alloc(length[i] * 2);
      for (let at = 0; at < length[i]; ) {
        const got = readSync(fds[source[i]], scratch, at, length[i] - at, offset[i] + at);
        if (got === 0) throw new Error(`${files.join(' ')}: a corpus file became shorter while mining; do not change it during the run`);
        at += got;
      }
      try {
        return minedPassage(JSON.parse(scratch.toString('utf8', 0, length[i])));
      } catch {
        throw new Error(`${files.join(' ')}: a corpus file changed while mining; do not change it during the run`);
      }
    },
    close,
  };
}

/** A row's passage list (`field`; absent: empty), each with a docid when `required`. */
function passageList(r: Record<string, unknown>, field: string, where: string, required: boolean): Record<string, unknown>[] {
  const v = r[field] ?? [];
  if (!Array.isArray(v)) throw new Error(`${where}: "${field}" must be a list of {docid, title, text} objects`);
  v.forEach((p, i) => {
    if (required && (typeof p !== 'object' || p === null || (p as Record<string, unknown>).docid === undefined)) {
      throw new Error(`${where}: "${field}"[${i}] has no "docid"; mining excludes a question's positives by docid`);
    }
  });
  return v as Record<string, unknown>[];
}

/**
 * Writes `saveTo`: each training row with, as `negative_passages`, up to nSample passages drawn from its
 * ranked hits at ranks skipTop+1 .. depth that are not its positives and (when it has `answers`) contain no
 * answer, in `random.Random(seed).sample` order, one generator over the rows in file order; with
 * keepNegatives, then the row's own negatives not drawn. Rows left without a negative are dropped.
 */
export async function mineHardNegatives(o: MineOptions): Promise<MineSummary> {
  if (!(o.depth > 0 && o.skipTop >= 0 && o.skipTop < o.depth)) throw new Error(`--skip_top ${o.skipTop} must be >= 0 and below --depth ${o.depth}`);
  if (!(o.nSample > 0)) throw new Error(`--n_sample must be > 0, got ${o.nSample}`);
  const log = o.log ?? (() => {});
  const trainFiles = listDataFiles(o.trainFile, 'train_file');
  const { index, rows } = await questionIndex(trainFiles);
  log(`${plural(rows, 'training question')} in ${o.trainFile}`);
  const ranked = await readRanking(o.ranking, index, rows, o);
  log(`${o.ranking}: ${plural(ranked.queries, 'query', 'queries')}, ${plural(ranked.hits.length, 'hit')} at ranks ${o.skipTop + 1}-${o.depth} over ${plural(ranked.docs.size, 'passage')}`);
  const passages = await locatePassages(o.corpus, ranked.docs, `${o.saveTo}.passages.tmp-${process.pid}`);
  const s: MineSummary = { questions: rows, written: 0, dropped: 0, unranked: 0, hits: 0, positives: 0, answers: 0, mined: 0, short: 0, overlap: 0, kept: 0, duplicates: passages.duplicates };
  let out: StagedTextFile | undefined;
  try {
    if (passages.missing > 0) {
      const docid = [...ranked.docs].find(([, i]) => i === passages.firstMissing)![0];
      const others = passages.missing > 1 ? ` (nor are ${passages.missing - 1} other ranked passages)` : '';
      throw new Error(`${o.ranking}:${ranked.docLine.data[passages.firstMissing]}: passage '${docid}' is not in --corpus ${o.corpus.join(' ')}${others}; mine with the passages that were encoded and searched`);
    }
    log(`located the ${plural(ranked.docs.size, 'ranked passage')} in ${o.corpus.join(' ')}`);
    out = stagedTextFile(o.saveTo, '--save_to');
    const rng = new PyRandom(o.seed);
    for (const file of trainFiles) {
      for await (const { row, where } of streamRows(file)) {
        const r = row as Record<string, unknown>;
        const positives = new Set(passageList(r, 'positive_passages', where, true).map((p) => ranked.docs.get(docKey(String(p.docid)))));
        const own = passageList(r, 'negative_passages', where, false);
        const answers = Array.isArray(r.answers) ? r.answers.map(String) : [];
        const q = index.get(String(r.query_id))!;
        if (ranked.start[q] < 0) s.unranked++;
        const seen = new Set<number>();
        // a passage is read from the corpus when has_answer needs its text or when it is drawn, not for every hit
        const candidates: { index: number; passage?: MinedPassage }[] = [];
        for (let h = ranked.start[q]; h >= 0 && h < ranked.start[q] + ranked.count[q]; h++) {
          const d = ranked.hits.data[h];
          s.hits++;
          if (seen.has(d)) continue;
          seen.add(d);
          if (positives.has(d)) {
            s.positives++;
            continue;
          }
          const passage = answers.length > 0 ? passages.get(d) : undefined;
          if (passage && hasAnswer(answers, passage.text)) s.answers++;
          else candidates.push({ index: d, passage });
        }
        const sampled = candidates.length > 0 ? rng.sample(candidates, Math.min(o.nSample, candidates.length)) : [];
        const drawn = sampled.map((c) => ({ index: c.index, passage: c.passage ?? passages.get(c.index) }));
        if (candidates.length < o.nSample) s.short++;
        const ownIndices = new Set(own.map((p) => (p?.docid === undefined ? undefined : ranked.docs.get(docKey(String(p.docid))))));
        s.overlap += drawn.filter((c) => ownIndices.has(c.index)).length;
        const drawnIds = new Set(drawn.map((c) => c.passage.docid));
        const extra = o.keepNegatives ? own.filter((p) => !(p?.docid !== undefined && drawnIds.has(String(p.docid)))) : [];
        if (drawn.length + extra.length === 0) {
          s.dropped++;
          continue;
        }
        s.mined += drawn.length;
        s.kept += extra.length;
        s.written++;
        out.write(JSON.stringify({ ...r, negative_passages: [...drawn.map((c) => c.passage), ...extra] }) + '\n');
      }
    }
    out.close();
    return s;
  } catch (e) {
    out?.abort();
    throw e;
  } finally {
    passages.close();
  }
}

/** The one line a mining run ends with: what was written and the counts that say what mining removed. */
export function mineSummaryLine(s: MineSummary, o: Pick<MineOptions, 'saveTo' | 'skipTop' | 'depth'>): string {
  const pct = (a: number, b: number) => `${b > 0 ? ((100 * a) / b).toFixed(1) : '0.0'}%`;
  return [
    `mined ${plural(s.mined, 'negative')} for ${s.written} of ${plural(s.questions, 'question')} into ${o.saveTo} (${(s.mined / Math.max(1, s.written)).toFixed(1)} per question; ${s.short} had fewer candidates than --n_sample)`,
    `of ${plural(s.hits, 'hit')} at ranks ${o.skipTop + 1}-${o.depth}, ${s.positives} were positives and ${s.answers} (${pct(s.answers, s.hits)}) contained an answer (has_answer: false negatives), all excluded`,
    `${s.overlap} mined negatives (${pct(s.overlap, s.mined)}) were already the file's own negatives`,
    ...(s.kept > 0 ? [`${s.kept} of the file's own negatives appended`] : []),
    `${plural(s.dropped, 'question')} dropped without negatives; ${s.unranked} not in the ranking`,
    ...(s.duplicates > 0 ? [`${plural(s.duplicates, 'corpus row')} repeated a docid (the first was used)`] : []),
  ].join('; ');
}

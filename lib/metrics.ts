// Retrieval metrics: recall@k, MRR@10 and nDCG@10 of a run against qrels, and DPR's top-k answer
// accuracy (has_answer: NFD, uncased token-sequence match with DPR's SimpleTokenizer, as pyserini).
import { readFileSync } from 'node:fs';

/** qid -> docid -> relevance (> 0 is relevant). */
export type Qrels = Map<string, Map<string, number>>;
/** qid -> docids, best first. */
export type Run = Map<string, string[]>;

function readLines(path: string, what: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n');
  } catch (e) {
    throw new Error(`${path}: cannot read the ${what} (${(e as Error).message})`);
  }
}

/** `qid<TAB>docid` (relevance 1), `qid<TAB>docid<TAB>rel`, or TREC `qid 0 docid rel`. */
export function parseQrels(path: string): Qrels {
  const qrels: Qrels = new Map();
  readLines(path, 'qrels').forEach((line, i) => {
    if (!line.trim()) return;
    const f = line.trim().split(/\s+/);
    let qid: string, docid: string, rel: number;
    if (f.length === 2) [qid, docid, rel] = [f[0], f[1], 1];
    else if (f.length === 3) [qid, docid, rel] = [f[0], f[1], Number(f[2])];
    else if (f.length === 4) [qid, docid, rel] = [f[0], f[2], Number(f[3])];
    else throw new Error(`${path}:${i + 1}: expected 'qid docid', 'qid docid rel' or TREC 'qid 0 docid rel', got ${f.length} fields`);
    if (!Number.isFinite(rel)) throw new Error(`${path}:${i + 1}: relevance '${f[f.length - 1]}' is not a number`);
    if (!qrels.has(qid)) qrels.set(qid, new Map());
    qrels.get(qid)!.set(docid, rel);
  });
  return qrels;
}

/**
 * One line of a run (`qid docid score`, or TREC's `qid Q0 docid rank score tag`) at `at` (file:line): its query,
 * docid, sort key (ascending is best first: the negated score, or the rank) and whether it was TREC's.
 */
export function parseRunLine(text: string, at: string): { qid: string; docid: string; key: number; trec: boolean } {
  const f = text.trim().split(/\s+/);
  let qid: string, docid: string, key: number;
  if (f.length === 3) [qid, docid, key] = [f[0], f[1], -Number(f[2])];
  else if (f.length === 6) [qid, docid, key] = [f[0], f[2], Number(f[3])];
  else throw new Error(`${at}: expected 'qid docid score' or TREC 'qid Q0 docid rank score tag', got ${f.length} fields`);
  if (!Number.isFinite(key)) throw new Error(`${at}: '${f.length === 3 ? f[2] : f[3]}' is not a number`);
  return { qid, docid, key, trec: f.length === 6 };
}

/**
 * Text `qid docid score` (best first per query) or TREC `qid Q0 docid rank score tag` (ordered by rank).
 * A docid listed twice for a query is kept once, at its best rank; `duplicates` counts the others. A run
 * with no line is an error.
 */
export function parseRun(path: string): { run: Run; duplicates: number } {
  const rows = new Map<string, { docid: string; key: number; line: number }[]>();
  readLines(path, 'run').forEach((line, i) => {
    if (!line.trim()) return;
    const { qid, docid, key } = parseRunLine(line, `${path}:${i + 1}`);
    if (!rows.has(qid)) rows.set(qid, []);
    rows.get(qid)!.push({ docid, key, line: i });
  });
  if (rows.size === 0) throw new Error(`${path}: the run is empty; expected lines 'qid docid score' or TREC 'qid Q0 docid rank score tag' (scripts/search.ts --save_ranking_to writes them)`);
  const run: Run = new Map();
  let duplicates = 0;
  for (const [qid, list] of rows) {
    const ranked = [...new Set(list.sort((a, b) => a.key - b.key || a.line - b.line).map((r) => r.docid))];
    duplicates += list.length - ranked.length;
    run.set(qid, ranked);
  }
  return { run, duplicates };
}

/** A few ids of a collection, for messages. */
const someIds = (ids: Iterable<string>) => [...ids].slice(0, 3).map((id) => `'${id}'`).join(', ');

export interface RankingMetrics {
  queries: number;
  [name: string]: number;
}

/**
 * Means over the queries of the qrels (a query missing from the run scores 0): recall@k (relevant found
 * in the top k / relevant), MRR@10, nDCG@10 with gains equal to the relevance (trec_eval's ndcg_cut). A
 * docid repeated in a ranking counts once, at its first rank. A run that shares no query with the qrels
 * (another query set, or ids written differently) is an error, not all-zero metrics; `names` name the two
 * in that message.
 */
export function rankingMetrics(run: Run, qrels: Qrels, ks: number[] = [1, 5, 10, 20, 100, 1000], names = { run: 'the run', qrels: 'the qrels' }): RankingMetrics {
  const judged = [...qrels].filter(([, rels]) => [...rels.values()].some((r) => r > 0)).map(([qid]) => qid);
  if (judged.length === 0) throw new Error(`${names.qrels}: no query has a relevant passage (relevance > 0); check the file`);
  if (!judged.some((qid) => run.has(qid))) {
    throw new Error(`${names.run} and ${names.qrels} share no query id (run: ${someIds(run.keys())}; qrels: ${someIds(judged)}); evaluate a run against the qrels of its own queries`);
  }
  const sums: Record<string, number> = {};
  const add = (k: string, v: number) => (sums[k] = (sums[k] ?? 0) + v);
  let queries = 0;
  for (const [qid, rels] of qrels) {
    const relevant = [...rels].filter(([, r]) => r > 0);
    if (relevant.length === 0) continue;
    queries++;
    const ranked = [...new Set(run.get(qid) ?? [])];
    for (const k of ks) add(`recall@${k}`, ranked.slice(0, k).filter((d) => (rels.get(d) ?? 0) > 0).length / relevant.length);
    const first = ranked.slice(0, 10).findIndex((d) => (rels.get(d) ?? 0) > 0);
    add('mrr@10', first < 0 ? 0 : 1 / (first + 1));
    const dcg = ranked.slice(0, 10).reduce((s, d, i) => s + Math.max(0, rels.get(d) ?? 0) / Math.log2(i + 2), 0);
    const ideal = relevant.map(([, r]) => r).sort((a, b) => b - a).slice(0, 10).reduce((s, r, i) => s + r / Math.log2(i + 2), 0);
    add('ndcg@10', dcg / ideal);
  }
  const out: RankingMetrics = { queries };
  for (const [k, v] of Object.entries(sums)) out[k] = queries ? v / queries : 0;
  return out;
}

const TOKEN = /[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]/gu;

/** DPR's SimpleTokenizer words, uncased, after NFD normalisation. */
export function dprTokens(text: string): string[] {
  return (text.normalize('NFD').match(TOKEN) ?? []).map((t) => t.toLowerCase());
}

/** Whether any answer's token sequence occurs in the passage text (DPR's has_answer, string mode). */
export function hasAnswer(answers: string[], text: string): boolean {
  const words = dprTokens(text);
  return answers.some((a) => {
    const ans = dprTokens(a);
    if (ans.length === 0) return false;
    for (let i = 0; i + ans.length <= words.length; i++) if (ans.every((t, j) => words[i + j] === t)) return true;
    return false;
  });
}

/** DPR top-k accuracy: the fraction of queries with an answer in one of their first k passages. */
export function topkAccuracy(hasAnswerAt: boolean[][], ks: number[] = [1, 5, 20, 100]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of ks) out[`top${k}`] = hasAnswerAt.filter((row) => row.slice(0, k).some(Boolean)).length / Math.max(1, hasAnswerAt.length);
  return out;
}

/**
 * Recall@k for one relevant passage per query: the fraction of queries whose gold passage is among the
 * k highest scores (ties broken toward the lower index). `scores` is row-major [queries, passages].
 */
export function recallAtK(scores: Float32Array, numPassages: number, gold: number[], k: number): number {
  let hits = 0;
  gold.forEach((g, q) => {
    const row = scores.subarray(q * numPassages, (q + 1) * numPassages);
    let ahead = 0;
    for (let j = 0; j < numPassages; j++) if (row[j] > row[g] || (row[j] === row[g] && j < g)) ahead++;
    if (ahead < k) hits++;
  });
  return hits / gold.length;
}

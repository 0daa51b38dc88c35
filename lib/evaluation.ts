// Evaluation during training: encode held-out queries and a corpus with the current parameters, search
// exactly, and score the ranking against qrels (recall@k, MRR@10, nDCG@10) or, without qrels, against the
// queries' answers (DPR top-k accuracy).
import { readRows, toEncodeItem, type ExampleOptions } from './data/load.ts';
import type { SpecialTokens } from './data/collator.ts';
import { encodeSequences } from './encode.ts';
import { hasAnswer, parseQrels, rankingMetrics, topkAccuracy, type Qrels } from './metrics.ts';
import type { BiEncoder, ParamMap } from './model/types.ts';
import { search } from './search.ts';

export interface EvalSet {
  queries: { id: string; tokens: number[]; answers?: string[] }[];
  passages: { id: string; tokens: number[]; text: string }[];
  qrels: Qrels | null;
}

export function loadEvalSet(queriesFile: string, corpusFile: string, qrelsFile: string | null, o: ExampleOptions): EvalSet {
  const queries = readRows(queriesFile).map(({ row, where }) => {
    const answers = (row as { answers?: unknown }).answers;
    return { ...toEncodeItem(row, where, true, o), answers: Array.isArray(answers) ? answers.map(String) : undefined };
  });
  const passages = readRows(corpusFile).map(({ row, where }) => ({ ...toEncodeItem(row, where, false, o), text: String((row as { text?: unknown }).text ?? '') }));
  const qrels = qrelsFile ? parseQrels(qrelsFile) : null;
  if (!qrels && queries.some((q) => !q.answers)) throw new Error(`${queriesFile}: without --eval_qrels every query needs "answers" to score the ranking against`);
  if (qrels && !queries.some((q) => qrels.has(q.id))) throw new Error(`${queriesFile} and ${qrelsFile} share no query id; pass the qrels of these queries (--eval_qrels)`);
  return { queries, passages, qrels };
}

/** Metrics of the current parameters on an eval set, keyed `eval_<metric>`. */
export async function evaluateRetrieval(model: BiEncoder, params: ParamMap, set: EvalSet, o: { qMaxLen: number; pMaxLen: number; special: SpecialTokens }): Promise<Record<string, number>> {
  const q = await encodeSequences(model.encodeQuery, params, set.queries.map((x) => x.tokens), { maxLen: o.qMaxLen, special: o.special });
  const p = await encodeSequences(model.encodePassage, params, set.passages.map((x) => x.tokens), { maxLen: o.pMaxLen, special: o.special, batchSize: 128 });
  const hits = search({ ids: set.queries.map((x) => x.id), data: q.data, dim: q.dim }, [{ ids: set.passages.map((x) => x.id), data: p.data, dim: p.dim }], 100);
  let metrics: Record<string, number>;
  if (set.qrels) {
    const run = new Map(set.queries.map((x, i) => [x.id, hits[i].map((h) => h.docid)]));
    const { queries: _n, ...rest } = rankingMetrics(run, set.qrels, [1, 5, 20, 100]);
    metrics = rest;
  } else {
    const text = new Map(set.passages.map((x) => [x.id, x.text]));
    metrics = topkAccuracy(set.queries.map((x, i) => hits[i].map((h) => hasAnswer(x.answers!, text.get(h.docid) ?? ''))), [1, 5, 20, 100]);
  }
  return Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`eval_${k}`, v]));
}

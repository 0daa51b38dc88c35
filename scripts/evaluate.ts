// Evaluates any ranking (ours, BM25's, ...): recall@k, MRR@10, nDCG@10 against qrels, and DPR top-k
// answer accuracy from the queries' answers and the passages' text. Prints a table; --save_json too.
import { renameSync, writeFileSync } from 'node:fs';
import { runScript, scriptArgs } from '../lib/cli.ts';
import { streamRows } from '../lib/data/stream.ts';
import { hasAnswer, parseQrels, parseRun, rankingMetrics, topkAccuracy } from '../lib/metrics.ts';

await runScript('evaluate', async () => {
  const a = scriptArgs('evaluate');
  const { run, duplicates } = parseRun(a.run as string);
  if (duplicates > 0) console.error(`warning: ${a.run}: ${duplicates} repeated docid(s) within a query's ranking; each docid counts once, at its best rank`);
  const results: Record<string, number> = {};
  if (a.qrels) Object.assign(results, rankingMetrics(run, parseQrels(a.qrels as string), undefined, { run: `--run ${a.run}`, qrels: `--qrels ${a.qrels}` }));
  if (a.queries) {
    // the corpus is streamed, keeping only the passages the run ranks (the full NQ corpus is 13 GB)
    const ranked = new Set([...run.values()].flat());
    const text = new Map<string, string>();
    for await (const { row, where } of streamRows(a.corpus as string)) {
      const r = row as { docid?: unknown; text?: unknown };
      if (r.docid === undefined || typeof r.text !== 'string') throw new Error(`${where}: a passage needs "docid" and a string "text"`);
      if (ranked.has(String(r.docid))) text.set(String(r.docid), r.text);
    }
    const matrix: boolean[][] = [];
    let found = 0;
    for await (const { row, where } of streamRows(a.queries as string)) {
      const q = row as { query_id?: unknown; answers?: unknown };
      if (q.query_id === undefined || !Array.isArray(q.answers)) throw new Error(`${where}: a query needs "query_id" and a list "answers"`);
      const list = run.get(String(q.query_id));
      if (list) found++;
      matrix.push((list ?? []).map((d) => hasAnswer(q.answers as string[], text.get(d) ?? '')));
    }
    if (found === 0) throw new Error(`--run ${a.run} and --queries ${a.queries} share no query id; evaluate a run against its own queries`);
    Object.assign(results, topkAccuracy(matrix, [1, 5, 20, 100]), { answer_queries: matrix.length });
  }
  for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(16)} ${Number.isInteger(v) ? v : v.toFixed(4)}`);
  if (a.save_json) {
    writeFileSync(`${a.save_json}.tmp`, JSON.stringify(results, null, 2) + '\n');
    renameSync(`${a.save_json}.tmp`, a.save_json as string);
  }
});

// Tevatron's faiss_retriever: exact inner-product top-k of encoded queries over encoded passage shards,
// read in blocks (shards may together be larger than memory).
import { initBackend } from '../lib/backend.ts';
import { expandGlob, runScript, scriptArgs } from '../lib/cli.ts';
import { readEncoded, searchFiles, writeRanking } from '../lib/search.ts';

await runScript('search', async () => {
  const a = scriptArgs('search');
  await initBackend(a.backend as 'auto');
  const matches = (await Promise.all((a.passage_reps as string[]).map(expandGlob))).flat();
  // a glob such as 'emb/corpus.*' also matches each shard's PATH.ids
  const names = new Set(matches);
  const shards = matches.filter((f) => !(f.endsWith('.ids') && names.has(f.slice(0, -'.ids'.length))));
  if (shards.length === 0) throw new Error(`--passage_reps ${(a.passage_reps as string[]).join(' ')}: matches no file`);
  const queries = readEncoded(a.query_reps as string);
  const started = performance.now();
  const tty = process.stderr.isTTY;
  let duplicates = 0;
  let example = '';
  const hits = await searchFiles(queries, shards, a.depth as number, a.batch_size as number, {
    onProgress: tty ? (done, total) => process.stderr.write(`\rsearching ${done}/${total} passages`) : undefined,
    onDuplicate: (q, docid) => {
      duplicates++;
      example ||= `docid ${docid} for query ${queries.ids[q]}`;
    },
  });
  if (tty) process.stderr.write('\n');
  if (duplicates > 0) console.error(`warning: ${duplicates} repeated docid(s) in the rankings (e.g. ${example}): shards that overlap, or a corpus listing a docid twice; each is listed once, with its best score`);
  const seconds = (performance.now() - started) / 1000;
  const out = a.save_ranking_to as string;
  writeRanking(out, queries.ids, hits, a.save_trec ? 'trec' : 'text');
  if (!a.quiet) console.log(`searched ${queries.ids.length} queries over ${shards.length} shard(s) in ${seconds.toFixed(2)} s (${(queries.ids.length / seconds).toFixed(0)} queries/s); ranking in ${out}`);
});

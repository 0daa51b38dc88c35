// Tevatron's encode driver: representations of queries (--encode_is_qry) or passages with a trained
// model, written as a safetensors file (`embeddings` [N, d]) plus PATH.ids, one id per line.
import { encodeSequences } from '../lib/encode.ts';
import { initBackend, type BackendChoice } from '../lib/backend.ts';
import { runScript, scriptArgs } from '../lib/cli.ts';
import { readRows, toEncodeItem } from '../lib/data/load.ts';
import { exampleOptionsFromArgs, loadDenseModel, modelRequestFromArgs } from '../lib/model/pretrained.ts';
import { writeEncoded } from '../lib/search.ts';

await runScript('encode', async () => {
  const a = scriptArgs('encode');
  const backend = await initBackend(a.backend as BackendChoice);
  const loaded = await loadDenseModel({ ...modelRequestFromArgs(a), detectUntied: true });
  loaded.notes.forEach((n) => console.error(n));
  if (loaded.notes.some((n) => n.includes('initialising'))) throw new Error(`${loaded.dir} holds no trained weights; encode with a trained model directory`);
  const tok = loaded.tokenizer;
  const isQuery = a.encode_is_qry as boolean;
  const opts = exampleOptionsFromArgs(tok, a);
  const shards = a.encode_num_shard as number;
  const index = a.encode_shard_index as number;
  // datasets' shard(num, index) with contiguous=False: every num-th row
  const items = (a.encode_in_path as string[]).flatMap((f) => readRows(f)).filter((_, i) => i % shards === index).map(({ row, where }) => toEncodeItem(row, where, isQuery, opts));
  const seen = new Set<string>();
  const repeated = items.filter((x) => {
    const again = seen.has(x.id);
    seen.add(x.id);
    return again;
  });
  if (repeated.length) {
    console.error(`warning: ${repeated.length} row(s) repeat an id listed before (e.g. ${repeated[0].id}); search lists each docid once, with its best score, and evaluation counts it once`);
  }
  const started = performance.now();
  const encoder = isQuery ? loaded.model.encodeQuery : loaded.model.encodePassage;
  const batch = a.per_device_eval_batch_size as number;
  const tty = process.stderr.isTTY;
  const { data, dim } = await encodeSequences(encoder, loaded.params, items.map((x) => x.tokens), {
    maxLen: isQuery ? (a.q_max_len as number) : (a.p_max_len as number),
    special: tok.special,
    batchSize: batch,
    onProgress: tty ? (done) => process.stderr.write(`\rencoding ${done}/${items.length}`) : undefined,
  });
  if (tty) process.stderr.write('\n');
  writeEncoded(a.encoded_save_path as string, { ids: items.map((x) => x.id), data, dim });
  const seconds = (performance.now() - started) / 1000;
  console.log(`encoded ${items.length} ${isQuery ? 'queries' : 'passages'} (shard ${index + 1}/${shards}) on ${backend} in ${seconds.toFixed(1)} s (${(items.length / seconds).toFixed(0)}/s) to ${a.encoded_save_path}`);
});

// Tevatron's encode driver: representations of queries (--encode_is_qry) or passages with a trained
// model, written as a safetensors file (`embeddings` [N, d]) plus PATH.ids, one id per line.
import { encodeSequences } from '../lib/encode.ts';
import { backendInfo, initBackend, type BackendChoice } from '../lib/backend.ts';
import { runScript, scriptArgs } from '../lib/cli.ts';
import { readRows, toEncodeItem } from '../lib/data/load.ts';
import { exampleOptionsFromArgs, loadDenseModel, modelRequestFromArgs } from '../lib/model/pretrained.ts';
import { choosePrecision, precisionEnvironment } from '../lib/precision.ts';
import { writeEncoded } from '../lib/search.ts';

await runScript('encode', async () => {
  const a = scriptArgs('encode');
  const backend = await initBackend(a.backend as BackendChoice);
  const precision = choosePrecision({ bf16: a.bf16 as boolean, fp16: a.fp16 as boolean }, precisionEnvironment(backendInfo()));
  precision.warnings.forEach((w) => console.error(w));
  const loaded = await loadDenseModel({ ...modelRequestFromArgs(a), precision: precision.precision });
  loaded.notes.forEach((n) => console.error(n));
  if (loaded.notes.some((n) => n.includes('initialising'))) throw new Error(`${loaded.dir} holds no trained weights; encode with a trained model directory`);
  const tok = loaded.tokenizer;
  const isQuery = a.encode_is_qry as boolean;
  const opts = exampleOptionsFromArgs(tok, a);
  const shards = a.encode_num_shard as number;
  const index = a.encode_shard_index as number;
  // datasets' shard(num, index) with contiguous=False: every num-th row
  const items = (a.encode_in_path as string[]).flatMap((f) => readRows(f)).filter((_, i) => i % shards === index).map(({ row, where }) => toEncodeItem(row, where, isQuery, opts));
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
  console.log(`encoded ${items.length} ${isQuery ? 'queries' : 'passages'} (shard ${index + 1}/${shards}) on ${backend}${precision.precision === 'float32' ? '' : ` (${precision.precision} products)`} in ${seconds.toFixed(1)} s (${(items.length / seconds).toFixed(0)}/s) to ${a.encoded_save_path}`);
});

// Tevatron's encode driver: representations of queries (--encode_is_qry) or passages with a trained
// model, written as a safetensors file (`embeddings` [N, d]) plus PATH.ids, one id per line. The input is
// streamed: only this shard's rows are tokenized, and rows are written batch by batch as they are encoded.
// Under launch.ts (torchrun, SLURM, mpirun) each of the W processes encodes its own part, to its own file.
import { encodeToFile, rankPath, rankShard, shardOf } from '../lib/encode.ts';
import { backendInfo, initBackend, type BackendChoice } from '../lib/backend.ts';
import { runScript, scriptArgs } from '../lib/cli.ts';
import { toEncodeItem } from '../lib/data/load.ts';
import { streamRows } from '../lib/data/stream.ts';
import { rankFromEnv } from '../lib/dist/env.ts';
import { exampleOptionsFromArgs, loadDenseModel, modelRequestFromArgs } from '../lib/model/pretrained.ts';
import { choosePrecision, precisionEnvironment } from '../lib/precision.ts';

await runScript('encode', async () => {
  const a = scriptArgs('encode');
  const { rank, worldSize, source } = rankFromEnv(process.env, a.local_rank as number); // --local_rank must agree with LOCAL_RANK
  const backend = await initBackend(a.backend as BackendChoice);
  const precision = choosePrecision({ bf16: a.bf16 as boolean, fp16: a.fp16 as boolean }, precisionEnvironment(backendInfo()));
  precision.warnings.forEach((w) => console.error(w));
  const loaded = await loadDenseModel({ ...modelRequestFromArgs(a), detectUntied: true, precision: precision.precision });
  loaded.notes.forEach((n) => console.error(n));
  if (loaded.notes.some((n) => n.includes('initialising'))) throw new Error(`${loaded.dir} holds no trained weights; encode with a trained model directory`);
  const tok = loaded.tokenizer;
  const isQuery = a.encode_is_qry as boolean;
  const opts = exampleOptionsFromArgs(tok, a);
  const { num: shards, index } = rankShard(a.encode_num_shard as number, a.encode_shard_index as number, rank, worldSize);
  const savePath = rankPath(a.encoded_save_path as string, rank, worldSize);
  if (worldSize > 1) console.error(`encode: rank ${rank} of ${worldSize} (${source} variables): shard ${index} of ${shards} to ${savePath}`);
  const rows = async function* () {
    for (const f of a.encode_in_path as string[]) yield* streamRows(f);
  };
  // datasets' shard(num, index) with contiguous=False: every num-th row, counted across the input files
  const seen = new Set<string>();
  let repeated = 0;
  let example = '';
  const items = (async function* () {
    for await (const { row, where } of shardOf(rows(), shards, index)) {
      const item = toEncodeItem(row, where, isQuery, opts);
      if (!seen.has(item.id)) seen.add(item.id);
      else {
        repeated += 1;
        example ||= `${item.id} at ${where}`;
      }
      yield item;
    }
  })();
  const started = performance.now();
  const encoder = isQuery ? loaded.model.encodeQuery : loaded.model.encodePassage;
  const tty = process.stderr.isTTY;
  const { rows: count } = await encodeToFile(encoder, loaded.params, items, savePath, {
    maxLen: isQuery ? (a.q_max_len as number) : (a.p_max_len as number),
    special: tok.special,
    batchSize: a.per_device_eval_batch_size as number,
    onProgress: tty ? (done) => process.stderr.write(`\rencoding ${done}`) : undefined,
  });
  if (tty) process.stderr.write('\n');
  if (repeated) console.error(`warning: ${repeated} row(s) repeat an id listed before (e.g. ${example}); search lists each docid once, with its best score, and evaluation counts it once`);
  const seconds = (performance.now() - started) / 1000;
  console.log(`encoded ${count} ${isQuery ? 'queries' : 'passages'} (shard ${index + 1}/${shards}) on ${backend}${precision.precision === 'float32' ? '' : ` (${precision.precision} products)`} in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)}/s) to ${savePath}`);
});

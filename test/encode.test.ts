// lib/encode.ts: a corpus encoded as a stream to a file equals the in-memory path; datasets' strided
// shards; a failure midway (in the library or the script) leaves nothing behind.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { encodeSequences, encodeToFile, rankPath, rankShard, shardOf } from '../lib/encode.ts';
import { readEncoded } from '../lib/encoded.ts';
import { bagBiEncoder, initBagParams } from '../lib/model/bag.ts';
import { keyFromSeed } from '../lib/random.ts';
import { disposeAll, SPECIAL } from './helpers.ts';

const config = { vocabSize: 40, hiddenSize: 8, outputSize: 6, dropout: 0.1 };
const model = bagBiEncoder(config);
const params = initBagParams(config, keyFromSeed(3));
const rng = new PyRandom(4);
const items = Array.from({ length: 23 }, (_, i) => ({ id: `doc-${i}`, tokens: Array.from({ length: 1 + rng.randbelow(9) }, () => 3 + rng.randbelow(37)) }));
async function* stream<T>(xs: T[], failAt = -1) {
  for (const [i, x] of xs.entries()) {
    if (i === failAt) throw new Error(`row ${i}: bad`);
    yield x;
  }
}
const opts = { maxLen: 6, special: SPECIAL, batchSize: 4 };

test('a stream encoded to a file, batch by batch, equals the in-memory path', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'encode-'));
  const done: number[] = [];
  const shape = await encodeToFile(model.encodePassage, params, stream(items), path.join(dir, 'p.st'), { ...opts, onProgress: (n) => done.push(n) });
  const mem = await encodeSequences(model.encodePassage, params, items.map((x) => x.tokens), opts);
  assert.equal(shape, { rows: 23, dim: 6 });
  assert.equal(done, [4, 8, 12, 16, 20, 23]);
  const back = readEncoded(path.join(dir, 'p.st'));
  assert.equal(back.ids, items.map((x) => x.id));
  assert.is(back.dim, mem.dim);
  assert.equal(Array.from(back.data), Array.from(mem.data));
  assert.equal(await encodeToFile(model.encodePassage, params, stream([]), path.join(dir, 'empty.st'), opts), { rows: 0, dim: 0 });
  assert.equal(readEncoded(path.join(dir, 'empty.st')), { ids: [], data: new Float32Array(0), dim: 0 });
});

test("shards are datasets' shard(contiguous=False): row i in shard i % num", async () => {
  const rows = Array.from({ length: 10 }, (_, i) => i);
  const got = [];
  for (const index of [0, 1, 2]) {
    const shard = [];
    for await (const r of shardOf(stream(rows), 3, index)) shard.push(r);
    got.push(shard);
  }
  assert.equal(got, [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]);
});

test('under W processes: rank r takes shard index + num·r of num·W, and the ranks together cover the flags\' shard once; rank paths', async () => {
  assert.equal([0, 1, 2].map((r) => rankShard(1, 0, r, 3)), [{ num: 3, index: 0 }, { num: 3, index: 1 }, { num: 3, index: 2 }]);
  assert.equal(rankShard(5, 3, 0, 1), { num: 5, index: 3 }, 'one process: the flags as given');
  // shard 1 of 2 on 2 processes: rows 1, 5, 9 (rank 0) and 3, 7 (rank 1) of 0..9, i.e. rows 1, 3, 5, 7, 9 together
  const rows = Array.from({ length: 10 }, (_, i) => i);
  const parts = [];
  for (const r of [0, 1]) {
    const { num, index } = rankShard(2, 1, r, 2);
    const part = [];
    for await (const x of shardOf(stream(rows), num, index)) part.push(x);
    parts.push(part);
  }
  assert.equal(parts, [[1, 5, 9], [3, 7]]);
  assert.is(rankPath('emb/corpus.safetensors', 1, 4), 'emb/corpus.1.safetensors');
  assert.is(rankPath('emb/corpus.03', 2, 4), 'emb/corpus.03.2');
  assert.is(rankPath('emb/corpus.safetensors', 0, 1), 'emb/corpus.safetensors', 'one process: the path as given');
});

test('a failure midway leaves nothing: in the library, and in the script with one line naming file:line', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'encode-'));
  try {
    await encodeToFile(model.encodePassage, params, stream(items, 13), path.join(dir, 'p.st'), opts);
    assert.unreachable('the stream failed');
  } catch (e) {
    assert.is((e as Error).message, 'row 13: bad');
  }
  assert.equal(readdirSync(dir), []);
  const input = path.join(dir, 'corpus.jsonl');
  writeFileSync(input, [...Array.from({ length: 9 }, (_, i) => JSON.stringify({ docid: `d${i}`, text: 'tok1 tok2' })), '{"text": "no id"}', ''].join('\n'));
  const args = ['--model_name_or_path', 'test/fixtures/tiny-bert', '--encode_in_path', input, '--encoded_save_path', path.join(dir, 'out.st'), '--per_device_eval_batch_size', '2', '--p_max_len', '16'];
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/encode.ts', ...args, '--encode_num_shard', '2', '--encode_shard_index', '1'], { encoding: 'utf8' });
  assert.is(r.status, 1);
  assert.match(r.stderr, /^encode: \S*corpus\.jsonl:10: "docid" is missing/m);
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(readdirSync(dir), ['corpus.jsonl']);
  // the bad row is not in shard 0 of 2: that shard encodes
  const ok = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/encode.ts', ...args, '--encode_num_shard', '2', '--encode_shard_index', '0'], { encoding: 'utf8' });
  assert.is(ok.status, 0, ok.stderr);
  assert.equal(readEncoded(path.join(dir, 'out.st')).ids, ['d0', 'd2', 'd4', 'd6', 'd8']);
});

test.after(() => disposeAll(params));
test.run();

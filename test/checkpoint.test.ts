// Checkpoint I/O against checkpoints written by transformers itself (test/fixtures/checkpoint, made by
// make_fixture.py: F32, F16, BF16, sharded, MLM with `bert.` + `cls.*`, old TF-era names, untied), plus
// save → load round trips and atomic saves.
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModelDir, saveModelDir, type Pooler } from '../lib/model/checkpoint.ts';
import { parseSafetensors } from '../lib/model/safetensors.ts';
import type { ParamMap } from '../lib/model/types.ts';
import { disposeAll, rejects } from './helpers.ts';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/checkpoint');
type Ref = Record<string, { shape: number[]; first: number[]; sum: number }>;
const REFERENCE: Record<string, Ref> = JSON.parse(readFileSync(path.join(FIXTURES, 'reference.json'), 'utf8'));

/** Neumaier-compensated sum: close enough to Python's exactly rounded math.fsum for a tight tolerance. */
function sum(values: Float32Array): number {
  let s = 0;
  let c = 0;
  for (const v of values) {
    const t = s + v;
    c += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
    s = t;
  }
  return s + c;
}

async function checkAgainst(params: ParamMap, ref: Ref, what: string): Promise<void> {
  assert.equal(Object.keys(params).sort(), Object.keys(ref).sort(), `${what}: parameter names`);
  for (const [name, r] of Object.entries(ref)) {
    const t = params[name];
    assert.equal(t.shape, r.shape, `${what}: ${name} shape`);
    assert.is(t.dtype, 'float32');
    const data = (await t.data()) as Float32Array;
    assert.equal(Array.from(data.subarray(0, 5)), r.first, `${what}: ${name} first values`);
    const s = sum(data);
    assert.ok(Math.abs(s - r.sum) <= 1e-12 * Math.max(1, Math.abs(r.sum)), `${what}: ${name} sum ${s} vs ${r.sum}`);
  }
}

async function assertSameParams(a: ParamMap, b: ParamMap, what: string): Promise<void> {
  assert.equal(Object.keys(a).sort(), Object.keys(b).sort(), `${what}: names`);
  for (const name of Object.keys(b)) {
    assert.equal(a[name].shape, b[name].shape, `${what}: ${name} shape`);
    const x = new Uint32Array(((await a[name].data()) as Float32Array).slice().buffer);
    const y = new Uint32Array(((await b[name].data()) as Float32Array).slice().buffer);
    assert.ok(x.length === y.length && x.every((v, i) => v === y[i]), `${what}: ${name} differs bitwise`);
  }
}

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'tevatron-ckpt-'));
}

function randomPooler(tied: boolean, inDim = 16, outDim = 8): Pooler {
  const params: ParamMap = { 'linear_q.weight': tf.randomNormal([outDim, inDim], 0, 1, 'float32', 5), 'linear_q.bias': tf.randomNormal([outDim], 0, 1, 'float32', 6) };
  if (!tied) Object.assign(params, { 'linear_p.weight': tf.randomNormal([outDim, inDim], 0, 1, 'float32', 7), 'linear_p.bias': tf.randomNormal([outDim], 0, 1, 'float32', 8) });
  return { config: { input_dim: inDim, output_dim: outDim, tied, normalize: true }, params };
}

for (const variant of ['f32', 'f16', 'bf16', 'sharded', 'mlm', 'legacy']) {
  test(`loads the ${variant} checkpoint written by transformers with its exact float32 values`, async () => {
    const before = tf.memory().numTensors;
    const loaded = await loadModelDir(path.join(FIXTURES, variant));
    assert.is(loaded.untied, false);
    assert.is(loaded.config.model_type, 'bert');
    assert.is(loaded.config.hidden_size, 16);
    assert.is(loaded.pooler, undefined);
    await checkAgainst(loaded.params, REFERENCE[variant], variant);
    assert.is(tf.memory().numTensors - before, Object.keys(loaded.params).length);
    if (variant === 'mlm') assert.ok(loaded.skipped.length > 0 && loaded.skipped.every((n) => n.startsWith('cls.')), `skipped ${loaded.skipped}`);
    if (variant === 'legacy') assert.equal(loaded.skipped, ['bert.embeddings.position_ids']);
    disposeAll(loaded.params);
  });
}

test('F16 and BF16 values are the F32 values rounded, as torch rounds them', async () => {
  const f32 = REFERENCE.f32['encoder.layer.0.attention.self.query.weight'].first;
  const f16 = REFERENCE.f16['encoder.layer.0.attention.self.query.weight'].first;
  const bf16 = REFERENCE.bf16['encoder.layer.0.attention.self.query.weight'].first;
  f32.forEach((x, i) => {
    assert.ok(Math.abs(f16[i] - x) <= Math.abs(x) * 2 ** -11 && f16[i] !== x, `f16 ${f16[i]} vs ${x}`);
    assert.ok(Math.abs(bf16[i] - x) <= Math.abs(x) * 2 ** -8, `bf16 ${bf16[i]} vs ${x}`);
    assert.is(new Uint32Array(new Float32Array([bf16[i]]).buffer)[0] & 0xffff, 0, 'bf16 keeps the top 16 bits only');
  });
});

test('untied directory: query_model/ and passage_model/ load into one map with prefixes', async () => {
  const loaded = await loadModelDir(path.join(FIXTURES, 'untied'));
  assert.is(loaded.untied, true);
  assert.is(loaded.config.model_type, 'bert');
  await checkAgainst(loaded.params, REFERENCE.untied, 'untied');
  await rejects(loadModelDir(path.join(FIXTURES, 'untied'), { untied: false }), /untied model.*untied: true/, 'untied: false');
  disposeAll(loaded.params);
});

test('a plain directory loaded as untied copies its weights to both towers (Tevatron)', async () => {
  const loaded = await loadModelDir(path.join(FIXTURES, 'f32'), { untied: true });
  assert.is(loaded.untied, true);
  const prefixed = (prefix: string): Ref => Object.fromEntries(Object.entries(REFERENCE.f32).map(([k, v]) => [prefix + k, v]));
  await checkAgainst(loaded.params, { ...prefixed('query_model.'), ...prefixed('passage_model.') }, 'copied towers');
  disposeAll(loaded.params);
});

test('clear errors: missing dir, a file, pytorch_model.bin only, pooler.pt only, incomplete shards', async () => {
  const dir = await tempDir();
  try {
    await rejects(loadModelDir(path.join(dir, 'nope')), /nope: no such model directory/, 'missing');
    await writeFile(path.join(dir, 'file'), 'x');
    await rejects(loadModelDir(path.join(dir, 'file')), /is a file/, 'file');
    const bin = path.join(dir, 'bin');
    await mkdir(bin);
    await copyFile(path.join(FIXTURES, 'f32/config.json'), path.join(bin, 'config.json'));
    await writeFile(path.join(bin, 'pytorch_model.bin'), 'pickle');
    const msg = await rejects(loadModelDir(bin), /pytorch_model\.bin.*convert it to safetensors/, 'bin');
    assert.ok(msg.includes(`python -c "from transformers import AutoModel; AutoModel.from_pretrained('${bin}').save_pretrained('${bin}')"`), msg);
    await copyFile(path.join(FIXTURES, 'f32/model.safetensors'), path.join(bin, 'model.safetensors'));
    await writeFile(path.join(bin, 'pooler.pt'), 'pickle');
    await rejects(loadModelDir(bin), /pooler\.pt.*pooler\.safetensors.*save_file/, 'pooler.pt');
    const sharded = path.join(dir, 'sharded');
    await mkdir(sharded);
    for (const f of await readdir(path.join(FIXTURES, 'sharded'))) if (!f.includes('00002')) await copyFile(path.join(FIXTURES, 'sharded', f), path.join(sharded, f));
    await rejects(loadModelDir(sharded), /model-00002-of-00003\.safetensors: cannot read it/, 'missing shard');
    const half = path.join(dir, 'half');
    await mkdir(half);
    await copyFile(path.join(FIXTURES, 'f32/config.json'), path.join(half, 'config.json'));
    await mkdir(path.join(half, 'query_model'));
    await rejects(loadModelDir(half), /has query_model\/ but not passage_model\//, 'one tower');
    await rejects(loadModelDir(dir), /has no config\.json and no model\.safetensors; point to a model directory/, 'empty dir');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('save → load gives identical float32 values and the Hugging Face layout (tied, untied, both poolers)', async () => {
  const dir = await tempDir();
  const src = await loadModelDir(path.join(FIXTURES, 'f16'));
  try {
    await saveModelDir(path.join(dir, 'tied'), src);
    assert.equal((await readdir(path.join(dir, 'tied'))).sort(), ['config.json', 'model.safetensors']);
    const config = JSON.parse(await readFile(path.join(dir, 'tied/config.json'), 'utf8'));
    assert.equal(config.architectures, ['BertModel']);
    assert.is(config.dtype, 'float32', 'the F16 source is saved as F32 and its config must say so');
    assert.is(config.hidden_size, 16);
    const file = parseSafetensors(await readFile(path.join(dir, 'tied/model.safetensors')));
    assert.equal(Object.keys(file.tensors).sort(), Object.keys(REFERENCE.f32).sort(), 'plain BertModel names in the file');
    assert.equal(file.metadata, { format: 'pt' });
    const back = await loadModelDir(path.join(dir, 'tied'));
    assert.is(back.untied, false);
    await assertSameParams(back.params, src.params, 'tied');
    disposeAll(back.params);

    const untied = await loadModelDir(path.join(FIXTURES, 'untied'));
    const pooler = randomPooler(false);
    await saveModelDir(path.join(dir, 'untied'), { config: untied.config, params: untied.params, untied: true, pooler });
    assert.equal((await readdir(path.join(dir, 'untied'))).sort(), ['passage_model', 'pooler.safetensors', 'pooler_config.json', 'query_model']);
    assert.equal((await readdir(path.join(dir, 'untied/passage_model'))).sort(), ['config.json', 'model.safetensors']);
    const back2 = await loadModelDir(path.join(dir, 'untied'));
    assert.is(back2.untied, true);
    await assertSameParams(back2.params, untied.params, 'untied');
    assert.equal(back2.pooler?.config, pooler.config);
    await assertSameParams(back2.pooler!.params, pooler.params, 'untied pooler');
    disposeAll(untied.params, back2.params, back2.pooler!.params, pooler.params);

    const tiedPooler = randomPooler(true);
    await saveModelDir(path.join(dir, 'tied-pooler'), { ...src, pooler: tiedPooler });
    const poolerFile = parseSafetensors(await readFile(path.join(dir, 'tied-pooler/pooler.safetensors')));
    assert.equal(Object.keys(poolerFile.tensors).sort(), ['linear_p.bias', 'linear_p.weight', 'linear_q.bias', 'linear_q.weight'], "Tevatron's state_dict names");
    assert.equal(poolerFile.tensors['linear_p.weight'].data, poolerFile.tensors['linear_q.weight'].data);
    assert.equal(JSON.parse(await readFile(path.join(dir, 'tied-pooler/pooler_config.json'), 'utf8')), { input_dim: 16, output_dim: 8, tied: true, normalize: true });
    const back3 = await loadModelDir(path.join(dir, 'tied-pooler'));
    await assertSameParams(back3.pooler!.params, tiedPooler.params, 'tied pooler (linear_q only: one set of weights to train)');
    await assertSameParams(back3.params, src.params, 'tied with pooler');
    disposeAll(back3.params, back3.pooler!.params, tiedPooler.params);
  } finally {
    disposeAll(src.params);
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failed save leaves no partial directory, and an existing directory as it was', async () => {
  const dir = await tempDir();
  const a = await loadModelDir(path.join(FIXTURES, 'f32'), { untied: true });
  try {
    const broken: ParamMap = { ...a.params, 'passage_model.embeddings.word_embeddings.weight': tf.zeros([30, 16]) };
    broken['passage_model.embeddings.word_embeddings.weight'].dispose(); // fails after query_model/ is written
    await rejects(saveModelDir(path.join(dir, 'out'), { config: a.config, params: broken, untied: true }), /disposed/, 'disposed tensor');
    assert.equal(await readdir(dir), [], 'no out/ and no out.tmp-* left');

    // An output dir that already holds other things (checkpoint-N/): the model is added next to them.
    const out = path.join(dir, 'out');
    await mkdir(path.join(out, 'checkpoint-1'), { recursive: true });
    await rejects(saveModelDir(out, { config: a.config, params: broken, untied: true }), /disposed/, 'disposed tensor, existing dir');
    assert.equal(await readdir(out), ['checkpoint-1']);
    await saveModelDir(out, { config: a.config, params: a.params, untied: true });
    assert.equal((await readdir(out)).sort(), ['checkpoint-1', 'passage_model', 'query_model']);

    // A second save there is refused unless overwrite, which replaces the whole model (no stale towers).
    const tied = await loadModelDir(path.join(FIXTURES, 'mlm'));
    await rejects(saveModelDir(out, tied), /already holds a model \(passage_model, query_model\).*overwrite: true/, 'no overwrite');
    await rejects(saveModelDir(out, { ...tied, params: { ...tied.params, 'pooler.x': broken['passage_model.embeddings.word_embeddings.weight'] } }, { overwrite: true }), /disposed/, 'failed overwrite');
    assert.equal((await readdir(out)).sort(), ['checkpoint-1', 'passage_model', 'query_model'], 'failed overwrite keeps the old model');
    await saveModelDir(out, tied, { overwrite: true });
    assert.equal((await readdir(out)).sort(), ['checkpoint-1', 'config.json', 'model.safetensors']);
    const back = await loadModelDir(out);
    await assertSameParams(back.params, tied.params, 'overwritten');
    disposeAll(tied.params, back.params);
    assert.ok(!existsSync(`${out}.tmp`), 'no staging left');
  } finally {
    disposeAll(a.params);
    await rm(dir, { recursive: true, force: true });
  }
});

test('save rejects mixed tied/untied names and non-float parameters', async () => {
  const dir = await tempDir();
  const w = tf.zeros([2, 2]);
  const i = tf.zeros([2], 'int32');
  try {
    await rejects(saveModelDir(path.join(dir, 'a'), { config: {}, params: { 'query_model.x': w, y: w }, untied: true }), /must all start with query_model\..*y does not/, 'mixed untied');
    await rejects(saveModelDir(path.join(dir, 'a'), { config: {}, params: { 'query_model.x': w }, untied: false }), /untied: true/, 'prefixed tied');
    await rejects(saveModelDir(path.join(dir, 'a'), { config: {}, params: { 'query_model.x': w }, untied: true }), /no passage_model\.\* parameters/, 'one tower');
    await rejects(saveModelDir(path.join(dir, 'a'), { config: {}, params: { x: i }, untied: false }), /x is int32/, 'int param');
    assert.equal(await readdir(dir), []);
  } finally {
    tf.dispose([w, i]);
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();

// End-to-end tests of scripts/train.ts, run as a user runs it (a child process).
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSafetensors } from '../lib/model/safetensors.ts';
import { cpuBf16Instructions, mixedPrecisionSupport } from '../lib/precision.ts';
import { backend, freePort, testUnless } from './helpers.ts';

const root = path.resolve('.');
const fixtures = path.join(root, 'test/fixtures');
const NQ = path.resolve('../shared/data/nq/train.jsonl');
const VOCAB = path.resolve('../shared/data/bert-base-uncased/vocab.txt');
const [NQ_DEV, NQ_CORPUS, NQ_QRELS] = ['dev.queries.jsonl', 'corpus.jsonl', 'dev.qrels.tsv'].map((f) => path.resolve('../shared/data/nq', f));
const tmp = () => mkdtempSync(path.join(tmpdir(), 'train-'));

function train(args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/train.ts'), ...args], { encoding: 'utf8', env: { ...process.env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** tiny-bert with dropout off: the same function on both sides of the PyTorch comparison. */
function tinyBertNoDropout(): string {
  const dir = path.join(tmp(), 'model');
  cpSync(path.join(fixtures, 'tiny-bert'), dir, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }));
  return dir;
}

const weights = (file: string) => parseSafetensors(readFileSync(file)).tensors;

const kernels = mixedPrecisionSupport();
/** What --bf16 (and --fp16 on a CPU) gets here: bfloat16 with the patched binding on a CPU with bf16 instructions. */
const bf16Here = kernels.ok && cpuBf16Instructions() !== null;

// The contract: with lr 1 and adam_epsilon 1, one step from a fresh state moves p by −g/(|g| + 1), so g = d/(1 − |d|).
function stepGradients(variant: string, extra: string[]): { got: Record<string, Float32Array>; expected: Record<string, Float32Array> } {
  const model = tinyBertNoDropout();
  const out = path.join(tmp(), 'out');
  const r = train([
    '--output_dir', out, '--model_name_or_path', model, '--train_dir', path.join(fixtures, 'train-step/train.jsonl'),
    '--per_device_train_batch_size', '4', '--train_n_passages', '2', '--q_max_len', '8', '--p_max_len', '12',
    '--max_steps', '1', '--warmup_ratio', '0', '--weight_decay', '0', '--max_grad_norm', '0', '--learning_rate', '1', '--adam_epsilon', '1',
    ...extra,
  ]);
  assert.is(r.code, 0, r.err);
  const before = weights(path.join(model, 'model.safetensors'));
  const after = weights(path.join(out, 'model.safetensors'));
  const expected = Object.fromEntries(Object.entries(weights(path.join(fixtures, `train-step/grads-${variant}.safetensors`))).map(([k, t]) => [k, t.data]));
  const got = Object.fromEntries(Object.keys(expected).map((name) => [name, before[name].data.map((p0, i) => {
    const d = p0 - after[name].data[i];
    return d / (1 - Math.abs(d));
  })]));
  return { got, expected };
}

const STEP_VARIANTS: [string, string[]][] = [
  ['cls', []],
  ['cls', ['--grad_cache', '--gc_q_chunk_size', '3', '--gc_p_chunk_size', '5']],
  ['mean-norm', ['--pooling', 'mean', '--normalize', '--temperature', '0.05']],
  ['mean-norm', ['--pooling', 'mean', '--normalize', '--temperature', '0.05', '--grad_cache', '--gc_q_chunk_size', '1', '--gc_p_chunk_size', '3']],
];
const describe = (variant: string, extra: string[]) => `${variant}${extra.includes('--grad_cache') ? ', grad cache' : ''}`;

for (const [variant, extra] of STEP_VARIANTS) {
  test(`one step's gradient equals PyTorch + transformers (${describe(variant, extra)})`, () => {
    const { got, expected } = stepGradients(variant, extra);
    const scale = Math.max(...Object.values(expected).map((g) => Math.max(...Array.from(g, Math.abs))));
    let worst = 0;
    for (const [name, g] of Object.entries(expected)) {
      g.forEach((want, i) => (worst = Math.max(worst, Math.abs(got[name][i] - want) / Math.max(Math.abs(want), 0.01 * scale))));
    }
    assert.ok(worst < 1e-3, `relative error ${worst}`);
  });
}

// --bf16: every product rounds its two operands and its result to bfloat16 (unit roundoff u = 2⁻⁸). A
// gradient of tiny-bert (2 layers) is the end of a chain of about 20 products (6 per layer forward and
// again backward, the pooler-free head and the scores in float32), each adding up to 3 independent
// roundings: errors adding in quadrature give a relative L2 error of about √60·u ≈ 8u. The contract
// allows twice that, 16u = 2⁻⁴, and requires more than 2⁻¹² (float32's own error is < 10⁻⁵): the
// products did run in bfloat16.
for (const [variant, extra] of [STEP_VARIANTS[0], STEP_VARIANTS[3]]) {
  testUnless(bf16Here ? null : kernels.ok ? 'this CPU has no bfloat16 instructions' : kernels.reason, `--bf16: one step's gradient is PyTorch's float32 one within bfloat16 rounding, relative L2 error in (2⁻¹², 2⁻⁴] (${describe(variant, extra)})`, () => {
    const { got, expected } = stepGradients(variant, [...extra, '--bf16']);
    let diff = 0;
    let norm = 0;
    for (const [name, g] of Object.entries(expected)) {
      g.forEach((want, i) => {
        diff += (got[name][i] - want) ** 2;
        norm += want ** 2;
      });
    }
    const rel = Math.sqrt(diff / norm);
    assert.ok(rel <= 2 ** -4 && rel > 2 ** -12, `relative L2 error ${rel}`);
  });
}

const COMMON = [
  '--train_dir', path.join(fixtures, 'train-step/train.jsonl'), '--train_n_passages', '2', '--q_max_len', '8', '--p_max_len', '12',
  '--max_steps', '1', '--warmup_ratio', '0', '--weight_decay', '0', '--max_grad_norm', '0', '--learning_rate', '1', '--adam_epsilon', '1',
];

/** `train.ts ARGS` in 2 processes under launch.ts; asserts that they ran on `ddp`'s process group. */
async function launch2(ddp: string, args: string[]): Promise<void> {
  const port = String(await freePort());
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/launch.ts'), '--nproc_per_node', '2', '--master_port', port,
    path.join(root, 'scripts/train.ts'), '--ddp_backend', ddp, ...args], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^process group: ${ddp} \\(2 ranks on 1 host, `, 'm'));
}

function assertSameWeights(dirA: string, dirB: string): void {
  const [a, b] = [weights(path.join(dirA, 'model.safetensors')), weights(path.join(dirB, 'model.safetensors'))];
  for (const k of Object.keys(a)) a[k].data.forEach((v, i) => assert.ok(Math.abs(v - b[k].data[i]) <= 1e-5 * Math.max(1, Math.abs(v)), `${k}[${i}]: ${v} vs ${b[k].data[i]}`));
}

for (const ddp of ['tcp', 'tensorflow']) {
  const skip = ddp === 'tensorflow' && backend !== 'tensorflow' ? `the tensorflow process group runs on the tensorflow backend, not ${backend}` : null;
  testUnless(skip, `launch.ts, ${ddp} process group: 2 processes × batch 2 with --negatives_x_device take the step of 1 process × batch 4 (plain and grad cache; dropout on)`, async () => {
    const model = path.join(fixtures, 'tiny-bert'); // dropout 0.1: each row's masks are the same in either layout
    for (const extra of [[], ['--grad_cache', '--gc_q_chunk_size', '1', '--gc_p_chunk_size', '3']]) {
      const one = path.join(tmp(), 'one');
      const two = path.join(tmp(), 'two');
      assert.is(train(['--output_dir', one, '--model_name_or_path', model, '--per_device_train_batch_size', '4', ...COMMON, ...extra]).code, 0);
      await launch2(ddp, ['--output_dir', two, '--model_name_or_path', model, '--per_device_train_batch_size', '2', '--negatives_x_device', ...COMMON, ...extra]);
      assertSameWeights(one, two);
    }
  });

  // Without --negatives_x_device each rank's gradient is its own batch's; the step applies their mean, which one
  // process computes by accumulating the same two batches (dropout off: a micro-batch draws other masks than a rank).
  testUnless(skip, `launch.ts, ${ddp} process group: 2 processes × batch 2 take the step of 1 process accumulating the same 2 batches (their mean gradient)`, async () => {
    const model = tinyBertNoDropout();
    const one = path.join(tmp(), 'one');
    const two = path.join(tmp(), 'two');
    assert.is(train(['--output_dir', one, '--model_name_or_path', model, '--per_device_train_batch_size', '2', '--gradient_accumulation_steps', '2', ...COMMON]).code, 0);
    await launch2(ddp, ['--output_dir', two, '--model_name_or_path', model, '--per_device_train_batch_size', '2', ...COMMON]);
    assertSameWeights(one, two);
  });
}

testUnless(existsSync(NQ) && existsSync(VOCAB) ? null : `${NQ} or ${VOCAB} is absent`, 'the seed\'s command shape on the shared NQ data: trains, logs, rotates checkpoints, reports', () => {
  const model = path.join(tmp(), 'tiny-uncased');
  cpSync(VOCAB, path.join(model, 'vocab.txt'));
  writeFileSync(path.join(model, 'config.json'), JSON.stringify({ model_type: 'bert', vocab_size: 30522, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 160 }));
  const out = path.join(tmp(), 'model_nq');
  // one NQ query has no BM25 negative; --train_n_passages 2 needs one (Tevatron's prepare scripts drop such rows)
  const train2 = path.join(tmp(), 'train.jsonl');
  writeFileSync(train2, readFileSync(NQ, 'utf8').split('\n').filter((l) => l && JSON.parse(l).negative_passages.length > 0).join('\n') + '\n');
  const r = train(
    (`--output_dir ${out} --model_name_or_path ${model} --train_dir ${train2} --do_train --save_steps 2 --fp16 ` +
      '--per_device_train_batch_size 4 --train_n_passages 2 --learning_rate 1e-5 --q_max_len 32 --p_max_len 156 --num_train_epochs 40 ' +
      '--grad_cache --gc_q_chunk_size 2 --gc_p_chunk_size 3 --max_steps 5 --logging_steps 2 --save_total_limit 2 ' +
      `--eval_queries ${NQ_DEV} --eval_corpus ${NQ_CORPUS} --eval_qrels ${NQ_QRELS} --eval_steps 4`).split(' '),
  );
  assert.is(r.code, 0, r.err);
  // a CPU has no fast float16 kernels: bfloat16 where it can (tensorflow, bf16 instructions), else float32; one warning
  assert.is(r.out.match(/^warning: --fp16/gm)?.length, 1, r.out);
  assert.match(r.out, bf16Here ? /the products run in bfloat16 instead/ : /--fp16 ignored: .*; the products run in float32/);
  assert.equal(readdirSync(out).filter((n) => n.startsWith('checkpoint-')).sort(), ['checkpoint-2', 'checkpoint-4'], 'save_total_limit 2 keeps the last two');
  const logged = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const evals = logged.filter((l) => 'eval_recall@20' in l);
  assert.equal(evals.map((l) => l.step), [4, 5], 'evaluated every eval_steps and at the end');
  assert.ok(evals.every((l) => l['eval_recall@100'] >= l['eval_recall@20'] && l['eval_recall@20'] >= 0));
  const logs = logged.filter((l) => 'loss' in l);
  assert.equal(logs.map((l) => l.step), [2, 4, 5]);
  assert.ok(logs.every((l) => l.loss > 0 && l.learning_rate > 0 && l.grad_norm > 0 && l.samples_per_second > 0));
  const state = JSON.parse(readFileSync(path.join(out, 'trainer_state.json'), 'utf8'));
  assert.is(state.global_step, 5);
  assert.is(state.precision, bf16Here ? 'bfloat16' : 'float32');
  for (const f of ['config.json', 'model.safetensors', 'vocab.txt', 'tokenizer_config.json', 'report.html', 'checkpoint-4/optimizer.safetensors']) assert.ok(existsSync(path.join(out, f)), f);
});

test('bad input: one clear line, exit code ≠ 0, nothing written', () => {
  const model = tinyBertNoDropout();
  const out = path.join(tmp(), 'out');
  const base = ['--output_dir', out, '--model_name_or_path', model, '--train_n_passages', '2', '--q_max_len', '8', '--p_max_len', '12'];
  const bad = path.join(tmp(), 'bad.jsonl');
  writeFileSync(bad, '{"query": "x", "positive_passages": [{"text": "y"}]}\n{"query": "z", "positive_passages": "oops"}\n');
  const cases: [string[], RegExp][] = [
    [[...base, '--train_dir', bad], /bad\.jsonl:2: "positive_passages" must be a list/],
    [[...base, '--train_dir', bad, '--learning_rat', '1'], /unknown flag --learning_rat for train.ts; did you mean --learning_rate\?/],
    [[...base, '--train_dir', path.join(tmp(), 'missing.jsonl')], /no such file or directory/],
    [[...base.slice(0, 2), '--model_name_or_path', path.join(tmp(), 'nomodel'), '--train_dir', bad], /nomodel/],
  ];
  for (const [args, message] of cases) {
    const r = train(args);
    assert.is.not(r.code, 0);
    assert.match(r.err, message);
    assert.is(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
    assert.not.ok(existsSync(out), 'nothing written');
  }
  const full = path.join(tmp(), 'full');
  mkdirSync(full);
  writeFileSync(path.join(full, 'keep.txt'), 'x');
  const r = train(['--output_dir', full, ...base.slice(2), '--train_dir', bad]);
  assert.match(r.err, /--output_dir .* exists and is not empty; pass --overwrite_output_dir/);
});

test.run();

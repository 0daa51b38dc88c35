import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { helpText, parseArgs } from '../lib/args.ts';

const base = ['--model_name_or_path', 'bert-base-uncased', '--output_dir', 'out', '--train_dir', 'train.jsonl'];

test('defaults are Tevatron v1\'s and Hugging Face TrainingArguments\' (reference: tevatron-v1-behaviour.md §6)', () => {
  const a = parseArgs(base, 'train');
  const expected: Record<string, unknown> = {
    untie_encoder: false, add_pooler: false, projection_in_dim: 768, projection_out_dim: 768, normalize: false,
    dataset_proc_num: 12, train_n_passages: 8, positive_passage_no_shuffle: false, negative_passage_no_shuffle: false,
    passage_field_separator: ' ', q_max_len: 32, p_max_len: 128, negatives_x_device: false, grad_cache: false,
    gc_q_chunk_size: 4, gc_p_chunk_size: 32, warmup_ratio: 0.1, overwrite_output_dir: false,
    per_device_train_batch_size: 8, learning_rate: 5e-5, weight_decay: 0, adam_beta1: 0.9, adam_beta2: 0.999,
    adam_epsilon: 1e-8, max_grad_norm: 1, num_train_epochs: 3, max_steps: -1, lr_scheduler_type: 'linear',
    warmup_steps: 0, logging_steps: 500, save_steps: 500, save_total_limit: null, seed: 42,
    gradient_accumulation_steps: 1, fp16: false, dataloader_num_workers: 0, resume_from_checkpoint: null,
    pooling: 'cls', temperature: 1, backend: 'auto', local_rank: -1, ddp_timeout: 1800,
  };
  for (const [k, v] of Object.entries(expected)) assert.equal(a[k], v, k);
});

test('the seed\'s Tevatron command parses as written', () => {
  const a = parseArgs(
    ('--output_dir model_nq --dataset_name Tevatron/wikipedia-nq --model_name_or_path bert-base-uncased --do_train ' +
      '--save_steps 20000 --fp16 --per_device_train_batch_size 32 --train_n_passages 2 --learning_rate 1e-5 ' +
      '--q_max_len 32 --p_max_len 156 --num_train_epochs 40 --grad_cache --gc_q_chunk_size 32 --gc_p_chunk_size 16').split(' '),
    'train',
  );
  assert.equal([a.do_train, a.fp16, a.grad_cache, a.save_steps, a.learning_rate, a.p_max_len, a.num_train_epochs, a.gc_p_chunk_size], [true, true, true, 20000, 1e-5, 156, 40, 16]);
  assert.is(a.dataset_name, 'Tevatron/wikipedia-nq');
});

test('bool forms, --name=value, lists, optional values', () => {
  const a = parseArgs([...base, '--fp16', 'false', '--grad_cache=True', '--normalize', '--resume_from_checkpoint', '--seed=7'], 'train');
  assert.equal([a.fp16, a.grad_cache, a.normalize, a.resume_from_checkpoint, a.seed], [false, true, true, 'true', 7]);
  const e = parseArgs(['--model_name_or_path', 'm', '--encode_in_path', 'a.jsonl', 'b.jsonl', '--encoded_save_path', 'x', '--encode_is_qry'], 'encode');
  assert.equal(e.encode_in_path, ['a.jsonl', 'b.jsonl']);
  assert.is(e.encode_is_qry, true);
});

test('unknown flags, bad values and impossible combinations are one clear error', () => {
  assert.throws(() => parseArgs([...base, '--learning_rat', '1'], 'train'), /unknown flag --learning_rat for train.ts; did you mean --learning_rate\?/);
  assert.throws(() => parseArgs([...base, '--encode_is_qry'], 'train'), /belongs to encode.ts/);
  assert.throws(() => parseArgs([...base, '--train_n_passages', 'two'], 'train'), /--train_n_passages expects an integer, got 'two'/);
  assert.throws(() => parseArgs([...base, '--lr_scheduler_type', 'step'], 'train'), /one of linear, cosine/);
  assert.throws(() => parseArgs(['--output_dir', 'o', '--model_name_or_path', 'm'], 'train'), /training data is required/);
  assert.throws(() => parseArgs([...base, '--grad_cache', '--gc_p_chunk_size', '0'], 'train'), /--gc_p_chunk_size must be > 0/);
  assert.throws(() => parseArgs([...base, '--seed', '1', '--seed', '2'], 'train'), /given twice/);
  assert.throws(() => parseArgs([...base, 'stray'], 'train'), /unexpected argument 'stray'/);
  assert.throws(() => parseArgs(['--model_name_or_path', 'm', '--encode_in_path', 'a', '--encoded_save_path', 'x', '--encode_num_shard', '2', '--encode_shard_index', '2'], 'encode'), /in \[0, 2\)/);
});

test("mine's flags: build_train_hn's depth and n_sample for NQ (100, 30), Hugging Face's seed; search keeps its own depth", () => {
  const m = ['--train_file', 't.jsonl', '--ranking', 'r.txt', '--corpus', 'a.jsonl', 'b.jsonl.gz', '--save_to', 'o.jsonl'];
  const a = parseArgs(m, 'mine');
  assert.equal([a.depth, a.skip_top, a.n_sample, a.seed, a.keep_negatives, a.corpus], [100, 0, 30, 42, false, ['a.jsonl', 'b.jsonl.gz']]);
  assert.is(parseArgs(['--query_reps', 'q', '--passage_reps', 'p', '--save_ranking_to', 'r'], 'search').depth, 1000);
  assert.throws(() => parseArgs([...m, '--skip_top', '100'], 'mine'), /--skip_top must be >= 0 and below --depth 100, got 100/);
  assert.throws(() => parseArgs([...m, '--n_sample', '0'], 'mine'), /--n_sample must be > 0/);
  assert.throws(() => parseArgs(m.slice(2), 'mine'), /--train_file is required/);
  assert.throws(() => parseArgs([...base, '--corpus', 'c'], 'train'), /belongs to evaluate\/mine\.ts/);
});

test('--local_rank in every form torch.distributed.launch passes it, for train and encode; --ddp_timeout must be > 0', () => {
  const enc = ['--model_name_or_path', 'm', '--encode_in_path', 'a.jsonl', '--encoded_save_path', 'x'];
  assert.is(parseArgs(['--local_rank=1', ...base], 'train').local_rank, 1);
  assert.is(parseArgs(['--local-rank=2', ...base], 'train').local_rank, 2);
  assert.is(parseArgs([...enc, '--local_rank', '3'], 'encode').local_rank, 3);
  assert.throws(() => parseArgs(['--local_rank=-2', ...base], 'train'), /--local_rank must be >= 0/);
  assert.is(parseArgs([...base, '--ddp_timeout', '5'], 'train').ddp_timeout, 5);
  assert.throws(() => parseArgs([...base, '--ddp_timeout', '0'], 'train'), /--ddp_timeout must be > 0/);
});

test('a single .json argument is the flag file', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'args-'));
  const file = path.join(dir, 'flags.json');
  writeFileSync(file, JSON.stringify({ model_name_or_path: 'm', output_dir: 'o', train_dir: 't', learning_rate: 1e-5, grad_cache: true }));
  const a = parseArgs([file], 'train');
  assert.equal([a.learning_rate, a.grad_cache, a.seed], [1e-5, true, 42]);
  writeFileSync(file, JSON.stringify({ model_name_or_path: 'm', output_dir: 'o', train_dir: 't', learning_rate_x: 1 }));
  assert.throws(() => parseArgs([file], 'train'), /flags.json: unknown flag --learning_rate_x/);
});

test('--help lists every flag of the script with its default', () => {
  const h = helpText('train');
  assert.ok(h.includes('--gc_q_chunk_size') && h.includes('(default: 4)'));
  assert.not.ok(h.includes('--encode_in_path'));
});

test.run();

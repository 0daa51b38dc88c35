// encode (one process, or one per shard under launch.ts) -> search -> evaluate as a user runs them (child
// processes), on the tiny-bert fixture.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collateSequences } from '../lib/data/collator.ts';
import { loadDenseModel } from '../lib/model/pretrained.ts';
import { cpuBf16Instructions, mixedPrecisionSupport } from '../lib/precision.ts';
import { readEncoded } from '../lib/search.ts';
import { backend } from './helpers.ts';

const root = path.resolve('.');
const model = path.join(root, 'test/fixtures/tiny-bert');
const dir = mkdtempSync(path.join(tmpdir(), 'pipeline-'));
const run = (script: string, args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', script), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${script} failed: ${r.stderr}`);
  return r.stdout;
};

// texts over the fixture's vocabulary (its tokens are words), so every token is known
const words = readFileSync(path.join(model, 'vocab.txt'), 'utf8').split('\n').slice(5, 99).filter((w) => /^tok\d+$/.test(w));
const text = (i: number, n: number) => Array.from({ length: n }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' ');
const corpus = Array.from({ length: 23 }, (_, i) => ({ docid: `d${i}`, title: text(i, 2), text: text(i + 1, 9) }));
const queries = Array.from({ length: 5 }, (_, i) => ({ query_id: `q${i}`, query: text(i * 4 + 1, 3), answers: [text(i * 4 + 2, 2)] }));
writeFileSync(path.join(dir, 'corpus.jsonl'), corpus.map((c) => JSON.stringify(c)).join('\n') + '\n');
writeFileSync(path.join(dir, 'queries.jsonl'), queries.map((q) => JSON.stringify(q)).join('\n') + '\n');
writeFileSync(path.join(dir, 'qrels.tsv'), queries.map((q, i) => `${q.query_id}\td${i * 4}\n`).join(''));

test('encode writes what the model computes; shards are strided and together cover every passage', async () => {
  const common = ['--model_name_or_path', model, '--p_max_len', '16', '--q_max_len', '8', '--per_device_eval_batch_size', '4'];
  run('encode.ts', [...common, '--encode_in_path', path.join(dir, 'queries.jsonl'), '--encode_is_qry', '--encoded_save_path', path.join(dir, 'q.st')]);
  for (const s of [0, 1]) run('encode.ts', [...common, '--encode_in_path', path.join(dir, 'corpus.jsonl'), '--encode_num_shard', '2', '--encode_shard_index', String(s), '--encoded_save_path', path.join(dir, `p${s}.st`)]);
  const [p0, p1] = [readEncoded(path.join(dir, 'p0.st')), readEncoded(path.join(dir, 'p1.st'))];
  assert.equal(p0.ids, corpus.filter((_, i) => i % 2 === 0).map((c) => c.docid));
  assert.equal(p1.ids, corpus.filter((_, i) => i % 2 === 1).map((c) => c.docid));
  // the same passages encoded in-process, title + ' ' + text, CLS pooling
  const m = await loadDenseModel({ modelNameOrPath: model, untied: false, pooler: null, settings: {}, seed: 0 });
  const seqs = corpus.filter((_, i) => i % 2 === 1).map((c) => m.tokenizer.encode(`${c.title} ${c.text}`).slice(0, 16));
  const reps = m.model.encodePassage(m.params, collateSequences(seqs, 16, m.tokenizer.special), null);
  tf.test_util.expectArraysClose(p1.data, await reps.data(), 1e-5);
});

test('launch.ts --nproc_per_node 2: each process encodes its shard to its own file, as two shard runs one after the other', () => {
  const common = ['--model_name_or_path', model, '--p_max_len', '16', '--per_device_eval_batch_size', '4', '--encode_in_path', path.join(dir, 'corpus.jsonl')];
  const launch = (args: string[]) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/launch.ts'), '--nproc_per_node', '2', path.join(root, 'scripts/encode.ts'), ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`launch failed: ${r.stderr}`);
  };
  launch([...common, '--encoded_save_path', path.join(dir, 'par.safetensors')]);
  for (const s of [0, 1]) {
    const [par, seq] = [readEncoded(path.join(dir, `par.${s}.safetensors`)), readEncoded(path.join(dir, `p${s}.st`))];
    assert.equal(par.ids, seq.ids, `rank ${s}: shard ${s} of 2`);
    tf.test_util.expectArraysClose(par.data, seq.data, 1e-6);
  }
  // the flags pick shard 1 of 2, which the two processes split: rows i % 4 == 1 and i % 4 == 3, i.e. p1's even and odd rows
  launch([...common, '--encode_num_shard', '2', '--encode_shard_index', '1', '--encoded_save_path', path.join(dir, 'half')]);
  const p1 = readEncoded(path.join(dir, 'p1.st'));
  for (const r of [0, 1]) {
    const part = readEncoded(path.join(dir, `half.${r}`));
    assert.equal(part.ids, corpus.filter((_, i) => i % 4 === 1 + 2 * r).map((c) => c.docid));
    const rows = p1.ids.flatMap((_, j) => (j % 2 === r ? Array.from(p1.data.subarray(j * p1.dim, (j + 1) * p1.dim)) : []));
    tf.test_util.expectArraysClose(part.data, rows, 1e-6);
  }
});

test('encode --bf16: bfloat16 products where this backend and CPU have them (float32 within bfloat16 rounding), else one warning and float32', async () => {
  const args = ['--model_name_or_path', model, '--p_max_len', '16', '--per_device_eval_batch_size', '4', '--encode_in_path', path.join(dir, 'corpus.jsonl'), '--encode_num_shard', '2', '--encode_shard_index', '1'];
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/encode.ts'), ...args, '--encoded_save_path', path.join(dir, 'bf16-p1.st'), '--bf16'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const f32 = readEncoded(path.join(dir, 'p1.st')).data;
  const bf16 = readEncoded(path.join(dir, 'bf16-p1.st')).data;
  if (!(mixedPrecisionSupport().ok && cpuBf16Instructions())) {
    assert.is(r.stderr.match(/^warning: --bf16 ignored: .*; the products run in float32$/gm)?.length, 1, r.stderr);
    assert.equal(bf16, f32);
    return;
  }
  assert.match(r.stdout, /on tensorflow \(bfloat16 products\)/);
  // forward only: about 12 products of 3 roundings each (u = 2⁻⁸), √36·u = 6u; the step contract's 16u = 2⁻⁴ bounds it
  let diff = 0;
  let norm = 0;
  f32.forEach((v, i) => ((diff += (bf16[i] - v) ** 2), (norm += v ** 2)));
  const rel = Math.sqrt(diff / norm);
  assert.ok(rel <= 2 ** -4 && rel > 2 ** -12, `relative L2 difference ${rel} on ${backend}`);
});

test('search over the shards and evaluate against qrels and answers', () => {
  const out = run('search.ts', ['--query_reps', path.join(dir, 'q.st'), '--passage_reps', path.join(dir, 'p*.st'), '--depth', '5', '--save_ranking_to', path.join(dir, 'run.txt'), '--save_text']);
  assert.match(out, /searched 5 queries over 2 shard/);
  // a glob that also matches the shards' .ids files (par.0.safetensors.ids) searches the shards alone
  const glob = run('search.ts', ['--query_reps', path.join(dir, 'q.st'), '--passage_reps', path.join(dir, 'par.*'), '--depth', '5', '--save_ranking_to', path.join(dir, 'run-par.txt'), '--save_text']);
  assert.match(glob, /searched 5 queries over 2 shard/);
  const docids = (f: string) => readFileSync(path.join(dir, f), 'utf8').trim().split('\n').map((l) => l.split('\t').slice(0, 2).join(' '));
  assert.equal(docids('run-par.txt'), docids('run.txt'));
  const lines = readFileSync(path.join(dir, 'run.txt'), 'utf8').trim().split('\n').map((l) => l.split('\t'));
  assert.is(lines.length, 25);
  for (let q = 0; q < 5; q++) {
    const scores = lines.slice(q * 5, q * 5 + 5).map((l) => Number(l[2]));
    assert.equal(scores, [...scores].sort((a, b) => b - a), 'best first');
  }
  run('evaluate.ts', ['--run', path.join(dir, 'run.txt'), '--qrels', path.join(dir, 'qrels.tsv'), '--queries', path.join(dir, 'queries.jsonl'), '--corpus', path.join(dir, 'corpus.jsonl'), '--save_json', path.join(dir, 'm.json')]);
  const m = JSON.parse(readFileSync(path.join(dir, 'm.json'), 'utf8'));
  const hitsAt5 = queries.filter((q, i) => lines.slice(i * 5, i * 5 + 5).some((l) => l[1] === `d${i * 4}`)).length;
  assert.is(m['recall@5'], hitsAt5 / 5);
  assert.is(m.queries, 5);
});

test.run();

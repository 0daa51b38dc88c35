// Failure cases of a real run, as a user meets them (the scripts as child processes, on the tiny-bert
// fixture with its dropout on): divergence, a kill -9 between the last checkpoint and the final save, what
// a killed run leaves behind, bad output and model directories, untied models at encode time, and runs
// that list a docid twice or do not belong to their qrels.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSafetensors } from '../lib/model/safetensors.ts';
import { readEncoded } from '../lib/search.ts';
import { freePort, runScriptSync } from './helpers.ts';

const root = path.resolve('.');
const MODEL = path.join(root, 'test/fixtures/tiny-bert'); // hidden and attention dropout 0.1
const DATA = path.join(root, 'test/fixtures/train-step/train.jsonl');
const work = mkdtempSync(path.join(tmpdir(), 'reliability-'));
const dir = (name: string) => path.join(work, name);
const small = ['--train_dir', DATA, '--train_n_passages', '2', '--q_max_len', '8', '--p_max_len', '12'];
const train = (args: string[], env: NodeJS.ProcessEnv = {}) => runScriptSync('train', ['--model_name_or_path', MODEL, '--per_device_train_batch_size', '2', ...small, ...args], env);

/** One line on stderr, exit code 1. */
function oneLineError(r: { code: number | null; err: string }, message: RegExp): void {
  assert.is(r.code, 1, r.err);
  assert.match(r.err, message);
  assert.is(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
}

const weights = (file: string) => parseSafetensors(readFileSync(file), file).tensors;
const allFinite = (file: string) => Object.values(weights(file)).every((t) => t.data.every(Number.isFinite));
const loggedSteps = (out: string) => readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step as number);

test('a diverging run stops at the step whose loss is not finite, and saves nothing non-finite', () => {
  // lr 1e30: step 1 moves every weight by ~1e30 (finite, saved as checkpoint-1); step 2's forward overflows
  const out = dir('diverged');
  const r = train(['--output_dir', out, '--max_steps', '4', '--save_steps', '1', '--warmup_ratio', '0', '--learning_rate', '1e30']);
  oneLineError(r, /^train: step 2: the loss is NaN and the gradient norm NaN: training diverged/);
  assert.equal(readdirSync(out).filter((n) => n.startsWith('checkpoint-')), ['checkpoint-1'], 'the checkpoint written before stays; none after');
  assert.ok(allFinite(path.join(out, 'checkpoint-1/model.safetensors')) && allFinite(path.join(out, 'checkpoint-1/optimizer.safetensors')));
  assert.not.ok(existsSync(path.join(out, 'model.safetensors')), 'no final model');
});

test('2 processes: the diverging step stops both ranks (no rank left waiting), the launcher fails', async () => {
  const out = dir('diverged2');
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/launch.ts'), '--nproc_per_node', '2', '--master_port', String(await freePort()),
    path.join(root, 'scripts/train.ts'), '--model_name_or_path', MODEL, ...small, '--output_dir', out, '--max_steps', '4', '--save_steps', '1', '--warmup_ratio', '0', '--learning_rate', '1e30', '--per_device_train_batch_size', '1'],
  { encoding: 'utf8', timeout: 120_000 });
  assert.is.not(r.status, 0, r.stderr);
  assert.is(r.signal, null, 'ended by itself, not by the test timeout');
  assert.match(r.stderr, /step 2: the loss is NaN and the gradient norm NaN \(on rank \d; every rank stops at this step\)/);
  assert.not.ok(existsSync(path.join(out, 'model.safetensors')));
});

/** Spawns a process that exits at once and returns its PID: the PID of a run that is no longer running. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

test('kill -9 between the last checkpoint and the final save, or mid-run: resuming ends with the uninterrupted run\'s bytes', () => {
  const args = ['--max_steps', '4', '--save_steps', '2', '--logging_steps', '1', '--learning_rate', '1e-3'];
  const straight = dir('straight');
  assert.is(train(['--output_dir', straight, ...args]).code, 0);
  const want = readFileSync(path.join(straight, 'model.safetensors'));

  // killed after checkpoint-4 (the last step), before the final model
  const atEnd = dir('killed-at-end');
  const killed = train(['--output_dir', atEnd, ...args], { TEVATRON_TEST_KILL_AT_SAVE: '4' });
  assert.is(killed.signal, 'SIGKILL');
  assert.ok(existsSync(path.join(atEnd, 'checkpoint-4')) && !existsSync(path.join(atEnd, 'model.safetensors')));
  const midRun = dir('killed-mid-run');
  cpSync(atEnd, midRun, { recursive: true });
  const resumed = train(['--output_dir', atEnd, ...args, '--resume_from_checkpoint', 'true']);
  assert.is(resumed.code, 0, resumed.err);
  for (const f of ['model.safetensors', 'config.json', 'vocab.txt', 'tokenizer_config.json', 'tevatron_ts.json', 'trainer_state.json']) assert.ok(existsSync(path.join(atEnd, f)), f);
  assert.ok(readFileSync(path.join(atEnd, 'model.safetensors')).equals(want), 'final model = the uninterrupted run\'s');
  assert.is(JSON.parse(readFileSync(path.join(atEnd, 'trainer_state.json'), 'utf8')).global_step, 4);
  assert.equal(loggedSteps(atEnd), [1, 2, 3, 4]);

  // the same kill seen as one after step 4's metrics but before its checkpoint: resume from checkpoint-2, replay
  // steps 3 and 4 (dropout on), log them once; the half-written checkpoint of the dead run goes, a live one's stays
  const dead = path.join(midRun, `checkpoint-4.tmp-${deadPid()}`);
  const live = path.join(midRun, `checkpoint-6.tmp-${process.pid}`);
  for (const d of [dead, live]) {
    mkdirSync(d);
    writeFileSync(path.join(d, 'model.safetensors'), 'partial');
  }
  const replayed = train(['--output_dir', midRun, ...args, '--resume_from_checkpoint', path.join(midRun, 'checkpoint-2')]);
  assert.is(replayed.code, 0, replayed.err);
  assert.match(replayed.out, /removed checkpoint-4\.tmp-\d+ from .*no longer running/);
  assert.ok(!existsSync(dead) && existsSync(live));
  assert.ok(readFileSync(path.join(midRun, 'model.safetensors')).equals(want), 'bit-identical weights with dropout on');
  assert.equal(loggedSteps(midRun), [1, 2, 3, 4], 'metrics.jsonl cut back to step 2, then steps 3 and 4 once');
});

test('bad output and model directories: one line naming the file', () => {
  const file = dir('a-file');
  writeFileSync(file, 'x');
  oneLineError(train(['--output_dir', file, '--max_steps', '1']), /--output_dir .*a-file is a file, not a directory/);
  const truncated = readFileSync(path.join(MODEL, 'config.json'), 'utf8').slice(0, 100);
  const withWeights = dir('bad-config');
  cpSync(MODEL, withWeights, { recursive: true });
  writeFileSync(path.join(withWeights, 'config.json'), truncated);
  const configOnly = dir('bad-config-only');
  mkdirSync(configOnly);
  cpSync(path.join(MODEL, 'vocab.txt'), path.join(configOnly, 'vocab.txt'));
  writeFileSync(path.join(configOnly, 'config.json'), truncated);
  for (const model of [withWeights, configOnly]) {
    const r = runScriptSync('train', [...small, '--model_name_or_path', model, '--output_dir', dir('never'), '--max_steps', '1']);
    oneLineError(r, new RegExp(`${model}/config\\.json: not a JSON object \\(`));
  }
  assert.not.ok(existsSync(dir('never')));
});

test('encode finds an untied model\'s towers by itself; a contradicting --untie_encoder warns', () => {
  const untied = dir('untied');
  // a large learning rate, so that the two towers differ after one step
  assert.is(train(['--output_dir', untied, '--untie_encoder', '--max_steps', '1', '--warmup_ratio', '0', '--learning_rate', '1e-2']).code, 0);
  const rows = dir('rows.jsonl');
  writeFileSync(rows, [[5, 6, 7], [8, 9]].map((ids, i) => JSON.stringify({ text_id: `t${i}`, text: ids })).join('\n') + '\n');
  const encode = (model: string, side: string[], extra: string[] = []) => {
    const out = dir(`enc-${Math.random().toString(36).slice(2)}`);
    const r = runScriptSync('encode', ['--model_name_or_path', model, '--tokenizer_name', MODEL, '--encode_in_path', rows, '--encoded_save_path', out, '--q_max_len', '8', '--p_max_len', '12', ...side, ...extra]);
    assert.is(r.code, 0, r.err);
    return { data: Array.from(readEncoded(out).data), err: r.err };
  };
  // each tower is a plain Hugging Face model directory: encoding with it alone is the reference
  const query = encode(untied, ['--encode_is_qry']);
  const passage = encode(untied, []);
  assert.equal(query.data, encode(path.join(untied, 'query_model'), ['--encode_is_qry']).data);
  assert.equal(passage.data, encode(path.join(untied, 'passage_model'), []).data);
  assert.not.equal(query.data, passage.data, 'the towers differ');
  const contradicted = encode(untied, ['--encode_is_qry'], ['--untie_encoder', 'false']);
  assert.equal(contradicted.data, query.data);
  assert.match(contradicted.err, /warning: --untie_encoder false ignored: .* holds an untied model/);
  assert.match(encode(MODEL, [], ['--untie_encoder']).err, /warning: --untie_encoder true ignored: .* holds one encoder/);
});

test('overlapping shards and repeated docids: search lists each once and warns; evaluate counts each once; empty and disjoint runs are errors', () => {
  const corpus = dir('corpus.jsonl');
  writeFileSync(corpus, [[10, 11, 12], [13, 14], [15, 16, 17, 18], [19]].map((ids, i) => JSON.stringify({ text_id: `d${i}`, text: ids })).join('\n') + '\n');
  const queries = dir('queries.jsonl');
  writeFileSync(queries, [[10, 11], [15, 17]].map((ids, i) => JSON.stringify({ text_id: `q${i}`, text: ids })).join('\n') + '\n');
  const emb = dir('emb');
  mkdirSync(emb);
  for (const [file, out, extra] of [[corpus, 'c.00', []], [queries, 'q', ['--encode_is_qry']]] as const) {
    assert.is(runScriptSync('encode', ['--model_name_or_path', MODEL, '--encode_in_path', file, '--encoded_save_path', path.join(emb, out), '--q_max_len', '8', '--p_max_len', '12', ...extra]).code, 0);
  }
  for (const ext of ['', '.ids']) cpSync(path.join(emb, `c.00${ext}`), path.join(emb, `c.01${ext}`)); // the same shard twice
  const run = dir('run.txt');
  const searched = runScriptSync('search', ['--query_reps', path.join(emb, 'q'), '--passage_reps', path.join(emb, 'c.*'), '--depth', '3', '--save_ranking_to', run]);
  assert.is(searched.code, 0, searched.err);
  assert.match(searched.err, /warning: \d+ repeated docid\(s\) in the rankings/);
  const lines = readFileSync(run, 'utf8').trim().split('\n').map((l) => l.split('\t'));
  for (const q of ['q0', 'q1']) {
    const docs = lines.filter((l) => l[0] === q).map((l) => l[1]);
    assert.is(docs.length, 3);
    assert.is(new Set(docs).size, 3, `${q}: ${docs}`);
  }

  // a run written by another tool that lists d0 twice for q0: recall@5 counts it once
  const dup = dir('dup.txt');
  writeFileSync(dup, 'q0\td0\t3\nq0\td0\t2\nq0\td1\t1\n');
  const qrels = dir('qrels.tsv');
  writeFileSync(qrels, 'q0\td0\nq0\td3\n');
  const evaluated = runScriptSync('evaluate', ['--run', dup, '--qrels', qrels]);
  assert.is(evaluated.code, 0, evaluated.err);
  assert.match(evaluated.err, /warning: .*dup\.txt: 1 repeated docid\(s\)/);
  assert.match(evaluated.out, /recall@5\s+0\.5000\n/);

  const empty = dir('empty.txt');
  writeFileSync(empty, '');
  oneLineError(runScriptSync('evaluate', ['--run', empty, '--qrels', qrels]), /empty\.txt: the run is empty/);
  const other = dir('other-qrels.tsv');
  writeFileSync(other, '1001\td0\n');
  oneLineError(runScriptSync('evaluate', ['--run', run, '--qrels', other]), /--run .*run\.txt and --qrels .*other-qrels\.tsv share no query id \(run: 'q0', 'q1'; qrels: '1001'\)/);
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test.run();

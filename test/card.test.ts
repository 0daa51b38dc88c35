// The model card (lib/model/card.ts): its front matter parses as YAML (Python's yaml where found, and a
// minimal reader of the subset it writes everywhere) and names what the run used; the body states the
// settings, the final training loss and the last evaluation; and its Python snippet, run with transformers,
// gives the representations this project's encoder gives, for each pooling, with and without a pooler,
// normalisation and untied encoders.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseArgs } from '../lib/args.ts';
import { encodeSequences } from '../lib/encode.ts';
import { modelCard, type CardInput } from '../lib/model/card.ts';
import { bertConfigFromJson } from '../lib/model/bert.ts';
import { initDenseParams, type Pooling } from '../lib/model/dense.ts';
import { disposeModel, loadDenseModel } from '../lib/model/pretrained.ts';
import { writeModel } from '../lib/outputs.ts';
import { keyFromSeed } from '../lib/random.ts';
import { loadTokenizer } from '../lib/tokenizer.ts';
import { pythonWith, testUnless } from './helpers.ts';

const FIXTURES = path.resolve('test/fixtures');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'card-'));
const yamlPy = pythonWith(['yaml']);
const torchPy = pythonWith(['torch', 'transformers', 'safetensors']);

const HISTORY: Record<string, number>[] = [
  { step: 10, epoch: 0.5, loss: 1.5, learning_rate: 1e-5, grad_norm: 3, samples_per_second: 40 },
  { step: 10, epoch: 0.5, 'eval_recall@20': 0.25, 'eval_mrr@10': 0.125 },
  { step: 20, epoch: 1, loss: 0.75, learning_rate: 5e-6, grad_norm: 2, samples_per_second: 41 },
  { step: 20, epoch: 1, 'eval_recall@20': 0.5, 'eval_mrr@10': 0.3125 },
];

function card(flags: string[], extra: Partial<CardInput> = {}): string {
  const args = parseArgs(flags, 'train');
  return modelCard({
    args, settings: { pooling: 'cls', normalize: false, temperature: 1 }, pooler: null, fromScratch: false, worldSize: 1,
    plan: { total: 20, warmup: 2 }, history: HISTORY, repoId: null, backend: 'tensorflow', ...extra,
  });
}

const frontMatter = (text: string) => {
  const m = /^---\n([\s\S]*?)\n---\n/.exec(text);
  assert.ok(m, 'the card starts with a --- front matter block');
  return m[1];
};

/** The subset of YAML the card writes: `key: "json string"` and `key:` followed by `- "json string"` items. */
function minimalYaml(block: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let list: string[] | null = null;
  for (const line of block.split('\n')) {
    const item = /^- (".*")$/.exec(line);
    const scalar = /^([a-z_]+): (".*")$/.exec(line);
    const open = /^([a-z_]+):$/.exec(line);
    if (item && list) list.push(JSON.parse(item[1]));
    else if (scalar) out[scalar[1]] = JSON.parse(scalar[2]);
    else if (open) out[open[1]] = list = [];
    else throw new Error(`front matter line outside the subset: ${line}`);
  }
  return out;
}

function pythonYaml(block: string): unknown {
  const r = spawnSync(yamlPy.python!, ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))'], { input: block, encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const FINETUNE = [
  '--output_dir', '/runs/nq-model', '--model_name_or_path', 'bert-base-uncased', '--dataset_name', 'Tevatron/wikipedia-nq/train',
  '--per_device_train_batch_size', '32', '--train_n_passages', '2', '--negatives_x_device', '--grad_cache', '--gc_q_chunk_size', '16', '--gc_p_chunk_size', '8',
  '--learning_rate', '1e-5', '--q_max_len', '32', '--p_max_len', '156',
];
const FINETUNE_META = { library_name: 'transformers', base_model: 'bert-base-uncased', tags: ['tevatron-ts', 'tevatron', 'dense-retrieval', 'bi-encoder'], datasets: ['Tevatron/wikipedia-nq'], pipeline_tag: 'feature-extraction' };

test('front matter (minimal reader): the hub model it started from, the hub dataset, the pipeline; from scratch on local files: neither', () => {
  assert.equal(minimalYaml(frontMatter(card(FINETUNE))), FINETUNE_META);
  const scratch = card(['--output_dir', 'out', '--model_name_or_path', path.join(FIXTURES, 'tiny-bert'), '--train_dir', 'train.jsonl'], { fromScratch: true });
  assert.equal(minimalYaml(frontMatter(scratch)), { library_name: 'transformers', tags: FINETUNE_META.tags, pipeline_tag: 'feature-extraction' });
  assert.match(scratch, /trained from scratch \(random initial weights\) on local training data \(`train\.jsonl`\)/);
});

testUnless(yamlPy.reason, 'front matter parses with Python\'s yaml into what the run used', () => {
  assert.equal(pythonYaml(frontMatter(card(FINETUNE))), FINETUNE_META);
  const revision = card(['--output_dir', 'o', '--model_name_or_path', 'org/base@v2', '--train_dir', 'x']);
  assert.equal(pythonYaml(frontMatter(revision)), { library_name: 'transformers', base_model: 'org/base', tags: FINETUNE_META.tags, pipeline_tag: 'feature-extraction' });
});

test('the body: settings that matter, the final training loss, the last evaluation, how to encode', () => {
  const text = card(FINETUNE, { settings: { pooling: 'mean', normalize: true, temperature: 0.05 }, pooler: { inDim: 768, outDim: 256 }, worldSize: 4, repoId: 'lab/nq-model' });
  assert.match(text, /^# nq-model$/m);
  assert.match(text, /fine-tuned from \[bert-base-uncased\]\(https:\/\/huggingface\.co\/bert-base-uncased\) on the \[Tevatron\/wikipedia-nq\]/);
  for (const line of [
    '- pooling: mean', '- normalize: true', '- temperature: 0.05', '- pooler: linear 768 → 256, shared', '- processes: 4', '- negatives_x_device: true',
    '- total_train_batch_size: 128', '- grad_cache: on (query chunks of 16, passage chunks of 8 rows)', '- learning_rate: 0.00001', '- warmup_steps: 2', '- training_steps: 20',
    '- final training loss: 0.75 (mean over the last logging window, up to step 20 of 20)', '- last evaluation (step 20): recall@20 0.5, mrr@10 0.3125',
    '| 10 | 0.5 | 0.25 | 0.125 |', '| 20 | 1 | 0.5 | 0.3125 |',
    'npx tsx scripts/encode.ts --model_name_or_path lab/nq-model --encode_in_path queries.jsonl --encode_is_qry --q_max_len 32 --encoded_save_path emb/q',
    'model_id = "lab/nq-model"',
  ]) assert.ok(text.includes(line), `missing: ${line}`);
  assert.match(card(FINETUNE, { history: [] }), /- no training loss was logged\n- no evaluation during training/);
});

/** A model dir with random weights and these settings, as training saves one. */
async function modelDir(untied: boolean, pooling: Pooling, normalize: boolean, pooler: boolean, seed: number): Promise<{ dir: string; input: CardInput }> {
  const dir = path.join(tmp(), 'model');
  const rawConfig = JSON.parse(readFileSync(path.join(FIXTURES, 'tiny-bert/config.json'), 'utf8'));
  const config = bertConfigFromJson(rawConfig, 'config.json');
  const shape = pooler ? { inDim: config.hidden_size, outDim: 16 } : null;
  const params = initDenseParams(config, { untied, pooling, pooler: shape, normalize }, keyFromSeed(seed));
  const settings = { pooling, normalize, temperature: 1 };
  await writeModel(dir, { config: rawConfig, params, untied, pooler: shape, settings, tokenizer: await loadTokenizer(path.join(FIXTURES, 'tiny-bert')) });
  const flags = ['--output_dir', dir, '--model_name_or_path', 'x', '--train_dir', 'x', '--q_max_len', '8', '--p_max_len', '12', ...(untied ? ['--untie_encoder'] : [])];
  return { dir, input: { args: parseArgs(flags, 'train'), settings, pooler: shape, fromScratch: false, worldSize: 1, plan: { total: 1, warmup: 0 }, history: [], repoId: null, backend: 'x' } };
}

const QUERIES = ['tok5 tok17 tok3', 'tok40 tok2'];
const PASSAGES = ['tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12 tok13 tok14', 'tok60 tok61', 'tok7'];

testUnless(torchPy.reason, 'the card\'s transformers snippet gives the representations encode gives (cls/mean/eos, pooler tied and untied, normalize)', async () => {
  const cases = [
    await modelDir(false, 'mean', true, true, 1),
    await modelDir(true, 'eos', false, true, 2),
    await modelDir(false, 'cls', false, false, 3),
  ];
  // Each card's snippet up to its example lines, then the same texts encoded on both sides.
  const snippets = cases.map(({ input }) => /```python\n([\s\S]*?)\nq = encode\(/.exec(modelCard(input))![1]);
  const jobs = path.join(tmp(), 'jobs.json');
  writeFileSync(jobs, JSON.stringify({ snippets, queries: QUERIES, passages: PASSAGES }));
  const driver = `
import json, sys
job = json.load(open(sys.argv[1]))
out = []
for code in job["snippets"]:
    ns = {}
    exec(code, ns)
    out.append({"q": ns["encode"](job["queries"], True).tolist(), "p": ns["encode"](job["passages"], False).tolist()})
print(json.dumps(out))`;
  const r = spawnSync(torchPy.python!, ['-c', driver, jobs], { encoding: 'utf8', timeout: 300_000 });
  assert.is(r.status, 0, r.stderr);
  const python = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { q: number[][]; p: number[][] }[];
  for (const [i, { dir, input }] of cases.entries()) {
    const loaded = await loadDenseModel({ modelNameOrPath: dir, untied: input.args.untie_encoder as boolean, pooler: null, settings: {}, seed: 0 });
    const tok = loaded.tokenizer;
    for (const [side, texts, maxLen] of [['q', QUERIES, 8], ['p', PASSAGES, 12]] as const) {
      const enc = side === 'q' ? loaded.model.encodeQuery : loaded.model.encodePassage;
      const ours = await encodeSequences(enc, loaded.params, texts.map((t) => tok.encode(t)), { maxLen, special: tok.special });
      const theirs = python[i][side].flat();
      assert.is(theirs.length, ours.data.length, `case ${i} ${side}: shape`);
      const scale = Math.max(...theirs.map(Math.abs));
      theirs.forEach((v, j) => assert.ok(Math.abs(v - ours.data[j]) <= 1e-4 * scale, `case ${i} (${input.settings.pooling}) ${side}[${j}]: ${ours.data[j]} vs transformers ${v}`));
    }
    disposeModel(loaded);
  }
});

test.run();

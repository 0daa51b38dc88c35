// The model card (README.md) a training run writes beside its model, as Hugging Face's Trainer does: YAML
// front matter for the hub (library_name, base_model, tags, datasets, pipeline_tag), the settings that
// make a dense retriever what it is (pooling, normalisation, temperature, batch and negatives, grad cache,
// processes), the final training loss, the last evaluation, and how to encode with this project and with
// Python's transformers — the same pooling, pooler and normalisation as encode.ts.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Args } from '../args.ts';
import { parseDatasetName } from '../data/hub-dataset.ts';
import { parseHubId } from './hub.ts';
import type { EncoderSettings } from './pretrained.ts';

export interface CardInput {
  /** The run's flags. */
  args: Args;
  settings: EncoderSettings;
  pooler: { inDim: number; outDim: number } | null;
  /** The model started from random weights (a config-only directory). */
  fromScratch: boolean;
  worldSize: number;
  plan: { total: number; warmup: number };
  /** The trainer's log history: training records (with loss) and evaluation records (eval_*). */
  history: Record<string, number>[];
  /** The hub repo the model is pushed to, if any: the snippets load it from there. */
  repoId: string | null;
  /** The backend that trained it, as describeBackend() says. */
  backend: string;
}

/** A YAML scalar: JSON's double-quoted string is YAML's too (U+2028/9 escaped, which JSON leaves raw). */
const yamlString = (s: string) => JSON.stringify(s).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');

function frontMatter(fields: Record<string, string | string[] | null>): string {
  const lines = ['---'];
  for (const [k, v] of Object.entries(fields)) {
    if (v === null || (Array.isArray(v) && v.length === 0)) continue;
    if (Array.isArray(v)) lines.push(`${k}:`, ...v.map((x) => `- ${yamlString(x)}`));
    else lines.push(`${k}: ${yamlString(v)}`);
  }
  return [...lines, '---'].join('\n');
}

/** The hub model the run started from: a hub id that is not a local directory (as Hugging Face's card decides). */
export function hubBaseModel(modelNameOrPath: string): string | null {
  if (existsSync(modelNameOrPath)) return null;
  return parseHubId(modelNameOrPath)?.repo ?? null;
}

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const round = (v: number) => Number(v.toPrecision(4));

function pythonSnippet(where: string, c: CardInput): string {
  const untied = c.args.untie_encoder as boolean;
  const qLen = c.args.q_max_len as number;
  const pLen = c.args.p_max_len as number;
  const pooling = {
    cls: 'rep = hidden[:, 0]  # cls pooling',
    mean: 'rep = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # mean over real tokens',
    eos: 'rep = hidden[torch.arange(len(texts)), mask.sum(1).long() - 1]  # the last real token',
  }[c.settings.pooling];
  return [
    'import os',
    'import torch',
    'from transformers import AutoModel, AutoTokenizer',
    '',
    `model_id = ${JSON.stringify(where)}`,
    'tokenizer = AutoTokenizer.from_pretrained(model_id)',
    ...(untied
      ? ['query_model = AutoModel.from_pretrained(model_id, subfolder="query_model").eval()', 'passage_model = AutoModel.from_pretrained(model_id, subfolder="passage_model").eval()']
      : ['query_model = passage_model = AutoModel.from_pretrained(model_id).eval()']),
    ...(c.pooler
      ? [
          'from safetensors.torch import load_file',
          'if os.path.isdir(model_id):',
          '    pooler_file = os.path.join(model_id, "pooler.safetensors")',
          'else:',
          '    from huggingface_hub import hf_hub_download',
          '    pooler_file = hf_hub_download(model_id, "pooler.safetensors")',
          'pooler = load_file(pooler_file)  # linear_q.* for queries, linear_p.* for passages',
        ]
      : []),
    '',
    '',
    'def encode(texts, is_query):',
    '    model = query_model if is_query else passage_model',
    `    batch = tokenizer(texts, padding=True, truncation=True, max_length=${qLen} if is_query else ${pLen}, return_tensors="pt")`,
    '    with torch.no_grad():',
    '        hidden = model(**batch).last_hidden_state',
    ...(c.settings.pooling === 'cls' ? [] : ['    mask = batch["attention_mask"].to(hidden.dtype)']),
    `    ${pooling}`,
    ...(c.pooler ? ['    lin = "linear_q" if is_query else "linear_p"', '    rep = rep @ pooler[f"{lin}.weight"].T + pooler[f"{lin}.bias"]'] : []),
    ...(c.settings.normalize ? ['    rep = torch.nn.functional.normalize(rep, dim=-1)'] : []),
    '    return rep',
    '',
    '',
    'q = encode(["who wrote hamlet?"], is_query=True)',
    'p = encode(["Hamlet Hamlet is a tragedy written by William Shakespeare."], is_query=False)  # title + " " + text',
    'print(q @ p.T)',
  ].join('\n');
}

/** README.md for the trained model. */
export function modelCard(c: CardInput): string {
  const a = c.args;
  const outputDir = a.output_dir as string;
  const name = c.repoId?.split('/').pop() ?? path.basename(path.resolve(outputDir));
  const where = c.repoId ?? outputDir;
  const base = hubBaseModel(a.model_name_or_path as string);
  const datasets = a.dataset_name ? [parseDatasetName(a.dataset_name as string).repo] : [];
  const untied = a.untie_encoder as boolean;
  const logs = c.history.filter((r) => typeof r.loss === 'number');
  const evals = c.history.filter((r) => Object.keys(r).some((k) => k.startsWith('eval_')));
  const lastLog = logs.at(-1);
  const lastEval = evals.at(-1);
  const metricsOf = (r: Record<string, number>) => Object.entries(r).filter(([k]) => k.startsWith('eval_')).map(([k, v]) => [k.slice(5), v] as const);
  const B = a.per_device_train_batch_size as number;
  const accum = a.gradient_accumulation_steps as number;
  const n = a.train_n_passages as number;

  const origin = c.fromScratch ? 'trained from scratch (random initial weights)' : base ? `fine-tuned from [${base}](https://huggingface.co/${base})` : `fine-tuned from \`${a.model_name_or_path}\``;
  const data = datasets.length ? `the [${datasets[0]}](https://huggingface.co/datasets/${datasets[0]}) dataset` : a.train_dir ? `local training data (\`${a.train_dir}\`)` : 'an unknown dataset';
  const hyper: [string, string | number | boolean][] = [
    ['pooling', c.settings.pooling],
    ['normalize', c.settings.normalize],
    ['temperature', c.settings.temperature],
    ['pooler', c.pooler ? `linear ${c.pooler.inDim} → ${c.pooler.outDim}${untied ? ', one per side' : ', shared'}` : 'none'],
    ['untie_encoder', untied],
    ['q_max_len / p_max_len', `${a.q_max_len} / ${a.p_max_len}`],
    ['train_batch_size (queries per process)', B],
    ['train_n_passages', `${n} (1 positive + ${n - 1} hard negative${n - 1 === 1 ? '' : 's'} per query; the other queries' passages are in-batch negatives)`],
    ['processes', c.worldSize],
    ['negatives_x_device', a.negatives_x_device as boolean],
    ...(accum > 1 ? [['gradient_accumulation_steps', accum] as [string, number]] : []),
    ['total_train_batch_size', B * c.worldSize * accum],
    ['grad_cache', a.grad_cache ? `on (query chunks of ${a.gc_q_chunk_size}, passage chunks of ${a.gc_p_chunk_size} rows)` : 'off'],
    ['learning_rate', a.learning_rate as number],
    ['optimizer', `AdamW (betas ${a.adam_beta1}, ${a.adam_beta2}; epsilon ${a.adam_epsilon}; weight_decay ${a.weight_decay})`],
    ['lr_scheduler_type', a.lr_scheduler_type as string],
    ['warmup_steps', c.plan.warmup],
    ['max_grad_norm', a.max_grad_norm as number],
    ['training_steps', c.plan.total],
    ['seed', a.seed as number],
  ];
  const evalTable = evals.length
    ? [
        `| step | epoch | ${metricsOf(evals[0]).map(([k]) => k).join(' | ')} |`,
        `| --- | --- | ${metricsOf(evals[0]).map(() => '---').join(' | ')} |`,
        ...evals.map((r) => `| ${r.step} | ${round(r.epoch)} | ${metricsOf(r).map(([, v]) => round(v)).join(' | ')} |`),
      ].join('\n')
    : '';
  const encodeFlags = `--model_name_or_path ${where}${untied ? ' --untie_encoder' : ''}`;
  return `${frontMatter({
    library_name: 'transformers',
    base_model: base,
    tags: ['tevatron-ts', 'tevatron', 'dense-retrieval', 'bi-encoder'],
    datasets,
    pipeline_tag: 'feature-extraction',
  })}

<!-- Written by tevatron-ts at the end of training from what the run knew; proofread and complete it. -->

# ${name}

A dense retriever (BERT bi-encoder${untied ? ', separate query and passage encoders' : ''}) ${origin} on ${data} with
tevatron-ts, a TypeScript port of [Tevatron](https://github.com/texttron/tevatron)'s recipe: a contrastive loss over
in-batch and hard negatives${a.grad_cache ? ', with gradient caching' : ''}. Run: ${(a.run_name as string | null) ?? outputDir}.

## Results

${lastLog ? `- final training loss: ${round(lastLog.loss)} (mean over the last logging window, up to step ${lastLog.step} of ${c.plan.total})` : '- no training loss was logged'}
${lastEval ? `- last evaluation (step ${lastEval.step}): ${metricsOf(lastEval).map(([k, v]) => `${k} ${round(v)}`).join(', ')}` : '- no evaluation during training'}
${evalTable ? `\n${evalTable}\n` : ''}
## Training settings

${hyper.map(([k, v]) => `- ${k}: ${v}`).join('\n')}

## Use

With this project (queries \`{query_id, query}\`, passages \`{docid, title?, text}\`, JSONL); the pooling, pooler
and normalisation are read from \`tevatron_ts.json\`:

\`\`\`bash
npx tsx scripts/encode.ts ${encodeFlags} --encode_in_path queries.jsonl --encode_is_qry --q_max_len ${a.q_max_len} --encoded_save_path emb/q
npx tsx scripts/encode.ts ${encodeFlags} --encode_in_path corpus.jsonl --p_max_len ${a.p_max_len} --encoded_save_path emb/corpus
npx tsx scripts/search.ts --query_reps emb/q --passage_reps emb/corpus --depth 100 --save_ranking_to run.txt
\`\`\`

With Python's transformers (the same representations):

\`\`\`python
${pythonSnippet(where, c)}
\`\`\`

## Framework versions

- tevatron-ts ${VERSION}
- TensorFlow.js ${tf.version_core}, backend ${c.backend}
`;
}

// One declarative table of every command-line flag — Tevatron v1's ModelArguments, DataArguments and
// TevatronTrainingArguments and the Hugging Face TrainingArguments its recipes use, with their
// defaults — and the parser that reads argv (or a single .json flag file, as HfArgumentParser does),
// validates it and writes --help.
import { readFileSync } from 'node:fs';
import { errorText } from './errors.ts';

export type Script = 'train' | 'encode' | 'search' | 'evaluate' | 'mine' | 'push_to_hub';
type Kind = 'string' | 'int' | 'float' | 'bool' | 'list' | 'optional';

interface Flag {
  name: string;
  kind: Kind;
  default: string | number | boolean | string[] | null;
  help: string;
  scripts: readonly Script[];
  choices?: readonly string[];
  group: 'model' | 'data' | 'training' | 'tevatron-ts';
}

const T: Script[] = ['train'];
const E: Script[] = ['encode'];
const TE: Script[] = ['train', 'encode'];
const S: Script[] = ['search'];
const V: Script[] = ['evaluate'];
const TP: Script[] = ['train', 'push_to_hub'];
const MN: Script[] = ['mine'];

/** Every flag. Defaults are Tevatron v1's, and Hugging Face's (transformers 4.x) for TrainingArguments. */
export const FLAGS: readonly Flag[] = [
  // ModelArguments
  { name: 'model_name_or_path', kind: 'string', default: null, help: 'model directory or hub id (org/name[@revision])', scripts: TE, group: 'model' },
  { name: 'config_name', kind: 'string', default: null, help: 'config directory or hub id, if not the model\'s', scripts: TE, group: 'model' },
  { name: 'tokenizer_name', kind: 'string', default: null, help: 'tokenizer directory or hub id, if not the model\'s', scripts: TE, group: 'model' },
  { name: 'cache_dir', kind: 'string', default: null, help: 'where hub downloads are cached (default: the Hugging Face cache under HF_HOME)', scripts: TE, group: 'model' },
  { name: 'untie_encoder', kind: 'bool', default: false, help: 'separate query and passage encoders', scripts: TE, group: 'model' },
  { name: 'add_pooler', kind: 'bool', default: false, help: 'a linear projection after pooling', scripts: TE, group: 'model' },
  { name: 'projection_in_dim', kind: 'int', default: 768, help: 'pooler input size', scripts: TE, group: 'model' },
  { name: 'projection_out_dim', kind: 'int', default: 768, help: 'pooler output size', scripts: TE, group: 'model' },
  { name: 'normalize', kind: 'bool', default: false, help: 'L2-normalise representations (with or without a pooler)', scripts: TE, group: 'model' },
  { name: 'pooling', kind: 'string', default: 'cls', choices: ['cls', 'mean', 'eos'], help: 'cls (Tevatron v1), mean over real tokens, or the last real token', scripts: TE, group: 'model' },
  { name: 'temperature', kind: 'float', default: 1.0, help: 'scores are divided by it in the loss (Tevatron v1: 1)', scripts: T, group: 'model' },
  // DataArguments
  { name: 'train_dir', kind: 'string', default: null, help: 'a .json/.jsonl(.gz) file or a directory of them', scripts: T, group: 'data' },
  { name: 'dataset_name', kind: 'string', default: null, help: 'hub dataset org/name[:config][/split]', scripts: TE, group: 'data' },
  { name: 'dataset_proc_num', kind: 'int', default: 12, help: 'tokenizer processes', scripts: TE, group: 'data' },
  { name: 'train_n_passages', kind: 'int', default: 8, help: 'passages per query: 1 positive + n-1 negatives', scripts: T, group: 'data' },
  { name: 'positive_passage_no_shuffle', kind: 'bool', default: false, help: 'always the first positive', scripts: T, group: 'data' },
  { name: 'negative_passage_no_shuffle', kind: 'bool', default: false, help: 'always the first n-1 negatives', scripts: T, group: 'data' },
  { name: 'passage_field_separator', kind: 'string', default: ' ', help: "between title and text: a string, or a tokenizer attribute such as sep_token", scripts: TE, group: 'data' },
  { name: 'q_max_len', kind: 'int', default: 32, help: 'query length in tokens, [CLS] and [SEP] included', scripts: TE, group: 'data' },
  { name: 'p_max_len', kind: 'int', default: 128, help: 'passage length in tokens, [CLS] and [SEP] included', scripts: TE, group: 'data' },
  { name: 'encode_in_path', kind: 'list', default: null, help: 'files to encode (queries {query_id, query} or passages {docid, title?, text})', scripts: E, group: 'data' },
  { name: 'encoded_save_path', kind: 'string', default: null, help: 'output: a safetensors file with `embeddings` [N, d], ids in PATH.ids', scripts: E, group: 'data' },
  { name: 'encode_is_qry', kind: 'bool', default: false, help: 'encode queries (q_max_len) instead of passages', scripts: E, group: 'data' },
  { name: 'encode_num_shard', kind: 'int', default: 1, help: 'split the input into this many shards', scripts: E, group: 'data' },
  { name: 'encode_shard_index', kind: 'int', default: 0, help: 'which shard to encode', scripts: E, group: 'data' },
  // TevatronTrainingArguments
  { name: 'negatives_x_device', kind: 'bool', default: false, help: 'share in-batch negatives across processes', scripts: T, group: 'training' },
  { name: 'grad_cache', kind: 'bool', default: false, help: 'gradient caching: large batches in the memory of a chunk', scripts: T, group: 'training' },
  { name: 'gc_q_chunk_size', kind: 'int', default: 4, help: 'grad-cache query rows per chunk', scripts: T, group: 'training' },
  { name: 'gc_p_chunk_size', kind: 'int', default: 32, help: 'grad-cache passage rows per chunk', scripts: T, group: 'training' },
  { name: 'warmup_ratio', kind: 'float', default: 0.1, help: 'warmup fraction of the steps (Tevatron: 0.1)', scripts: T, group: 'training' },
  { name: 'do_encode', kind: 'bool', default: false, help: 'accepted for compatibility; unused', scripts: E, group: 'training' },
  // Hugging Face TrainingArguments
  { name: 'output_dir', kind: 'string', default: null, help: 'where checkpoints, the model and logs go', scripts: ['train', 'encode', 'push_to_hub'], group: 'training' },
  { name: 'overwrite_output_dir', kind: 'bool', default: false, help: 'allow a non-empty output_dir', scripts: T, group: 'training' },
  { name: 'do_train', kind: 'bool', default: false, help: 'train (accepted as in Tevatron)', scripts: T, group: 'training' },
  { name: 'per_device_train_batch_size', kind: 'int', default: 8, help: 'queries per process per step', scripts: T, group: 'training' },
  { name: 'per_device_eval_batch_size', kind: 'int', default: 8, help: 'sequences per encode batch', scripts: E, group: 'training' },
  { name: 'learning_rate', kind: 'float', default: 5e-5, help: 'peak learning rate', scripts: T, group: 'training' },
  { name: 'weight_decay', kind: 'float', default: 0.0, help: 'AdamW decoupled weight decay (not on biases and LayerNorm)', scripts: T, group: 'training' },
  { name: 'adam_beta1', kind: 'float', default: 0.9, help: 'AdamW beta1', scripts: T, group: 'training' },
  { name: 'adam_beta2', kind: 'float', default: 0.999, help: 'AdamW beta2', scripts: T, group: 'training' },
  { name: 'adam_epsilon', kind: 'float', default: 1e-8, help: 'AdamW epsilon', scripts: T, group: 'training' },
  { name: 'max_grad_norm', kind: 'float', default: 1.0, help: 'global gradient-norm clip (0 disables)', scripts: T, group: 'training' },
  { name: 'num_train_epochs', kind: 'float', default: 3, help: 'epochs', scripts: T, group: 'training' },
  { name: 'max_steps', kind: 'int', default: -1, help: 'optimizer steps; overrides num_train_epochs when > 0', scripts: T, group: 'training' },
  { name: 'lr_scheduler_type', kind: 'string', default: 'linear', choices: ['linear', 'cosine', 'constant', 'constant_with_warmup'], help: 'learning-rate schedule', scripts: T, group: 'training' },
  { name: 'warmup_steps', kind: 'int', default: 0, help: 'warmup steps; wins over warmup_ratio when > 0', scripts: T, group: 'training' },
  { name: 'logging_steps', kind: 'int', default: 500, help: 'log every N steps', scripts: T, group: 'training' },
  { name: 'save_steps', kind: 'int', default: 500, help: 'checkpoint every N steps', scripts: T, group: 'training' },
  { name: 'save_total_limit', kind: 'int', default: null, help: 'keep at most N checkpoints', scripts: T, group: 'training' },
  { name: 'seed', kind: 'int', default: 42, help: 'random seed', scripts: ['train', 'mine'], group: 'training' },
  { name: 'gradient_accumulation_steps', kind: 'int', default: 1, help: 'micro-batches per optimizer step', scripts: T, group: 'training' },
  { name: 'bf16', kind: 'bool', default: false, help: 'bfloat16 matrix products, float32 weights/optimizer/loss (CPUs with bf16 instructions, GPUs; else float32 with a warning)', scripts: TE, group: 'training' },
  { name: 'fp16', kind: 'bool', default: false, help: 'float16 matrix products with dynamic loss scaling (GPUs; on a CPU: bfloat16 where it can, else float32, with a warning)', scripts: TE, group: 'training' },
  { name: 'dataloader_num_workers', kind: 'int', default: 0, help: 'accepted for compatibility', scripts: TE, group: 'training' },
  { name: 'local_rank', kind: 'int', default: -1, help: "this process's rank on its node, as python -m torch.distributed.launch passes it (must agree with LOCAL_RANK when that is set)", scripts: TE, group: 'training' },
  { name: 'ddp_backend', kind: 'string', default: 'auto', choices: ['auto', 'tensorflow', 'tcp'], help: "process group: tcp (authenticated connections, one host), tensorflow (TensorFlow's collective ops: gRPC between hosts, NCCL between GPUs; its servers listen on every interface, unauthenticated: trusted networks only), auto: tensorflow when the ranks span hosts", scripts: T, group: 'training' },
  { name: 'ddp_bucket_cap_mb', kind: 'int', default: null, help: 'MB of gradients per collective of the tensorflow process group (default 25)', scripts: T, group: 'training' },
  { name: 'ddp_timeout', kind: 'int', default: 1800, help: 'seconds a rank waits for the others in a collective, and the longest any rank may stay silent (stopped, frozen) before the job stops naming it', scripts: T, group: 'training' },
  { name: 'resume_from_checkpoint', kind: 'optional', default: null, help: 'a checkpoint directory, or true for the latest in output_dir', scripts: T, group: 'training' },
  { name: 'report_to', kind: 'string', default: 'all', choices: ['all', 'none', 'tensorboard'], help: 'TensorBoard event files (needs the tensorflow backend), none, or all available', scripts: T, group: 'training' },
  { name: 'logging_dir', kind: 'string', default: null, help: 'TensorBoard dir (default: output_dir/runs/<MonDD_HH-MM-SS>_<host>; a resumed run keeps its own)', scripts: T, group: 'training' },
  { name: 'run_name', kind: 'string', default: null, help: 'a name for the run, in the model card and report.html (default: output_dir)', scripts: T, group: 'training' },
  { name: 'push_to_hub', kind: 'bool', default: false, help: 'upload the model directory to the hub (HF_ENDPOINT), as --hub_strategy says', scripts: T, group: 'training' },
  { name: 'hub_model_id', kind: 'string', default: null, help: "org/name, or name in the token owner's namespace (default: the output_dir's name)", scripts: TP, group: 'training' },
  { name: 'hub_token', kind: 'string', default: null, help: 'a token with write access (default: HF_TOKEN)', scripts: TP, group: 'training' },
  { name: 'hub_private_repo', kind: 'bool', default: null, help: "create the repo private (default: the namespace's default; an existing repo keeps its visibility)", scripts: TP, group: 'training' },
  { name: 'hub_strategy', kind: 'string', default: 'every_save', choices: ['end', 'every_save'], help: 'push at the end only, or at every checkpoint save and at the end', scripts: T, group: 'training' },
  // search (Tevatron's faiss_retriever)
  { name: 'query_reps', kind: 'string', default: null, help: 'encoded queries (an encode.ts output)', scripts: S, group: 'data' },
  { name: 'passage_reps', kind: 'list', default: null, help: 'encoded passage shards: paths or globs (quote them)', scripts: S, group: 'data' },
  { name: 'depth', kind: 'int', default: 1000, help: 'passages retrieved per query', scripts: S, group: 'data' },
  { name: 'batch_size', kind: 'int', default: 128, help: 'queries scored at once (<= 0: all)', scripts: S, group: 'data' },
  { name: 'save_ranking_to', kind: 'string', default: null, help: 'the ranking file to write', scripts: S, group: 'data' },
  { name: 'save_text', kind: 'bool', default: false, help: 'text ranking qid<TAB>docid<TAB>score (the default format here)', scripts: S, group: 'data' },
  { name: 'save_trec', kind: 'bool', default: false, help: 'TREC ranking: qid Q0 docid rank score tag', scripts: S, group: 'data' },
  { name: 'quiet', kind: 'bool', default: false, help: 'no progress output', scripts: S, group: 'data' },
  // evaluate
  { name: 'run', kind: 'string', default: null, help: 'a ranking (text or TREC), from search.ts or any other tool', scripts: V, group: 'data' },
  { name: 'qrels', kind: 'string', default: null, help: 'qid<TAB>docid[<TAB>rel] or TREC qrels', scripts: V, group: 'data' },
  { name: 'queries', kind: 'string', default: null, help: 'queries with answers ({query_id, answers}) for DPR top-k accuracy', scripts: V, group: 'data' },
  { name: 'corpus', kind: 'string', default: null, help: 'passages ({docid, text}) for DPR top-k accuracy', scripts: V, group: 'data' },
  { name: 'save_json', kind: 'string', default: null, help: 'also write the metrics as JSON here', scripts: V, group: 'data' },
  // mine (Tevatron's build_train_hn)
  { name: 'train_file', kind: 'string', default: null, help: 'the training file (or directory) whose questions were searched: rows {query_id, query, answers?, positive_passages, negative_passages}', scripts: MN, group: 'data' },
  { name: 'ranking', kind: 'string', default: null, help: "search.ts's ranking of those questions (text qid docid score, best first, or TREC)", scripts: MN, group: 'data' },
  { name: 'corpus', kind: 'list', default: null, help: 'the passages {docid, title?, text} that were encoded and searched', scripts: MN, group: 'data' },
  { name: 'save_to', kind: 'string', default: null, help: 'the new training file (JSON Lines, same rows with mined negative_passages)', scripts: MN, group: 'data' },
  { name: 'depth', kind: 'int', default: 100, help: 'negatives come from the top this many hits', scripts: MN, group: 'data' },
  { name: 'skip_top', kind: 'int', default: 0, help: 'hits skipped at the top of each ranking before sampling', scripts: MN, group: 'data' },
  { name: 'n_sample', kind: 'int', default: 30, help: 'negatives drawn per question (all candidates when fewer)', scripts: MN, group: 'data' },
  { name: 'keep_negatives', kind: 'bool', default: false, help: "append the file's own negatives after the mined ones instead of replacing them", scripts: MN, group: 'data' },
  // evaluation during training
  { name: 'eval_queries', kind: 'string', default: null, help: 'held-out queries {query_id, query[, answers]} to evaluate during training', scripts: T, group: 'tevatron-ts' },
  { name: 'eval_corpus', kind: 'string', default: null, help: 'the passages {docid, title?, text} to retrieve from during evaluation', scripts: T, group: 'tevatron-ts' },
  { name: 'eval_qrels', kind: 'string', default: null, help: 'qrels of the eval queries (else their answers are matched in the passages)', scripts: T, group: 'tevatron-ts' },
  { name: 'eval_steps', kind: 'int', default: null, help: 'evaluate every N steps (default: logging_steps) and at the end', scripts: T, group: 'tevatron-ts' },
  // our own
  { name: 'backend', kind: 'string', default: 'auto', choices: ['auto', 'tensorflow', 'wasm', 'cpu'], help: 'TensorFlow.js backend', scripts: ['train', 'encode', 'search'], group: 'tevatron-ts' },
];

export type ArgValue = string | number | boolean | string[] | null;
export type Args = Record<string, ArgValue>;

const GIVEN = new WeakMap<Args, Set<string>>();

/** The flags the user set (on the command line or in the flag file), as opposed to defaults. */
export function explicitFlags(args: Args): Set<string> {
  return GIVEN.get(args) ?? new Set();
}

const BOOL_WORDS: Record<string, boolean> = { true: true, false: false, yes: true, no: false, '1': true, '0': false, t: true, f: false, y: true, n: false };

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

function flagsOf(script: Script): Flag[] {
  return FLAGS.filter((f) => f.scripts.includes(script));
}

function unknownFlag(name: string, script: Script): Error {
  const known = flagsOf(script).map((f) => f.name);
  const near = known.map((k) => [editDistance(name, k), k] as const).sort((a, b) => a[0] - b[0])[0];
  const elsewhere = FLAGS.filter((f) => f.name === name).flatMap((f) => f.scripts);
  const hint = elsewhere.length
    ? `; it belongs to ${elsewhere.join('/')}.ts`
    : near && near[0] <= Math.max(2, name.length / 4)
      ? `; did you mean --${near[1]}?`
      : '';
  return new Error(`unknown flag --${name} for ${script}.ts${hint} (see --help)`);
}

function convert(flag: Flag, raw: string, where: string): ArgValue {
  const bad = (what: string) => new Error(`${where}: --${flag.name} expects ${what}, got '${raw}'`);
  switch (flag.kind) {
    case 'int': {
      const v = Number(raw);
      if (!Number.isInteger(v)) throw bad('an integer');
      return v;
    }
    case 'float': {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v)) throw bad('a number');
      return v;
    }
    case 'bool': {
      const v = BOOL_WORDS[raw.toLowerCase()];
      if (v === undefined) throw bad('true or false');
      return v;
    }
    default:
      if (flag.choices && !flag.choices.includes(raw)) throw bad(`one of ${flag.choices.join(', ')}`);
      return raw;
  }
}

function defaults(script: Script): Args {
  return Object.fromEntries(flagsOf(script).map((f) => [f.name, Array.isArray(f.default) ? [...f.default] : f.default]));
}

/** Reads a flag file: a JSON object of flag names to values (HfArgumentParser.parse_json_file). */
function parseJsonFile(path: string, script: Script): Args {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: cannot read the flag file (${errorText(e)}); pass a JSON object of flag names to values`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error(`${path}: the flag file must hold a JSON object`);
  const args = defaults(script);
  for (const [name, value] of Object.entries(obj)) {
    const flag = flagsOf(script).find((f) => f.name === name);
    if (!flag) throw new Error(`${path}: ${unknownFlag(name, script).message}`);
    args[name] = flag.kind === 'list' ? (Array.isArray(value) ? value.map(String) : [String(value)]) : value === null ? null : convert(flag, String(value), path);
  }
  GIVEN.set(args, new Set(Object.keys(obj)));
  return args;
}

/**
 * Parses argv for a script: `--name value`, `--name=value`; a bool flag alone means true and takes an
 * optional true/false word (as HfArgumentParser); a list flag takes every value up to the next flag.
 * A single argument ending in .json is read as the flag file.
 */
export function parseArgs(argv: readonly string[], script: Script): Args {
  if (argv.length === 1 && argv[0].endsWith('.json')) return validate(parseJsonFile(argv[0], script), script);
  const args = defaults(script);
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    if (!token.startsWith('--')) throw new Error(`unexpected argument '${token}': flags are --name value (see --help)`);
    const eq = token.indexOf('=');
    const name = token.slice(2, eq < 0 ? undefined : eq).replace(/-/g, '_');
    const flag = flagsOf(script).find((f) => f.name === name);
    if (!flag) throw unknownFlag(name, script);
    if (seen.has(name)) throw new Error(`--${name} is given twice`);
    seen.add(name);
    const inline = eq < 0 ? undefined : token.slice(eq + 1);
    const next = argv[i + 1];
    const nextIsValue = next !== undefined && !next.startsWith('--');
    if (flag.kind === 'bool' || flag.kind === 'optional') {
      if (inline !== undefined) args[name] = flag.kind === 'bool' ? convert(flag, inline, `--${name}`) : inline;
      else if (flag.kind === 'bool' && nextIsValue && next.toLowerCase() in BOOL_WORDS) args[name] = convert(flag, argv[++i], `--${name}`);
      else if (flag.kind === 'optional' && nextIsValue) args[name] = argv[++i];
      else args[name] = flag.kind === 'bool' ? true : 'true';
    } else if (flag.kind === 'list') {
      const values = inline !== undefined ? [inline] : [];
      while (argv[i + 1] !== undefined && !argv[i + 1].startsWith('--')) values.push(argv[++i]);
      if (values.length === 0) throw new Error(`--${name} needs at least one value`);
      args[name] = values;
    } else {
      const raw = inline ?? (nextIsValue ? argv[++i] : undefined);
      if (raw === undefined) throw new Error(`--${name} needs a value`);
      args[name] = convert(flag, raw, 'command line');
    }
  }
  GIVEN.set(args, seen);
  return validate(args, script);
}

/** Impossible or missing settings, each one clear error naming the flag and the fix. */
function validate(a: Args, script: Script): Args {
  const need = (name: string, why: string) => {
    if (a[name] === null || a[name] === undefined || a[name] === '') throw new Error(`--${name} is required: ${why}`);
  };
  const positive = (name: string) => {
    if (a[name] !== null && !((a[name] as number) > 0)) throw new Error(`--${name} must be > 0, got ${a[name]}`);
  };
  if (script === 'search') {
    need('query_reps', 'the encoded queries');
    need('passage_reps', 'the encoded passages');
    need('save_ranking_to', 'where the ranking goes');
    positive('depth');
    if (a.save_text && a.save_trec) throw new Error('--save_text and --save_trec both given: pick one format');
    return a;
  }
  if (script === 'evaluate') {
    need('run', 'the ranking to evaluate');
    if (a.qrels === null && a.queries === null) throw new Error('pass --qrels (relevance judgements) and/or --queries with --corpus (answer strings)');
    if ((a.queries === null) !== (a.corpus === null)) throw new Error('--queries and --corpus go together: answers are matched in the passages\' text');
    return a;
  }
  if (script === 'mine') {
    need('train_file', 'the training file whose questions were searched');
    need('ranking', 'the ranking of those questions (search.ts --save_ranking_to)');
    need('corpus', 'the passages that were searched');
    need('save_to', 'where the new training file goes');
    positive('depth');
    positive('n_sample');
    if (!((a.skip_top as number) >= 0 && (a.skip_top as number) < (a.depth as number))) throw new Error(`--skip_top must be >= 0 and below --depth ${a.depth}, got ${a.skip_top}`);
    return a;
  }
  if (script === 'push_to_hub') {
    need('output_dir', 'the directory a training run wrote (its model, model card and logs are uploaded)');
    return a;
  }
  need('model_name_or_path', 'the model to start from (a directory or a hub id such as bert-base-uncased)');
  if (a.bf16 && a.fp16) throw new Error('--bf16 and --fp16 both given: pick one (--bf16 on CPUs and recent GPUs, --fp16 on GPUs)');
  positive('q_max_len');
  positive('p_max_len');
  if ((a.q_max_len as number) < 3 || (a.p_max_len as number) < 3) throw new Error('--q_max_len and --p_max_len must leave room for [CLS], [SEP] and a token (>= 3)');
  if ((a.local_rank as number) < -1) throw new Error(`--local_rank must be >= 0 (or -1: not given), got ${a.local_rank}`);
  if (a.add_pooler) {
    positive('projection_in_dim');
    positive('projection_out_dim');
  }
  if (script === 'train') {
    need('output_dir', 'where the trained model and checkpoints go');
    if (a.train_dir === null && a.dataset_name === null) throw new Error('training data is required: pass --train_dir FILE_OR_DIR or --dataset_name org/name');
    for (const name of ['per_device_train_batch_size', 'train_n_passages', 'learning_rate', 'gradient_accumulation_steps', 'logging_steps', 'save_steps', 'temperature', 'dataset_proc_num', 'ddp_timeout']) positive(name);
    if (a.grad_cache) for (const name of ['gc_q_chunk_size', 'gc_p_chunk_size']) positive(name);
    if (a.max_steps !== -1) positive('max_steps');
    if (a.max_steps === -1) positive('num_train_epochs');
    if (a.save_total_limit !== null) positive('save_total_limit');
    if (a.eval_steps !== null) positive('eval_steps');
    if (a.ddp_bucket_cap_mb !== null) positive('ddp_bucket_cap_mb');
    if ((a.eval_queries === null) !== (a.eval_corpus === null)) throw new Error('--eval_queries and --eval_corpus go together (queries to search and passages to search in)');
    if (a.eval_qrels !== null && a.eval_queries === null) throw new Error('--eval_qrels needs --eval_queries and --eval_corpus');
    if ((a.warmup_ratio as number) < 0 || (a.warmup_ratio as number) > 1) throw new Error(`--warmup_ratio must be in [0, 1], got ${a.warmup_ratio}`);
    if ((a.warmup_steps as number) < 0) throw new Error(`--warmup_steps must be >= 0, got ${a.warmup_steps}`);
    if ((a.max_grad_norm as number) < 0) throw new Error(`--max_grad_norm must be >= 0 (0 disables clipping), got ${a.max_grad_norm}`);
    if ((a.weight_decay as number) < 0) throw new Error(`--weight_decay must be >= 0, got ${a.weight_decay}`);
    for (const b of ['adam_beta1', 'adam_beta2']) if (!((a[b] as number) >= 0 && (a[b] as number) < 1)) throw new Error(`--${b} must be in [0, 1), got ${a[b]}`);
  } else {
    need('encode_in_path', 'the files to encode');
    need('encoded_save_path', 'where the representations go');
    positive('per_device_eval_batch_size');
    positive('encode_num_shard');
    const idx = a.encode_shard_index as number;
    if (idx < 0 || idx >= (a.encode_num_shard as number)) throw new Error(`--encode_shard_index must be in [0, ${a.encode_num_shard}), got ${idx}`);
  }
  return a;
}

/** The --help text of a script, grouped as Tevatron's argument classes. */
export function helpText(script: Script): string {
  const titles = { model: 'Model', data: 'Data', training: 'Training (Tevatron and Hugging Face TrainingArguments)', 'tevatron-ts': 'tevatron-ts' };
  const lines = [`usage: npx tsx scripts/${script}.ts [--flag value ...] | FLAGS.json`, ''];
  for (const group of Object.keys(titles) as (keyof typeof titles)[]) {
    const flags = flagsOf(script).filter((f) => f.group === group);
    if (!flags.length) continue;
    lines.push(`${titles[group]}:`);
    for (const f of flags) {
      const def = f.default === null ? '' : ` (default: ${JSON.stringify(f.default)})`;
      const choices = f.choices ? ` {${f.choices.join(',')}}` : '';
      lines.push(`  --${f.name}${choices}`.padEnd(36) + ` ${f.help}${def}`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

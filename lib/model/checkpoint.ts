// Checkpoint I/O in the Hugging Face / Tevatron layout: `config.json` + `model.safetensors` (or a
// sharded index) with plain BertModel names; untied bi-encoders as `query_model/` + `passage_model/`
// (each a full HF model dir); Tevatron's DensePooler as `pooler.safetensors` + `pooler_config.json`.
// Saving is atomic: everything is staged in a temporary directory on the same filesystem and renamed
// into place, so a failed save leaves no partial model behind.
import * as tf from '@tensorflow/tfjs';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errorText } from '../errors.ts';
import { parseSafetensors, serializeSafetensors, type TensorDict } from './safetensors.ts';
import type { ParamMap } from './types.ts';

/** `pooler_config.json`, as Tevatron's DensePooler writes it. */
export interface PoolerConfig {
  input_dim: number;
  output_dim: number;
  tied: boolean;
  normalize: boolean;
}

/**
 * Tevatron's DensePooler: `linear_q.weight` [output_dim, input_dim], `linear_q.bias` [output_dim], and
 * `linear_p.*` when untied. A tied pooler holds only `linear_q.*` (one set of weights to train); the
 * file still carries a `linear_p.*` copy, as Tevatron's state_dict does.
 */
export interface Pooler {
  config: PoolerConfig;
  params: ParamMap;
}

export interface ModelCheckpoint {
  /** The raw `config.json` (for an untied model, query_model's). */
  config: Record<string, unknown>;
  /** BertModel names (`embeddings.word_embeddings.weight`, ...); untied: `query_model.` / `passage_model.` prefixed. */
  params: ParamMap;
  untied: boolean;
  pooler?: Pooler;
}

/** What saveModelDir takes; `untied` unset: untied when every name carries a tower prefix. */
export type SavableCheckpoint = Omit<ModelCheckpoint, 'untied'> & { untied?: boolean };

export interface LoadedCheckpoint extends ModelCheckpoint {
  /** Tensors in the files that are not parameters: integer buffers and pretraining heads (`cls.*`). */
  skipped: string[];
}

export interface LoadOptions {
  /**
   * Unset: the directory decides (untied when it has `query_model/`). true: a plain directory's weights
   * are copied to both towers, as Tevatron does for `--untie_encoder` from a tied checkpoint. false: a
   * directory holding an untied model is an error.
   */
  untied?: boolean;
}

export interface SaveOptions {
  /** Replace a model already saved in `dir` (its weights, config, subdirectories and pooler files). */
  overwrite?: boolean;
}

export const QUERY_PREFIX = 'query_model.';
export const PASSAGE_PREFIX = 'passage_model.';
const TOWERS = [
  { sub: 'query_model', prefix: QUERY_PREFIX },
  { sub: 'passage_model', prefix: PASSAGE_PREFIX },
];

/** Files and subdirectories that belong to a saved model; a directory holds one model, so saving replaces all of them. */
const MODEL_ENTRIES = ['config.json', 'model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json',
  'query_model', 'passage_model', 'pooler.safetensors', 'pooler_config.json', 'pooler.pt'];

// Shared tensors (a tied MLM decoder) make safetensors' save_file refuse, hence the clone.
const convertBinHint = (dir: string) =>
  `convert it to safetensors with: python -c "from transformers import AutoModel; AutoModel.from_pretrained('${dir}').save_pretrained('${dir}')"`;
const convertPoolerHint = (dir: string) =>
  `convert it with: python -c "import torch; from safetensors.torch import save_file; sd = torch.load('${path.join(dir, 'pooler.pt')}', map_location='cpu'); save_file({k: v.contiguous().clone() for k, v in sd.items()}, '${path.join(dir, 'pooler.safetensors')}')"`;

async function readConfig(dir: string): Promise<Record<string, unknown>> {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file)) {
    const what = existsSync(path.join(dir, 'model.safetensors')) ? 'has weights but no config.json' : 'has no config.json and no model.safetensors';
    throw new Error(`${dir}: ${what}; point to a model directory written by save_pretrained or saveModelDir`);
  }
  return readJson(file);
}

/** A JSON object file (config.json, an index, pooler_config.json); an error names the file. */
export async function readJson(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read it (${(e as Error).message})`);
  }
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
    return value;
  } catch (e) {
    throw new Error(`${file}: not a JSON object (${errorText(e)}); re-save the model with save_pretrained or saveModelDir`);
  }
}

async function readTensorFile(file: string): Promise<{ tensors: TensorDict; skipped: string[] }> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new Error(`${file}: cannot read it (${(e as Error).message})`);
  }
  return parseSafetensors(bytes, file);
}

/** Maps a checkpoint name to its BertModel name, or null for a tensor that is not an encoder parameter. */
function bertName(name: string): string | null {
  let n = name.startsWith('bert.') ? name.slice(5) : name;
  if (n.startsWith('cls.')) return null;
  // TF-era checkpoints name LayerNorm's scale and shift gamma and beta.
  n = n.replace(/LayerNorm\.gamma$/, 'LayerNorm.weight').replace(/LayerNorm\.beta$/, 'LayerNorm.bias');
  return n;
}

/** Reads the weights of one HF model directory (single file or sharded) as float32 arrays under BertModel names. */
async function readWeights(dir: string): Promise<{ tensors: TensorDict; skipped: string[] }> {
  const single = path.join(dir, 'model.safetensors');
  const index = path.join(dir, 'model.safetensors.index.json');
  let raw: TensorDict = {};
  const skipped: string[] = [];
  if (existsSync(single)) {
    const got = await readTensorFile(single);
    raw = got.tensors;
    skipped.push(...got.skipped);
  } else if (existsSync(index)) {
    const weightMap = (await readJson(index)).weight_map as Record<string, string> | undefined;
    if (!weightMap || typeof weightMap !== 'object') throw new Error(`${index}: has no "weight_map"; re-save the model with save_pretrained`);
    for (const shard of [...new Set(Object.values(weightMap))].sort()) {
      const got = await readTensorFile(path.join(dir, shard));
      Object.assign(raw, got.tensors);
      skipped.push(...got.skipped);
    }
    const missing = Object.keys(weightMap).filter((n) => !(n in raw) && !skipped.includes(n));
    if (missing.length) throw new Error(`${index}: lists ${missing.length} tensors its shards lack (e.g. ${missing[0]}); the download or save is incomplete, fetch the model again`);
  } else if (existsSync(path.join(dir, 'pytorch_model.bin')) || existsSync(path.join(dir, 'pytorch_model.bin.index.json'))) {
    throw new Error(`${dir}: has only PyTorch pickle weights (pytorch_model.bin), which cannot be read here; ${convertBinHint(dir)}`);
  } else {
    throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json; point to a directory written by save_pretrained or saveModelDir`);
  }
  const tensors: TensorDict = {};
  for (const [name, value] of Object.entries(raw)) {
    const n = bertName(name);
    if (n === null) {
      skipped.push(name);
      continue;
    }
    if (n in tensors) throw new Error(`${dir}: tensor ${name} and another tensor both map to ${n}; the checkpoint mixes prefixed and plain names, re-save it`);
    tensors[n] = value;
  }
  return { tensors, skipped };
}

function toParams(tensors: TensorDict, prefix = ''): ParamMap {
  const params: ParamMap = {};
  for (const [name, { shape, data }] of Object.entries(tensors)) params[prefix + name] = tf.tensor(data, shape, 'float32');
  return params;
}

async function loadPooler(dir: string): Promise<Pooler | undefined> {
  const configFile = path.join(dir, 'pooler_config.json');
  const weightFile = path.join(dir, 'pooler.safetensors');
  const hasConfig = existsSync(configFile);
  const hasWeights = existsSync(weightFile);
  if (!hasConfig && !hasWeights) {
    if (existsSync(path.join(dir, 'pooler.pt'))) throw new Error(`${dir}: has Tevatron's pooler.pt (a PyTorch pickle) but no pooler.safetensors; ${convertPoolerHint(dir)}`);
    return undefined;
  }
  if (!hasWeights) {
    const hint = existsSync(path.join(dir, 'pooler.pt')) ? convertPoolerHint(dir) : 'save the pooler again or remove pooler_config.json';
    throw new Error(`${dir}: has pooler_config.json but no pooler.safetensors; ${hint}`);
  }
  if (!hasConfig) throw new Error(`${dir}: has pooler.safetensors but no pooler_config.json ({"input_dim", "output_dim", "tied", "normalize"}); save the pooler again`);
  const raw = await readJson(configFile);
  const config: PoolerConfig = {
    input_dim: Number(raw.input_dim),
    output_dim: Number(raw.output_dim),
    tied: Boolean(raw.tied),
    normalize: Boolean(raw.normalize),
  };
  if (!(config.input_dim > 0 && config.output_dim > 0)) throw new Error(`${configFile}: input_dim and output_dim must be positive integers, got ${raw.input_dim} and ${raw.output_dim}`);
  const { tensors } = await readTensorFile(weightFile);
  const sides = config.tied ? ['linear_q'] : ['linear_q', 'linear_p'];
  const wanted: TensorDict = {};
  for (const side of sides) {
    for (const [part, shape] of [['weight', [config.output_dim, config.input_dim]], ['bias', [config.output_dim]]] as const) {
      const name = `${side}.${part}`;
      const t = tensors[name];
      if (!t) throw new Error(`${weightFile}: has no tensor ${name} (found ${Object.keys(tensors).join(', ') || 'none'}); save the pooler again`);
      if (t.shape.join() !== shape.join()) throw new Error(`${weightFile}: ${name} has shape [${t.shape}], pooler_config.json implies [${shape}]; the two files do not belong together`);
      wanted[name] = t;
    }
  }
  return { config, params: toParams(wanted) };
}

/**
 * Loads a model directory: a Hugging Face BERT (`config.json` + `model.safetensors` or a sharded index;
 * `bert.` prefixes stripped, `cls.*` heads and integer buffers skipped, `LayerNorm.gamma/beta` renamed),
 * Tevatron's untied layout (`query_model/` + `passage_model/`), and the pooler files if present.
 */
export async function loadModelDir(dir: string, options: LoadOptions = {}): Promise<LoadedCheckpoint> {
  let info;
  try {
    info = await stat(dir);
  } catch {
    throw new Error(`${dir}: no such model directory; pass a directory holding config.json and model.safetensors (or a hub id to resolveModel)`);
  }
  if (!info.isDirectory()) throw new Error(`${dir}: is a file, not a model directory; pass the directory that holds config.json and model.safetensors`);
  const hasQuery = existsSync(path.join(dir, 'query_model'));
  const hasPassage = existsSync(path.join(dir, 'passage_model'));
  if (hasQuery !== hasPassage) throw new Error(`${dir}: has ${hasQuery ? 'query_model/' : 'passage_model/'} but not ${hasQuery ? 'passage_model/' : 'query_model/'}; an untied model needs both towers`);
  const pooler = await loadPooler(dir);
  if (hasQuery) {
    if (options.untied === false) throw new Error(`${dir}: holds an untied model (query_model/ and passage_model/); load it with untied: true (--untie_encoder)`);
    const params: ParamMap = {};
    const skipped: string[] = [];
    let config: Record<string, unknown> = {};
    for (const { sub, prefix } of TOWERS) {
      const towerDir = path.join(dir, sub);
      const towerConfig = await readConfig(towerDir);
      if (prefix === QUERY_PREFIX) config = towerConfig;
      const { tensors, skipped: s } = await readWeights(towerDir);
      Object.assign(params, toParams(tensors, prefix));
      skipped.push(...s.map((n) => `${sub}/${n}`));
    }
    return { config, params, untied: true, pooler, skipped };
  }
  const config = await readConfig(dir);
  const { tensors, skipped } = await readWeights(dir);
  if (!options.untied) return { config, params: toParams(tensors), untied: false, pooler, skipped };
  return { config, params: { ...toParams(tensors, QUERY_PREFIX), ...toParams(tensors, PASSAGE_PREFIX) }, untied: true, pooler, skipped };
}

/** The config as it must read next to F32 BertModel weights, so that AutoModel rebuilds exactly what was saved. */
function savedConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  out.model_type ??= 'bert';
  if (out.model_type === 'bert') out.architectures = ['BertModel'];
  // The weights are written as float32 whatever the source checkpoint was.
  if ('torch_dtype' in out) out.torch_dtype = 'float32';
  out.dtype = 'float32';
  return out;
}

async function tensorDict(params: ParamMap, names: string[], strip: string): Promise<TensorDict> {
  const out: TensorDict = {};
  for (const name of names) {
    const t = params[name];
    if (t.dtype !== 'float32') throw new Error(`parameter ${name} is ${t.dtype}; checkpoints hold float32 parameters, cast it with tf.cast(t, 'float32')`);
    out[name.slice(strip.length)] = { shape: t.shape.slice(), data: (await t.data()) as Float32Array };
  }
  return out;
}

async function writeHfModel(dir: string, config: Record<string, unknown>, params: ParamMap, names: string[], strip: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'config.json'), `${JSON.stringify(savedConfig(config), null, 2)}\n`);
  await writeFile(path.join(dir, 'model.safetensors'), serializeSafetensors(await tensorDict(params, names, strip), { format: 'pt' }));
}

async function writePooler(dir: string, pooler: Pooler): Promise<void> {
  const { config, params } = pooler;
  const need = ['linear_q.weight', 'linear_q.bias', ...(config.tied ? [] : ['linear_p.weight', 'linear_p.bias'])];
  const missing = need.filter((n) => !params[n]);
  if (missing.length) throw new Error(`pooler: missing parameter${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (a ${config.tied ? 'tied' : 'untied'} pooler has ${need.join(', ')})`);
  const tensors = await tensorDict(params, need, '');
  if (config.tied) {
    tensors['linear_p.weight'] = tensors['linear_q.weight'];
    tensors['linear_p.bias'] = tensors['linear_q.bias'];
  }
  const fields: PoolerConfig = { input_dim: config.input_dim, output_dim: config.output_dim, tied: config.tied, normalize: config.normalize };
  await writeFile(path.join(dir, 'pooler_config.json'), `${JSON.stringify(fields)}\n`);
  await writeFile(path.join(dir, 'pooler.safetensors'), serializeSafetensors(tensors, { format: 'pt' }));
}

const tmpName = () => randomBytes(4).toString('hex');

/**
 * Saves a model in the Hugging Face layout (`untied`: `query_model/` + `passage_model/`, each a full HF
 * model dir, with the config written to both) plus the pooler files. The result loads with
 * `transformers.AutoModel.from_pretrained`. Atomic: a new directory is built as a sibling `dir.tmp-xxxx`
 * and renamed; into an existing directory (e.g. an output dir holding `checkpoint-N/`), the entries are
 * staged in `dir/.tmp-xxxx/` and each renamed into place, so a failure while writing leaves `dir` as it was.
 */
export async function saveModelDir(dir: string, model: SavableCheckpoint, options: SaveOptions = {}): Promise<void> {
  const names = Object.keys(model.params).sort();
  const prefixed = names.filter((n) => n.startsWith(QUERY_PREFIX) || n.startsWith(PASSAGE_PREFIX));
  const untied = model.untied ?? (names.length > 0 && prefixed.length === names.length);
  if (names.length === 0) throw new Error(`${dir}: nothing to save, the parameter map is empty`);
  if (untied && prefixed.length !== names.length) {
    const plain = names.find((n) => !prefixed.includes(n));
    throw new Error(`${dir}: an untied model's parameters must all start with ${QUERY_PREFIX} or ${PASSAGE_PREFIX}, but ${plain} does not; save it with untied: false or rename the parameters`);
  }
  if (!untied && prefixed.length) throw new Error(`${dir}: parameter ${prefixed[0]} belongs to an untied model; save it with untied: true`);
  const towers = untied
    ? TOWERS.map(({ sub, prefix }) => ({ sub, prefix, names: names.filter((n) => n.startsWith(prefix)) }))
    : [{ sub: '', prefix: '', names }];
  for (const t of towers) if (t.names.length === 0) throw new Error(`${dir}: the untied model has no ${t.prefix}* parameters; both towers are needed`);

  const target = path.resolve(dir);
  const existing = existsSync(target);
  if (existing && !(await stat(target)).isDirectory()) throw new Error(`${dir}: exists and is a file; choose a directory path for the model`);
  const present = existing ? await readdir(target) : [];
  const stale = present.filter((e) => MODEL_ENTRIES.includes(e) || /^model-\d+-of-\d+\.safetensors$/.test(e) || /^pytorch_model-\d+-of-\d+\.bin$/.test(e));
  if (stale.length && !options.overwrite) {
    throw new Error(`${dir}: already holds a model (${stale.join(', ')}); save into a new directory or pass overwrite: true to replace it`);
  }
  const staging = present.length ? path.join(target, `.tmp-${tmpName()}`) : `${target}.tmp-${tmpName()}`;
  await mkdir(path.dirname(staging), { recursive: true });
  let keepStaging = false;
  try {
    await mkdir(staging);
    for (const t of towers) await writeHfModel(path.join(staging, t.sub), model.config, model.params, t.names, t.prefix);
    if (model.pooler) await writePooler(staging, model.pooler);
    if (!present.length) {
      if (existing) await rm(target, { recursive: true, force: true }); // empty: rename cannot replace a directory on every platform
      await rename(staging, target);
      return;
    }
    const written = await readdir(staging);
    const old = path.join(staging, '.replaced');
    await mkdir(old);
    const movedOut: string[] = [];
    const movedIn: string[] = [];
    try {
      for (const e of stale) {
        await rename(path.join(target, e), path.join(old, e));
        movedOut.push(e);
      }
      for (const e of written) {
        await rename(path.join(staging, e), path.join(target, e));
        movedIn.push(e);
      }
    } catch (e) {
      // Put the previous model back rather than leave a mix of old and new files.
      try {
        for (const n of movedIn) await rm(path.join(target, n), { recursive: true, force: true });
        for (const n of movedOut) await rename(path.join(old, n), path.join(target, n));
      } catch {
        keepStaging = true;
        throw new Error(`${dir}: saving failed (${(e as Error).message}) and putting the previous model back failed too; its files are in ${old}, move them back by hand`);
      }
      throw e;
    }
    await rm(staging, { recursive: true, force: true });
  } catch (e) {
    if (!keepStaging) await rm(staging, { recursive: true, force: true });
    throw e;
  }
}

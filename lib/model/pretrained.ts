// From flags to a ready bi-encoder: resolve the model and tokenizer (directory or hub id), load the
// checkpoint — or initialise randomly from a config-only directory, for training from scratch — add a
// pooler, and read the encoder settings (pooling, normalize, temperature) that travel with a model
// in `tevatron_ts.json`, so encode uses what training used.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { explicitFlags, type Args } from '../args.ts';
import type { ExampleOptions } from '../data/load.ts';
import { errorText } from '../errors.ts';
import { loadTokenizer, type Tokenizer } from '../tokenizer.ts';
import { foldIn, keyFromSeed } from '../random.ts';
import { bertConfigFromJson, type BertConfig } from './bert.ts';
import { loadModelDir, readJson, type PoolerConfig } from './checkpoint.ts';
import { denseBiEncoder, initDenseParams, initPoolerParams, POOLINGS, type DenseOptions, type Pooling } from './dense.ts';
import { resolveModel } from './hub.ts';
import type { Precision } from '../precision.ts';
import type { BiEncoder, ParamMap } from './types.ts';

/** The encoder settings saved beside the weights. */
export interface EncoderSettings {
  pooling: Pooling;
  normalize: boolean;
  temperature: number;
}

export const SETTINGS_FILE = 'tevatron_ts.json';

export interface ModelRequest {
  modelNameOrPath: string;
  configName?: string | null;
  tokenizerName?: string | null;
  cacheDir?: string | null;
  /** --untie_encoder; undefined: not given (tied, unless detectUntied finds towers). */
  untied: boolean | undefined;
  /**
   * The directory decides, as Tevatron's DenseModel.load (encoding): `query_model/` + `passage_model/` load
   * untied, one model tied; an `untied` that says otherwise is a warning.
   */
  detectUntied?: boolean;
  /** Add a pooler of this shape when the checkpoint has none (--add_pooler). */
  pooler: { inDim: number; outDim: number } | null;
  /** Flag values; undefined: take the model's saved settings (else Tevatron v1's: cls, no normalize, 1). */
  settings: Partial<EncoderSettings>;
  /** Seed for anything initialised here (a pooler, or the whole model from a config-only directory). */
  seed: number;
  /** Of the matrix products (choosePrecision in precision.ts); default float32. */
  precision?: Precision;
}

export interface LoadedModel {
  dir: string;
  config: BertConfig;
  rawConfig: Record<string, unknown>;
  params: ParamMap;
  model: BiEncoder;
  options: DenseOptions;
  settings: EncoderSettings;
  tokenizer: Tokenizer;
  /** What happened, for the log: e.g. "initialised randomly". */
  notes: string[];
  /** The directory had no weights: the model starts from a random initialisation. */
  fromScratch: boolean;
}

function readSettings(dir: string): Partial<EncoderSettings> {
  const file = path.join(dir, SETTINGS_FILE);
  if (!existsSync(file)) return {};
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${errorText(e)}); delete it or fix it`);
  }
}

/** The flags win over the saved settings; a flag that contradicts them is worth a warning. */
function mergeSettings(saved: Partial<EncoderSettings>, flags: Partial<EncoderSettings>, notes: string[]): EncoderSettings {
  const out = { pooling: 'cls' as Pooling, normalize: false, temperature: 1, ...saved };
  for (const [k, v] of Object.entries(flags) as [keyof EncoderSettings, never][]) {
    if (v === undefined) continue;
    if (saved[k] !== undefined && saved[k] !== v) notes.push(`warning: --${k} ${v} overrides the model's saved ${k} ${saved[k]}`);
    out[k] = v;
  }
  if (!POOLINGS.includes(out.pooling)) throw new Error(`pooling '${out.pooling}' is not one of ${POOLINGS.join(', ')}`);
  return out;
}

export async function loadDenseModel(req: ModelRequest): Promise<LoadedModel> {
  const notes: string[] = [];
  const dir = await resolveModel(req.modelNameOrPath, { cacheDir: req.cacheDir ?? undefined });
  const configDir = req.configName ? await resolveModel(req.configName, { cacheDir: req.cacheDir ?? undefined, files: ['config.json'] }) : null;
  const tokenizerDir = req.tokenizerName ? await resolveModel(req.tokenizerName, { cacheDir: req.cacheDir ?? undefined, files: ['vocab.txt', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'] }) : dir;
  const tokenizer = await loadTokenizer(tokenizerDir);
  const settings = mergeSettings(readSettings(dir), req.settings, notes);
  const key = keyFromSeed(req.seed);

  const hasWeights = ['model.safetensors', 'model.safetensors.index.json', 'query_model'].some((f) => existsSync(path.join(dir, f)));
  let untied = req.untied ?? false;
  if (req.detectUntied && hasWeights) {
    const towers = existsSync(path.join(dir, 'query_model'));
    if (req.untied !== undefined && req.untied !== towers) {
      notes.push(`warning: --untie_encoder ${req.untied} ignored: ${dir} holds ${towers ? 'an untied model (query_model/, passage_model/)' : 'one encoder for queries and passages'}, used as saved`);
    }
    untied = towers;
  }
  let rawConfig: Record<string, unknown>;
  let params: ParamMap;
  let poolerConfig: PoolerConfig | undefined;
  if (hasWeights) {
    const ckpt = await loadModelDir(dir, { untied });
    rawConfig = configDir ? await readJson(path.join(configDir, 'config.json')) : ckpt.config;
    params = ckpt.params;
    if (ckpt.pooler) {
      Object.assign(params, ckpt.pooler.params);
      poolerConfig = ckpt.pooler.config;
    }
  } else {
    const file = path.join(configDir ?? dir, 'config.json');
    if (!existsSync(file)) throw new Error(`${dir}: has no weights and no config.json; pass a model directory or hub id (or --config_name to start from a config)`);
    rawConfig = await readJson(file);
    notes.push(`${dir} has no weights: initialising the model randomly (seed ${req.seed})`);
    params = {};
  }
  const config = bertConfigFromJson(rawConfig, path.join(configDir ?? dir, 'config.json'));
  if (config.vocab_size < tokenizer.vocabSize) {
    throw new Error(`the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}; use the tokenizer the model was trained with (--tokenizer_name)`);
  }
  const pooler = poolerConfig ? { inDim: poolerConfig.input_dim, outDim: poolerConfig.output_dim } : req.pooler;
  if (poolerConfig && poolerConfig.normalize && req.settings.normalize === undefined) settings.normalize = true;
  const options: DenseOptions = { untied, pooling: settings.pooling, pooler, normalize: settings.normalize, precision: req.precision };
  if (!hasWeights) params = initDenseParams(config, options, key);
  else if (pooler && !poolerConfig) {
    notes.push(`no pooler in ${dir}: training one from scratch (${pooler.inDim} -> ${pooler.outDim})`);
    Object.assign(params, initPoolerParams(pooler, foldIn(key, 1), untied));
  }
  return { dir, config, rawConfig, params, model: denseBiEncoder(config, options), options, settings, tokenizer, notes, fromScratch: !hasWeights };
}

/** The model part of a train/encode command line; encoder settings only where the user set them. */
export function modelRequestFromArgs(a: Args): ModelRequest {
  const given = explicitFlags(a);
  const settings: Partial<EncoderSettings> = {};
  if (given.has('pooling')) settings.pooling = a.pooling as Pooling;
  if (given.has('normalize')) settings.normalize = a.normalize as boolean;
  if (given.has('temperature')) settings.temperature = a.temperature as number;
  return {
    modelNameOrPath: a.model_name_or_path as string,
    configName: a.config_name as string | null,
    tokenizerName: a.tokenizer_name as string | null,
    cacheDir: a.cache_dir as string | null,
    untied: given.has('untie_encoder') ? (a.untie_encoder as boolean) : undefined,
    pooler: a.add_pooler ? { inDim: a.projection_in_dim as number, outDim: a.projection_out_dim as number } : null,
    settings,
    seed: (a.seed as number | undefined) ?? 42,
  };
}

/** How rows become token ids for this model: its tokenizer, the length limits, the title/text separator. */
export function exampleOptionsFromArgs(tokenizer: Tokenizer, a: Args): ExampleOptions {
  const sep = a.passage_field_separator as string;
  const attr = tokenizer.attribute(sep); // Tevatron: getattr(tokenizer, separator, separator)
  return {
    tokenize: (text, max) => tokenizer.encode(text).slice(0, max),
    qMaxLen: a.q_max_len as number,
    pMaxLen: a.p_max_len as number,
    separator: attr === undefined ? sep : String(attr),
  };
}

/** Splits a dense model's parameters into the encoder's and the pooler's (linear_q / linear_p). */
export function splitPooler(params: ParamMap): { encoder: ParamMap; pooler: ParamMap } {
  const encoder: ParamMap = {};
  const pooler: ParamMap = {};
  for (const [k, v] of Object.entries(params)) (/^linear_[qp]\./.test(k) ? pooler : encoder)[k] = v;
  return { encoder, pooler };
}

export function disposeModel(m: LoadedModel): void {
  tf.dispose(Object.values(m.params));
}

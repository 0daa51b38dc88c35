// BERT's encoder as a pure function of a parameter map under Hugging Face's BertModel names, computing
// what `transformers` computes (eager attention, float32): the same additive mask, exact-erf GELU,
// PyTorch's LayerNorm and nn.Embedding's padding_idx (the [PAD] row gets no gradient). Every dropout
// site draws from its own stream of the caller's rng, so grad-cache replays see identical masks. With a
// reduced precision, the linear layers and attention's two batched products run in it (as under
// PyTorch's autocast); everything else stays float32.
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../data/collator.ts';
import { dropout, embeddingLookup, linear, matMul, sumRows } from '../ops.ts';
import { callNative, callNativeOutputs, nativeElementwise } from '../native.ts';
import type { Precision } from '../precision.ts';
import { foldIn, siteRng, type DropoutRng, type Key } from '../random.ts';
import type { ParamMap } from './types.ts';

export const HIDDEN_ACTS = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu', 'silu', 'swish'] as const;
export type HiddenAct = (typeof HIDDEN_ACTS)[number];

/** The fields of a BERT config.json this encoder reads (names as in the file). */
export interface BertConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  hidden_act: HiddenAct;
  hidden_dropout_prob: number;
  attention_probs_dropout_prob: number;
  max_position_embeddings: number;
  type_vocab_size: number;
  initializer_range: number;
  layer_norm_eps: number;
  /** nn.Embedding's padding_idx: this row of the word embeddings gets no gradient; null: none. */
  pad_token_id: number | null;
  position_embedding_type: 'absolute';
}

/** transformers' BertConfig defaults (bert-base-uncased), used for fields a config.json leaves out. */
export const BERT_CONFIG_DEFAULTS: Readonly<BertConfig> = Object.freeze({
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: 'gelu',
  hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1,
  max_position_embeddings: 512,
  type_vocab_size: 2,
  initializer_range: 0.02,
  layer_norm_eps: 1e-12,
  pad_token_id: 0,
  position_embedding_type: 'absolute',
});

/**
 * Validates a parsed config.json (missing fields take transformers' defaults, as BertConfig does).
 * `source` names the file in errors.
 */
export function bertConfigFromJson(json: unknown, source = 'config.json'): BertConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${source}: expected a JSON object (a BERT config.json)`);
  const raw = json as Record<string, unknown>;
  const fail = (why: string, fix: string) => new Error(`${source}: ${why}; ${fix}`);
  if (raw.model_type !== undefined && raw.model_type !== 'bert') {
    throw fail(`model_type "${String(raw.model_type)}" is not supported`, 'only BERT (model_type "bert") checkpoints load here');
  }
  if (raw.is_decoder === true) throw fail('is_decoder is true', 'the dense retriever needs a bidirectional encoder: set is_decoder to false');
  const cfg: Record<string, unknown> = { ...BERT_CONFIG_DEFAULTS };
  for (const k of Object.keys(BERT_CONFIG_DEFAULTS)) if (raw[k] !== undefined) cfg[k] = raw[k];
  const ints: [keyof BertConfig, number][] = [
    ['vocab_size', 1], ['hidden_size', 1], ['num_hidden_layers', 0], ['num_attention_heads', 1],
    ['intermediate_size', 1], ['max_position_embeddings', 1], ['type_vocab_size', 1],
  ];
  for (const [k, min] of ints) {
    if (!Number.isInteger(cfg[k]) || (cfg[k] as number) < min) throw fail(`${k} must be an integer >= ${min}, got ${JSON.stringify(cfg[k])}`, `fix ${k}`);
  }
  for (const k of ['hidden_dropout_prob', 'attention_probs_dropout_prob'] as const) {
    const v = cfg[k];
    if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw fail(`${k} must be a number in [0, 1), got ${JSON.stringify(v)}`, `fix ${k}`);
  }
  for (const k of ['layer_norm_eps', 'initializer_range'] as const) {
    const v = cfg[k];
    if (typeof v !== 'number' || !(v > 0)) throw fail(`${k} must be a positive number, got ${JSON.stringify(v)}`, `fix ${k}`);
  }
  const pad = cfg.pad_token_id;
  if (pad !== null && !(Number.isInteger(pad) && (pad as number) >= 0 && (pad as number) < (cfg.vocab_size as number))) {
    throw fail(`pad_token_id must be null or an id below vocab_size ${cfg.vocab_size}, got ${JSON.stringify(pad)}`, 'fix pad_token_id');
  }
  if (!(HIDDEN_ACTS as readonly unknown[]).includes(cfg.hidden_act)) {
    throw fail(`hidden_act ${JSON.stringify(cfg.hidden_act)} is not supported`, `use one of ${HIDDEN_ACTS.join(', ')}`);
  }
  if (cfg.position_embedding_type !== 'absolute') {
    throw fail(`position_embedding_type ${JSON.stringify(cfg.position_embedding_type)} is not supported`, 'only "absolute" position embeddings are implemented');
  }
  if ((cfg.hidden_size as number) % (cfg.num_attention_heads as number) !== 0) {
    throw fail(`hidden_size ${cfg.hidden_size} is not a multiple of num_attention_heads ${cfg.num_attention_heads}`, 'fix one of them');
  }
  return cfg as unknown as BertConfig;
}

/** Every parameter of BertModel and its shape (PyTorch layout: Linear weights are [out, in]). */
export function bertParamShapes(config: BertConfig, pooler = true): Record<string, number[]> {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const shapes: Record<string, number[]> = {
    'embeddings.word_embeddings.weight': [config.vocab_size, H],
    'embeddings.position_embeddings.weight': [config.max_position_embeddings, H],
    'embeddings.token_type_embeddings.weight': [config.type_vocab_size, H],
    'embeddings.LayerNorm.weight': [H],
    'embeddings.LayerNorm.bias': [H],
  };
  const dense = (name: string, out: number, inp: number) => {
    shapes[`${name}.weight`] = [out, inp];
    shapes[`${name}.bias`] = [out];
  };
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const l = `encoder.layer.${i}.`;
    for (const p of ['query', 'key', 'value']) dense(`${l}attention.self.${p}`, H, H);
    dense(`${l}attention.output.dense`, H, H);
    shapes[`${l}attention.output.LayerNorm.weight`] = [H];
    shapes[`${l}attention.output.LayerNorm.bias`] = [H];
    dense(`${l}intermediate.dense`, I, H);
    dense(`${l}output.dense`, H, I);
    shapes[`${l}output.LayerNorm.weight`] = [H];
    shapes[`${l}output.LayerNorm.bias`] = [H];
  }
  if (pooler) dense('pooler.dense', H, H);
  return shapes;
}

/**
 * Checks that `params` holds every encoder parameter under `prefix` with the shape `config` implies
 * (the pooler is optional: BertModel's forward here does not use it).
 */
export function checkBertParams(config: BertConfig, params: ParamMap, prefix = ''): void {
  for (const [name, shape] of Object.entries(bertParamShapes(config, true))) {
    const t = params[prefix + name];
    if (!t) {
      if (name.startsWith('pooler.')) continue;
      throw new Error(`BERT parameter ${prefix + name} is missing; the weights do not match config.json (${config.num_hidden_layers} layers) or the prefix "${prefix}"`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`BERT parameter ${prefix + name} has shape [${t.shape}] but config.json implies [${shape}]; use the config.json saved with these weights`);
    }
  }
}

/**
 * Random parameters as transformers initialises BertModel: normal(0, initializer_range) for Linear
 * weights and embeddings (the padding row zero), zero biases, LayerNorm weight 1 and bias 0.
 * `pooler` adds BertModel's pooler.dense (present in HF checkpoints, unused by the retriever).
 */
export function initBertParams(config: BertConfig, key: Key, options: { prefix?: string; pooler?: boolean } = {}): ParamMap {
  const { prefix = '', pooler = true } = options;
  const std = config.initializer_range;
  return tf.tidy(() => {
    const out: ParamMap = {};
    Object.entries(bertParamShapes(config, pooler)).forEach(([name, shape], i) => {
      let t: tf.Tensor;
      if (name.includes('LayerNorm.weight')) t = tf.ones(shape);
      else if (name.endsWith('.bias')) t = tf.zeros(shape);
      else t = tf.randomNormal(shape, 0, std, 'float32', foldIn(key, i));
      if (name === 'embeddings.word_embeddings.weight' && config.pad_token_id !== null) {
        const keep = new Float32Array(config.vocab_size).fill(1);
        keep[config.pad_token_id] = 0;
        t = tf.mul(t, tf.tensor2d(keep, [config.vocab_size, 1]));
      }
      out[prefix + name] = t;
    });
    return out;
  });
}

type SaveFn = (tensors: tf.Tensor[]) => void;
type GradFn = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];
/** tf.customGrad with the types of a fixed-arity function (tfjs types the save function into the inputs). */
function customGrad<A extends tf.Tensor[]>(f: (...args: [...A, SaveFn]) => { value: tf.Tensor; gradFunc: GradFn }) {
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (...xs: A) => tf.Tensor;
}

const layerNormByEps = new Map<number, (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor>();

/**
 * PyTorch's LayerNorm over the last axis (biased variance, eps inside the square root), with the
 * closed-form backward: autodiff through mean and variance records many more broadcast ops. On
 * tensorflow (CPU) forward and backward are one pass each of native/tevatron_fused.cc instead of 9 and
 * 11 elementwise ops ([64, 128, 256]: 15 -> 3 ms).
 */
export function layerNorm<T extends tf.Tensor>(x: T, weight: tf.Tensor1D, bias: tf.Tensor1D, eps: number): T {
  let f = layerNormByEps.get(eps);
  if (!f) {
    f = customGrad<[tf.Tensor, tf.Tensor, tf.Tensor]>((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: SaveFn) => {
      if (nativeElementwise()) {
        const [y, stats] = callNativeOutputs('layerNorm', [x, w, b], eps);
        save([x, stats, w]);
        return { value: y, gradFunc: (dy: tf.Tensor, [xs, st, ws]: tf.Tensor[]) => callNativeOutputs('layerNormGrad', [xs, st, ws, dy]) };
      }
      const xc = tf.sub(x, tf.mean(x, -1, true));
      const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), eps));
      const xhat = tf.mul(xc, rstd);
      save([xhat, rstd, w]);
      return {
        value: tf.add(tf.mul(xhat, w), b),
        gradFunc: (dy: tf.Tensor, [xh, r, ws]: tf.Tensor[]) => {
          const g = tf.mul(dy, ws);
          const dx = tf.mul(r, tf.sub(tf.sub(g, tf.mean(g, -1, true)), tf.mul(xh, tf.mean(tf.mul(g, xh), -1, true))));
          return [dx, sumRows(tf.mul(dy, xh)), sumRows(dy)];
        },
      };
    });
    layerNormByEps.set(eps, f);
  }
  return f(x, weight, bias) as T;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const SQRT_2_PI = Math.sqrt(2 / Math.PI);

/**
 * Exact GELU x·Φ(x) (PyTorch's default), with its derivative Φ(x) + x·φ(x) in one fused expression; on
 * tensorflow (CPU) each is one pass of native/tevatron_fused.cc instead of 5 and 7 elementwise ops over
 * the FFN's largest activation ([8192, 1024]: 13.4 -> 5.6 ms forward, 45 -> 7 ms backward).
 */
const geluErf = customGrad<[tf.Tensor]>((x: tf.Tensor, save: SaveFn) => {
  if (nativeElementwise()) {
    save([x]);
    return { value: callNative('geluExact', [x]), gradFunc: (dy: tf.Tensor, [xs]: tf.Tensor[]) => [callNative('geluExactGrad', [xs, dy])] };
  }
  const cdf = tf.mul(tf.add(tf.erf(tf.mul(x, SQRT1_2)), 1), 0.5);
  save([x, cdf]);
  return {
    value: tf.mul(x, cdf),
    gradFunc: (dy: tf.Tensor, [xs, c]: tf.Tensor[]) => {
      const pdf = tf.mul(tf.exp(tf.mul(tf.square(xs), -0.5)), INV_SQRT_2PI);
      return [tf.mul(dy, tf.add(c, tf.mul(xs, pdf)))];
    },
  };
});

/** The activation `hidden_act` names, as transformers' ACT2FN defines it. */
export function hiddenActivation(name: HiddenAct): (x: tf.Tensor) => tf.Tensor {
  switch (name) {
    case 'gelu':
      return geluErf;
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return (x) => {
        const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), SQRT_2_PI);
        return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
      };
    case 'relu':
      return (x) => tf.relu(x);
    case 'silu':
    case 'swish':
      return (x) => tf.mul(x, tf.sigmoid(x));
    default:
      throw new Error(`hidden_act "${name as string}" is not supported; use one of ${HIDDEN_ACTS.join(', ')}`);
  }
}

/** The identity whose gradient is multiplied by `keep`: nn.Embedding's padding_idx, applied to the looked-up rows. */
const maskGradient = customGrad<[tf.Tensor, tf.Tensor]>((x: tf.Tensor, keep: tf.Tensor, save: SaveFn) => {
  save([keep]);
  return {
    value: tf.clone(x),
    gradFunc: (dy: tf.Tensor, [k]: tf.Tensor[]) => [tf.mul(dy, k), tf.zerosLike(k)],
  };
});

/** transformers fills masked attention scores with the float32 minimum (not -inf, so all-padding rows stay finite). */
const FLOAT32_MIN = -3.4028234663852886e38;

/** Dropout sites: the embeddings, then three per layer. Each draws its own stream from the caller's rng. */
const SITE_EMBEDDINGS = 0;
const siteOf = (layer: number, which: 0 | 1 | 2) => 1 + 3 * layer + which; // attention probs, attention output, FFN output

function checkBatch(config: BertConfig, batch: TokenBatch): void {
  const { rows, length: L, inputIds, attentionMask } = batch;
  if (inputIds.length !== rows * L || attentionMask.length !== rows * L) {
    throw new Error(`token batch of ${rows}×${L} has ${inputIds.length} ids and ${attentionMask.length} mask entries; build it with collateSequences`);
  }
  if (L > config.max_position_embeddings) {
    throw new Error(`sequences of length ${L} exceed max_position_embeddings ${config.max_position_embeddings} in config.json; lower q_max_len / p_max_len to at most ${config.max_position_embeddings}`);
  }
  for (let i = 0; i < inputIds.length; i++) {
    const id = inputIds[i];
    if (id < 0 || id >= config.vocab_size) {
      throw new Error(`token id ${id} at row ${Math.floor(i / L)}, position ${i % L} is outside the model's vocabulary (vocab_size ${config.vocab_size}); the tokenizer does not match the model`);
    }
  }
}

/**
 * The last hidden state [rows, L, hidden] of BertModel for a token batch (token type 0 everywhere,
 * positions 0..L−1). Parameters are read under `prefix` (`query_model.` for an untied query tower);
 * `rng` null means evaluation (no dropout); `precision` is that of the matrix products.
 */
export function bertForward(config: BertConfig, params: ParamMap, batch: TokenBatch, rng: DropoutRng | null, prefix = '', precision: Precision = 'float32'): tf.Tensor3D {
  checkBatch(config, batch);
  checkBertParams(config, params, prefix);
  const P = <T extends tf.Tensor>(name: string) => params[prefix + name] as T;
  const { rows, length: L } = batch;
  const H = config.hidden_size;
  const heads = config.num_attention_heads;
  const headSize = H / heads;
  const scale = 1 / Math.sqrt(headSize);
  const hiddenP = config.hidden_dropout_prob;
  const attnP = config.attention_probs_dropout_prob;
  const site = (s: number) => (rng ? siteRng(rng, s) : null);
  const act = hiddenActivation(config.hidden_act);

  // masks built once on the host: the additive attention bias and the padding_idx gradient mask
  const bias = new Float32Array(rows * L);
  for (let i = 0; i < bias.length; i++) if (batch.attentionMask[i] === 0) bias[i] = FLOAT32_MIN;
  let keep: Float32Array | null = null;
  if (config.pad_token_id !== null && batch.inputIds.includes(config.pad_token_id)) {
    keep = new Float32Array(rows * L);
    for (let i = 0; i < keep.length; i++) keep[i] = batch.inputIds[i] === config.pad_token_id ? 0 : 1;
  }

  return tf.tidy(() => {
    const ids = tf.tensor2d(batch.inputIds, [rows, L], 'int32');
    let words = embeddingLookup(P('embeddings.word_embeddings.weight'), ids);
    if (keep) words = maskGradient(words, tf.tensor3d(keep, [rows, L, 1]));
    const tokenType = tf.slice(P<tf.Tensor2D>('embeddings.token_type_embeddings.weight'), [0, 0], [1, H]);
    const positions = tf.slice(P<tf.Tensor2D>('embeddings.position_embeddings.weight'), [0, 0], [L, H]);
    let h = tf.add(tf.add(words, tokenType), positions) as tf.Tensor3D; // transformers' summation order
    h = layerNorm(h, P('embeddings.LayerNorm.weight'), P('embeddings.LayerNorm.bias'), config.layer_norm_eps);
    h = dropout(h, hiddenP, site(SITE_EMBEDDINGS));
    const maskBias = tf.tensor4d(bias, [rows, 1, 1, L]);

    // [rows, L, H] -> [rows, heads, L, headSize]; rows stay first so dropout masks follow the example
    const splitHeads = (x: tf.Tensor) => tf.transpose(tf.reshape(x, [rows, L, heads, headSize]), [0, 2, 1, 3]);
    for (let i = 0; i < config.num_hidden_layers; i++) {
      // a scope per layer: its intermediates go when it ends (the tape keeps what backward needs)
      h = tf.tidy(() => layer(i, h));
    }
    return h;

    function layer(i: number, h: tf.Tensor3D): tf.Tensor3D {
      const l = `encoder.layer.${i}.`;
      const dense = <T extends tf.Tensor>(x: T, name: string) => linear(x, P<tf.Tensor2D>(`${l}${name}.weight`), P<tf.Tensor1D>(`${l}${name}.bias`), precision);
      // one [rows·L, H] tensor for the three projections: a reduced-precision cast of it is made once
      const h2 = tf.reshape(h, [rows * L, H]);
      // scaling q instead of the scores: [rows, L, H] is smaller than [rows, heads, L, L]
      const q = splitHeads(tf.mul(dense(h2, 'attention.self.query'), scale));
      const k = splitHeads(dense(h2, 'attention.self.key'));
      const v = splitHeads(dense(h2, 'attention.self.value'));
      let probs = tf.softmax(tf.add(matMul(q, k, false, true, precision), maskBias));
      probs = dropout(probs, attnP, site(siteOf(i, 0)));
      const context = tf.reshape(tf.transpose(matMul(probs, v, false, false, precision), [0, 2, 1, 3]), [rows, L, H]) as tf.Tensor3D;
      const attended = dropout(dense(context, 'attention.output.dense'), hiddenP, site(siteOf(i, 1)));
      const a = layerNorm(tf.add(attended, h) as tf.Tensor3D, P(`${l}attention.output.LayerNorm.weight`), P(`${l}attention.output.LayerNorm.bias`), config.layer_norm_eps);
      const inner = act(dense(a, 'intermediate.dense')) as tf.Tensor3D;
      const out = dropout(dense(inner, 'output.dense'), hiddenP, site(siteOf(i, 2)));
      return layerNorm(tf.add(out, a) as tf.Tensor3D, P(`${l}output.LayerNorm.weight`), P(`${l}output.LayerNorm.bias`), config.layer_norm_eps);
    }
  });
}

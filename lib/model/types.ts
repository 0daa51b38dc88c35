// What a model is to the training step: a map of named parameters (Hugging Face names) and two pure
// functions from (parameters, token batch, dropout rng) to representations. Any encoder with this
// shape — the bag-of-embeddings stand-in, BERT — plugs into the same plain and grad-cache steps.
import type * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../data/collator.ts';
import type { DropoutRng } from '../random.ts';

/** Named parameters. Untied bi-encoders keep both towers in one map (e.g. `query_model.*`, `passage_model.*`). */
export type ParamMap = Record<string, tf.Tensor>;

/** Representations [rows, d] of a token batch; `rng` null means no dropout (evaluation). */
export type Encoder = (params: ParamMap, batch: TokenBatch, rng: DropoutRng | null) => tf.Tensor2D;

export interface BiEncoder {
  encodeQuery: Encoder;
  encodePassage: Encoder;
}

// Differentiable building blocks with gradients written for speed on every backend: a linear layer
// whose forward and backward use explicit transposes (wasm's matMul with transpose flags is ~30x
// slower), an embedding lookup whose gradient is a scatter (wasm lacks UnsortedSegmentSum, the
// gradient tfjs gives gather), and dropout drawn from an explicit key.
import * as tf from '@tensorflow/tfjs';
import { dropoutScales, type DropoutRng } from './random.ts';

/** Flattens all leading dimensions: [..., k] -> [prod(...), k]. */
function as2d(x: tf.Tensor): tf.Tensor2D {
  const k = x.shape[x.shape.length - 1];
  return tf.reshape(x, [x.size / k, k]);
}

/**
 * a·b with either operand transposed. TensorFlow's kernel reads transposed operands natively (a dW of
 * [8192, 1024]ᵀ·[8192, 256] takes 13 ms against 20 ms with a separate transpose); wasm's flags are ~30×
 * slower than an explicit transpose, so other backends transpose first.
 */
function matMulT(a: tf.Tensor2D, b: tf.Tensor2D, transposeA: boolean, transposeB: boolean): tf.Tensor2D {
  if (tf.getBackend() === 'tensorflow') return tf.matMul(a, b, transposeA, transposeB);
  return tf.matMul(transposeA ? tf.transpose(a) : a, transposeB ? tf.transpose(b) : b);
}

type SaveFn = (tensors: tf.Tensor[]) => void;
type GradFn = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];
/** tf.customGrad with the types of a fixed-arity function (tfjs types the save function into the inputs). */
function customGrad<A extends tf.Tensor[]>(f: (...args: [...A, SaveFn]) => { value: tf.Tensor; gradFunc: GradFn }) {
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (...xs: A) => tf.Tensor;
}

const linearNoBias = customGrad<[tf.Tensor, tf.Tensor]>((x: tf.Tensor, w: tf.Tensor, save: SaveFn) => {
  const x2 = as2d(x);
  save([x2, w]);
  const y = matMulT(x2, w as tf.Tensor2D, false, true);
  return {
    value: tf.reshape(y, [...x.shape.slice(0, -1), w.shape[0]]),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [xs, ws] = saved;
      const dy2 = as2d(dy);
      return [tf.reshape(tf.matMul(dy2, ws), x.shape), matMulT(dy2, xs as tf.Tensor2D, true, false)];
    },
  };
});

const linearWithBias = customGrad<[tf.Tensor, tf.Tensor, tf.Tensor]>((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: SaveFn) => {
  const x2 = as2d(x);
  save([x2, w]);
  const y = tf.add(matMulT(x2, w as tf.Tensor2D, false, true), b);
  return {
    value: tf.reshape(y, [...x.shape.slice(0, -1), w.shape[0]]),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [xs, ws] = saved;
      const dy2 = as2d(dy);
      return [tf.reshape(tf.matMul(dy2, ws), x.shape), matMulT(dy2, xs as tf.Tensor2D, true, false), tf.sum(dy2, 0)];
    },
  };
});

/**
 * y = x·Wᵀ + b with W in PyTorch's [out, in] layout (as Hugging Face checkpoints store it); x is
 * [..., in], y is [..., out]. Also q·pᵀ when called as linear(q, p).
 */
export function linear<R extends tf.Rank>(x: tf.Tensor<R>, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor<R> {
  if (x.shape[x.shape.length - 1] !== w.shape[1]) {
    throw new Error(`linear: input has ${x.shape[x.shape.length - 1]} features but the weight [${w.shape}] expects ${w.shape[1]}`);
  }
  return (b ? linearWithBias(x, w, b) : linearNoBias(x, w)) as tf.Tensor<R>;
}

const lookup = customGrad<[tf.Tensor, tf.Tensor]>((table: tf.Tensor, ids: tf.Tensor, save: SaveFn) => {
  save([ids]);
  return {
    value: tf.gather(table, ids),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [idx] = saved;
      const n = idx.size;
      // scatterND sums rows of repeated ids, which is the gradient of a lookup
      const dTable = tf.scatterND(tf.reshape(idx, [n, 1]), tf.reshape(dy, [n, table.shape[1]!]), table.shape);
      return [dTable, tf.zerosLike(idx)];
    },
  };
});

/** Rows of `table` [V, H] at integer `ids` (any shape s) -> [...s, H], differentiable in `table`. */
export function embeddingLookup(table: tf.Tensor2D, ids: tf.Tensor): tf.Tensor {
  const flat = lookup(table, tf.reshape(ids, [ids.size]));
  return tf.reshape(flat, [...ids.shape, table.shape[1]]);
}

/**
 * Inverted dropout whose mask comes from `rng` (see random.ts): the first dimension of x is the example
 * row. No rng or rate 0 is the identity (evaluation).
 */
export function dropout<T extends tf.Tensor>(x: T, rate: number, rng: DropoutRng | null): T {
  if (!rng || rate <= 0) return x;
  if (rate >= 1) throw new Error(`dropout rate must be in [0, 1), got ${rate}`);
  const rows = x.shape[0];
  const scales = tf.tensor(dropoutScales(rng, rows, x.size / rows, rate), x.shape, 'float32');
  return tf.mul(x, scales) as T;
}

// Differentiable building blocks with gradients written for speed on every backend: a linear layer
// whose forward and backward use explicit transposes (wasm's matMul with transpose flags is ~30x
// slower), an embedding lookup whose gradient is a scatter (wasm lacks UnsortedSegmentSum, the
// gradient tfjs gives gather), and dropout drawn from an explicit key. The products of `linear` and
// `matMul`, their gradients included, run in the precision the caller asks for (precision.ts).
import * as tf from '@tensorflow/tfjs';
import { callNative, nativeElementwise } from './native.ts';
import { reducedMatMul, type Precision } from './precision.ts';
import { dropoutScales, keepRule, type DropoutRng } from './random.ts';

/** Flattens all leading dimensions: [..., k] -> [prod(...), k]. */
function as2d(x: tf.Tensor): tf.Tensor2D {
  if (x.rank === 2) return x as tf.Tensor2D; // the same tensor, so a kept reduced-precision cast of it is reused
  const k = x.shape[x.shape.length - 1];
  return tf.reshape(x, [x.size / k, k]);
}

/**
 * Σ over every axis but the last, [..., n] -> [n]: the gradient of a broadcast bias or layer-norm weight.
 * On tensorflow it is the product 1ᵀ·x, in `precision` (a bias's gradient under autocast sums the
 * reduced-precision output gradient): Eigen's reduction over the rows of a large matrix is 5x slower
 * than oneDNN's product ([8192, 1024]: 18.7 -> 3.6 ms in float32, 1.6 ms in bfloat16 with x's cast kept).
 */
export function sumRows(x: tf.Tensor, precision: Precision = 'float32'): tf.Tensor1D {
  const x2 = as2d(x);
  const [m, n] = x2.shape;
  if (tf.getBackend() !== 'tensorflow') return tf.sum(x2, 0);
  return tf.tidy(() => tf.reshape(product(tf.ones([1, m]), x2, false, false, precision), [n]));
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

/**
 * op(a)·op(b) (+ bias) in `precision`, not differentiable by itself. Reduced precision keeps both
 * operands' casts in the binding while they live: each operand of a product here is read by another
 * product of the same step (a weight by the backward pass, an activation by its weight's gradient).
 */
function product(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean, precision: Precision, bias?: tf.Tensor1D): tf.Tensor {
  if (precision !== 'float32') return reducedMatMul(a, b, transposeA, transposeB, precision, { a: true, b: true }, bias);
  const y = a.rank === 2 ? matMulT(a as tf.Tensor2D, b as tf.Tensor2D, transposeA, transposeB) : tf.matMul(a, b, transposeA, transposeB);
  return bias ? tf.add(y, bias) : y;
}

/** x·Wᵀ (+ b) with its gradients, every product (the bias's row sum included) in `precision`. */
function linearKernels(precision: Precision) {
  const backward = (x: tf.Tensor, withBias: boolean) => (dy: tf.Tensor, [xs, ws]: tf.Tensor[]) => {
    const dy2 = as2d(dy);
    const grads = [tf.reshape(product(dy2, ws, false, false, precision), x.shape), product(dy2, xs, true, false, precision)];
    return withBias ? [...grads, sumRows(dy2, precision)] : grads;
  };
  const forward = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | undefined, save: SaveFn) => {
    const x2 = as2d(x);
    save([x2, w]);
    return tf.reshape(product(x2, w, false, true, precision, b as tf.Tensor1D | undefined), [...x.shape.slice(0, -1), w.shape[0]]);
  };
  return {
    noBias: customGrad<[tf.Tensor, tf.Tensor]>((x: tf.Tensor, w: tf.Tensor, save: SaveFn) => ({ value: forward(x, w, undefined, save), gradFunc: backward(x, false) })),
    withBias: customGrad<[tf.Tensor, tf.Tensor, tf.Tensor]>((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: SaveFn) => ({ value: forward(x, w, b, save), gradFunc: backward(x, true) })),
  };
}
const linearByPrecision = new Map<Precision, ReturnType<typeof linearKernels>>();

/**
 * y = x·Wᵀ + b with W in PyTorch's [out, in] layout (as Hugging Face checkpoints store it); x is
 * [..., in], y is [..., out]. Also q·pᵀ when called as linear(q, p). `precision` is that of the
 * products (forward and backward); the bias is added in float32.
 */
export function linear<R extends tf.Rank>(x: tf.Tensor<R>, w: tf.Tensor2D, b?: tf.Tensor1D, precision: Precision = 'float32'): tf.Tensor<R> {
  if (x.shape[x.shape.length - 1] !== w.shape[1]) {
    throw new Error(`linear: input has ${x.shape[x.shape.length - 1]} features but the weight [${w.shape}] expects ${w.shape[1]}`);
  }
  let kernels = linearByPrecision.get(precision);
  if (!kernels) linearByPrecision.set(precision, (kernels = linearKernels(precision)));
  return (b ? kernels.withBias(x, w, b) : kernels.noBias(x, w)) as tf.Tensor<R>;
}

/** op(a)·op(b) with its gradients, every product in a reduced precision. */
function reducedMatMulKernel(precision: Precision, transposeA: boolean, transposeB: boolean) {
  const p = (x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean) => product(x, y, tx, ty, precision);
  return customGrad<[tf.Tensor, tf.Tensor]>((a: tf.Tensor, b: tf.Tensor, save: SaveFn) => {
    save([a, b]);
    return {
      value: p(a, b, transposeA, transposeB),
      // the four cases of tfjs's BatchMatMul gradient
      gradFunc: (dy: tf.Tensor, [sa, sb]: tf.Tensor[]) => {
        if (!transposeA && !transposeB) return [p(dy, sb, false, true), p(sa, dy, true, false)];
        if (!transposeA) return [p(dy, sb, false, false), p(dy, sa, true, false)];
        if (!transposeB) return [p(sb, dy, false, true), p(sa, dy, false, false)];
        return [p(sb, dy, true, true), p(dy, sa, true, true)];
      },
    };
  });
}
const matMulByKind = new Map<string, ReturnType<typeof reducedMatMulKernel>>();

/**
 * tf.matMul(a, b, transposeA, transposeB) (rank 2, or batched over equal leading dimensions) with the
 * products, forward and backward, in `precision`; float32 is tf.matMul itself.
 */
export function matMul<T extends tf.Tensor>(a: T, b: T, transposeA = false, transposeB = false, precision: Precision = 'float32'): T {
  if (precision === 'float32') return tf.matMul(a, b, transposeA, transposeB) as T;
  const kind = `${precision}:${transposeA}:${transposeB}`;
  let kernel = matMulByKind.get(kind);
  if (!kernel) matMulByKind.set(kind, (kernel = reducedMatMulKernel(precision, transposeA, transposeB)));
  return kernel(a, b) as T;
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

/** x ⊙ mask with the mask drawn in the binding as it is applied; its gradient is dy ⊙ the same mask. */
function nativeDropout(x: tf.Tensor, rate: number, rng: DropoutRng): tf.Tensor {
  const { threshold, scale } = keepRule(rate);
  const apply = (t: tf.Tensor) => callNative('dropout', [t], rng.key, rng.rowOffset, threshold, scale);
  return customGrad<[tf.Tensor]>((t: tf.Tensor) => ({ value: apply(t), gradFunc: (dy: tf.Tensor) => [apply(dy)] }))(x);
}

/**
 * Inverted dropout whose mask comes from `rng` (see random.ts): the first dimension of x is the example
 * row. No rng or rate 0 is the identity (evaluation). On tensorflow (CPU) the mask is drawn in the binding
 * as it is applied (the same mask, element for element), not made here, copied in and kept for backward.
 */
export function dropout<T extends tf.Tensor>(x: T, rate: number, rng: DropoutRng | null): T {
  if (!rng || rate <= 0) return x;
  if (rate >= 1) throw new Error(`dropout rate must be in [0, 1), got ${rate}`);
  if (nativeElementwise()) return nativeDropout(x, rate, rng) as T;
  const rows = x.shape[0];
  const scales = tf.tensor(dropoutScales(rng, rows, x.size / rows, rate), x.shape, 'float32');
  return tf.mul(x, scales) as T;
}

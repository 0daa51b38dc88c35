// tevatron-ts's entry points in the tensorflow binding (native/*.cc, compiled in by setup:tensorflow):
// whether the running binding has one, and float32 tensors in and out of them. Everything else in lib/
// uses tfjs-core ops; precision.ts (reduced-precision products), model/bert.ts's one-pass GELU and layer
// norm, optim.ts's one-pass AdamW, ops.ts's dropout and dist/tensorflow.ts's collectives come through here.
import * as tf from '@tensorflow/tfjs';

interface TensorInfo {
  id: number;
  shape: number[];
  dtype: number;
}

/** The patched binding's entry points (native/tevatron.h lists them in `tevatronExports`). */
export interface NativeBinding {
  mixedMatMul?(a: number, b: number, bias: number, transposeA: boolean, transposeB: boolean, dtype: number, keep: number): TensorInfo;
  mixedCacheSize?(): number;
  geluExact?(x: number): TensorInfo;
  geluExactGrad?(x: number, dy: number): TensorInfo;
  layerNorm?(x: number, w: number, b: number, eps: number): TensorInfo[];
  layerNormGrad?(x: number, stats: number, w: number, dy: number): TensorInfo[];
  adamw?(p: number, g: number, m: number, v: number, lr: number, beta1: number, beta2: number, eps: number, decay: number, bc1: number, bc2: number): TensorInfo[];
  dropout?(x: number, key: number, rowOffset: number, threshold: number, scale: number): TensorInfo;
  /** native/tevatron_collective.cc: TensorFlow's collective ops (lib/dist/tensorflow.ts). */
  collectiveServer?(): { requested: boolean; error: string | null };
  collective?(x: number, kind: number, groupSize: number, groupKey: number, instanceKey: number, divide: boolean, hint: string, timeoutSeconds: number, subdivs: number): Promise<TensorInfo>;
  collectivePeerHealth?(task: string, timeoutMs: number): Promise<void>;
  collectiveAbort?(message: string): void;
}

/** What lib/ uses of tfjs-node's NodeJSKernelBackend. */
interface NodeBackend {
  binding: NativeBinding;
  isUsingGpuDevice: boolean;
  getInputTensorIds(tensors: tf.Tensor[]): number[];
  createOutputTensor(info: TensorInfo): tf.Tensor;
}

/** The running tfjs-node backend, or null on another backend. */
function nodeBackend(): NodeBackend | null {
  return tf.getBackend() === 'tensorflow' ? (tf.backend() as unknown as NodeBackend) : null;
}

/** The running binding, if the backend is tensorflow. */
export function runningBinding(): NativeBinding | null {
  return nodeBackend()?.binding ?? null;
}

type Arg = number | boolean | string;

function entryPoint<R>(name: keyof NativeBinding): { backend: NodeBackend; entry: (...a: Arg[]) => R } {
  const backend = nodeBackend();
  const entry = backend?.binding[name] as ((...a: Arg[]) => R) | undefined;
  if (!backend || typeof entry !== 'function') throw new Error(`the tensorflow binding has no ${name}: run \`npm run setup:tensorflow\` to rebuild it`);
  return { backend, entry };
}

function call(name: keyof NativeBinding, tensors: tf.Tensor[], args: Arg[]): tf.Tensor | tf.Tensor[] {
  const { backend, entry } = entryPoint<TensorInfo | TensorInfo[]>(name);
  const out = entry.call(backend.binding, ...backend.getInputTensorIds(tensors), ...args);
  return Array.isArray(out) ? out.map((info) => backend.createOutputTensor(info)) : backend.createOutputTensor(out);
}

/** callNative for an entry point that runs on a thread of its own and settles a promise with its tensor. */
export async function callNativeAsync(name: keyof NativeBinding, tensors: tf.Tensor[], ...args: Arg[]): Promise<tf.Tensor> {
  const { backend, entry } = entryPoint<Promise<TensorInfo>>(name);
  return backend.createOutputTensor(await entry.call(backend.binding, ...backend.getInputTensorIds(tensors), ...args));
}

/** Calls entry point `name` of the running binding with the tensors' ids then `args`: its float32 tensor. */
export function callNative(name: keyof NativeBinding, tensors: tf.Tensor[], ...args: Arg[]): tf.Tensor {
  return call(name, tensors, args) as tf.Tensor;
}

/** callNative for an entry point with several outputs. */
export function callNativeOutputs(name: keyof NativeBinding, tensors: tf.Tensor[], ...args: Arg[]): tf.Tensor[] {
  return call(name, tensors, args) as tf.Tensor[];
}

/**
 * Whether the one-pass GELU, layer norm, AdamW and dropout of native/tevatron_fused.cc run here: on
 * tensorflow on the CPU (they read host memory), with a binding that has them.
 */
export function nativeElementwise(): boolean {
  const backend = nodeBackend();
  return backend !== null && !backend.isUsingGpuDevice && typeof backend.binding.dropout === 'function';
}

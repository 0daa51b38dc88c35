// Mixed precision as Hugging Face's Trainer defines it (--bf16, --fp16): the encoder's matrix products
// (linear layers and attention's batched products, forward and backward) in bfloat16 or float16 with
// float32 accumulation; weights, optimizer state, the loss, layer norm, softmax and GELU in float32.
// TensorFlow.js has no reduced-precision dtype, so a product runs inside the tensorflow binding
// (native/tevatron_mixed.cc): float32 operands in, float32 result out, the casts and the reduced-precision
// kernel in between. Which precision a run gets depends on the backend, the device and the CPU.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { BackendInfo } from './backend.ts';
import { callNative, runningBinding, type NativeBinding } from './native.ts';

export type Precision = 'float32' | 'bfloat16' | 'float16';
export type ReducedPrecision = Exclude<Precision, 'float32'>;

/** TensorFlow's TF_DataType numbers. */
const TF_DTYPE: Record<ReducedPrecision, number> = { bfloat16: 14, float16: 19 };

const SETUP = 'run `npm run setup:tensorflow` to rebuild it';

/**
 * Whether the running backend can compute reduced-precision products, and if not, why (one clause).
 * `binding`: tfjs-node's, by default the running one's.
 */
export function mixedPrecisionSupport(name = tf.getBackend(), binding: NativeBinding | null = runningBinding()): { ok: true } | { ok: false; reason: string } {
  if (name !== 'tensorflow') return { ok: false, reason: `the ${name} backend has no reduced-precision kernels` };
  if (typeof binding?.mixedMatMul !== 'function') {
    return { ok: false, reason: `the tensorflow binding was built without tevatron-ts's mixed-precision entry points (an older build): ${SETUP}` };
  }
  return { ok: true };
}

/**
 * op(a)·op(b) (op: transpose when asked; rank 2, or batched over leading dimensions) with both operands
 * rounded to `precision`, float32 accumulation and a float32 result, plus an optional float32 bias [n].
 * `keep.a` / `keep.b`: the binding keeps that operand's cast until the operand is disposed, for the next
 * product that reads it (a weight, or an activation the backward pass multiplies again). Not on the
 * gradient tape: ops.ts wraps it in custom gradients.
 */
export function reducedMatMul(
  a: tf.Tensor,
  b: tf.Tensor,
  transposeA: boolean,
  transposeB: boolean,
  precision: ReducedPrecision,
  keep: { a?: boolean; b?: boolean } = {},
  bias?: tf.Tensor1D,
): tf.Tensor {
  const support = mixedPrecisionSupport();
  if (!support.ok) throw new Error(`reduced-precision products are unavailable: ${support.reason}`);
  const keepBits = (keep.a ? 1 : 0) | (keep.b ? 2 : 0);
  return bias
    ? callNative('mixedMatMul', [a, b, bias], transposeA, transposeB, TF_DTYPE[precision], keepBits)
    : callNative('mixedMatMul', [a, b], -1, transposeA, transposeB, TF_DTYPE[precision], keepBits);
}

/** How many casts the binding keeps (operands alive that were multiplied with `keep`); 0 off tensorflow. */
export function keptCasts(): number {
  return mixedPrecisionSupport().ok ? runningBinding()!.mixedCacheSize!() : 0;
}

/** The CPU's bfloat16 instructions as /proc/cpuinfo names them (amx_bf16, avx512_bf16), or null. */
export function cpuBf16Instructions(cpuinfo: string | null = readCpuinfo()): string | null {
  const flags = new Set((cpuinfo?.match(/^flags\s*:(.*)$/m)?.[1] ?? '').trim().split(/\s+/));
  return ['amx_bf16', 'avx512_bf16'].find((f) => flags.has(f)) ?? null;
}

function readCpuinfo(): string | null {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return null;
  }
}

/** What decides the precision a run can have. */
export interface PrecisionEnvironment {
  backend: BackendInfo['name'];
  device: 'cpu' | 'gpu';
  /** mixedPrecisionSupport() of the running backend. */
  kernels: { ok: true } | { ok: false; reason: string };
  /** cpuBf16Instructions(). */
  cpuBf16: string | null;
}

export function precisionEnvironment(info: BackendInfo): PrecisionEnvironment {
  return { backend: info.name, device: info.device ?? 'cpu', kernels: mixedPrecisionSupport(), cpuBf16: cpuBf16Instructions() };
}

export interface PrecisionPlan {
  precision: Precision;
  /** Dynamic loss scaling (float16 only: bfloat16 has float32's range). */
  lossScaling: boolean;
  /** One line each, for the log: why a flag was not honoured as asked. */
  warnings: string[];
  /** For the log and trainer_state.json. */
  description: string;
}

/**
 * The precision of the products for --bf16 / --fp16 here. bfloat16: on GPUs, and on CPUs with bfloat16
 * instructions (elsewhere it is slower than float32). float16 (with loss scaling): on GPUs; CPUs have no
 * fast float16 kernels, so there it becomes bfloat16 where available. Otherwise float32, with a warning.
 */
export function choosePrecision(flags: { bf16: boolean; fp16: boolean }, env: PrecisionEnvironment): PrecisionPlan {
  const float32 = (why: string): PrecisionPlan => ({ precision: 'float32', lossScaling: false, warnings: [why], description: 'float32' });
  if (flags.bf16 && flags.fp16) throw new Error('--bf16 and --fp16 both given: pick one');
  if (!flags.bf16 && !flags.fp16) return { precision: 'float32', lossScaling: false, warnings: [], description: 'float32' };
  const flag = flags.bf16 ? '--bf16' : '--fp16';
  if (!env.kernels.ok) return float32(`warning: ${flag} ignored: ${env.kernels.reason}; the products run in float32`);
  const rest = 'weights, optimizer state, loss, layer norm, softmax and GELU in float32';
  if (env.device === 'gpu') {
    return flags.bf16
      ? { precision: 'bfloat16', lossScaling: false, warnings: [], description: `bfloat16 products on the GPU; ${rest}` }
      : { precision: 'float16', lossScaling: true, warnings: [], description: `float16 products on the GPU with dynamic loss scaling; ${rest}` };
  }
  const bf16 = { precision: 'bfloat16' as const, lossScaling: false, description: `bfloat16 products (${env.cpuBf16}); ${rest}` };
  if (flags.fp16) {
    return env.cpuBf16
      ? { ...bf16, warnings: [`warning: --fp16: CPUs have no fast float16 kernels; the products run in bfloat16 instead (this CPU has ${env.cpuBf16}), without loss scaling`] }
      : float32('warning: --fp16 ignored: CPUs have no fast float16 kernels and this one has no bfloat16 instructions (avx512_bf16, amx_bf16) either; the products run in float32');
  }
  return env.cpuBf16
    ? { ...bf16, warnings: [] }
    : float32('warning: --bf16 ignored: this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16), without which bfloat16 products are slower than float32; the products run in float32');
}

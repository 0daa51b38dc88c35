// Mixed precision: which precision a run gets (backend, device, CPU), and the reduced-precision products
// of the patched binding checked against float64 products of operands rounded in JavaScript.
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backendInfo } from '../lib/backend.ts';
import { linear, matMul } from '../lib/ops.ts';
import { choosePrecision, cpuBf16Instructions, keptCasts, mixedPrecisionSupport, precisionEnvironment, reducedMatMul, type PrecisionEnvironment, type ReducedPrecision } from '../lib/precision.ts';
import { backend, testUnless } from './helpers.ts';

const support = mixedPrecisionSupport();
const noKernels = support.ok ? null : support.reason;

/** Significant bits and smallest normal exponent of each reduced type. */
const FORMAT: Record<ReducedPrecision, { bits: number; emin: number }> = { bfloat16: { bits: 8, emin: -126 }, float16: { bits: 11, emin: -14 } };

/** x rounded to the nearest value of `p` (ties to even), computed in float64. */
function round(x: number, p: ReducedPrecision): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const { bits, emin } = FORMAT[p];
  const ulp = 2 ** (Math.max(Math.floor(Math.log2(Math.abs(x))), emin) - bits + 1);
  const q = x / ulp;
  const lo = Math.floor(q);
  const r = q - lo > 0.5 || (q - lo === 0.5 && lo % 2 !== 0) ? lo + 1 : lo;
  return r * ulp;
}

/** Unit roundoff: the largest relative error of one rounding. */
const unit = (p: ReducedPrecision) => 2 ** -FORMAT[p].bits;

type Mat = { data: Float32Array; shape: number[] };
const mat = (t: tf.Tensor): Mat => ({ data: t.dataSync() as Float32Array, shape: t.shape });

/**
 * op(a)·op(b) over batched matrices in float64: the product of the operands rounded to `p` (or as they
 * are, p null), and Σ|a||b| per entry (the scale of rounding errors).
 */
function reference(a: Mat, b: Mat, ta: boolean, tb: boolean, p: ReducedPrecision | null): { value: number[]; scale: number[]; k: number } {
  const r = a.shape.length;
  const [ar, ac] = a.shape.slice(r - 2);
  const [br, bc] = b.shape.slice(r - 2);
  const [m, k] = ta ? [ac, ar] : [ar, ac];
  const n = tb ? br : bc;
  const batch = a.data.length / (ar * ac);
  const at = (x: Mat, rows: number, cols: number, bi: number, i: number, j: number, t: boolean) => {
    const v = x.data[bi * rows * cols + (t ? j * cols + i : i * cols + j)];
    return p ? round(v, p) : v;
  };
  const value: number[] = [];
  const scale: number[] = [];
  for (let bi = 0; bi < batch; bi++)
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        let abs = 0;
        for (let l = 0; l < k; l++) {
          const prod = at(a, ar, ac, bi, i, l, ta) * at(b, br, bc, bi, l, j, tb);
          s += prod;
          abs += Math.abs(prod);
        }
        value.push(s);
        scale.push(abs);
      }
  return { value, scale, k };
}

/**
 * `got` is the reduced-precision product: within one rounding of the output (u·|c|) and float32
 * accumulation (2k·2⁻²⁴·Σ|âb̂|) of the float64 product of the rounded operands; and within
 * (2u + u²)·Σ|a||b| + u·|c| (plus float32's own error) of the float32 product.
 */
function checkProduct(got: tf.Tensor, a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean, p: ReducedPrecision, what: string): void {
  const g = got.dataSync();
  const u = unit(p);
  const rounded = reference(mat(a), mat(b), ta, tb, p);
  const exact = reference(mat(a), mat(b), ta, tb, null);
  const acc = 2 * rounded.k * 2 ** -24;
  let differs = false;
  rounded.value.forEach((c, i) => {
    const bound = u * Math.abs(c) + acc * rounded.scale[i];
    assert.ok(Math.abs(g[i] - c) <= bound, `${what}[${i}]: ${g[i]} vs ${c} (rounded operands): off by ${Math.abs(g[i] - c)} > ${bound}`);
    const loose = (2 * u + u * u + acc) * exact.scale[i] + u * Math.abs(exact.value[i]);
    assert.ok(Math.abs(g[i] - exact.value[i]) <= loose, `${what}[${i}]: ${g[i]} vs float32's ${exact.value[i]} beyond ${loose}`);
    differs ||= Math.abs(g[i] - exact.value[i]) > acc * exact.scale[i];
  });
  assert.ok(differs, `${what}: no entry differs from the float32 product by more than float32 rounding: the product did not run in ${p}`);
}

const env = (over: Partial<PrecisionEnvironment>): PrecisionEnvironment => ({ backend: 'tensorflow', device: 'cpu', kernels: { ok: true }, cpuBf16: 'avx512_bf16', ...over });
const plan = (flags: { bf16?: boolean; fp16?: boolean }, e: PrecisionEnvironment) => choosePrecision({ bf16: false, fp16: false, ...flags }, e);

test('--bf16 / --fp16 choose bfloat16, float16 with loss scaling, or float32 with one warning, by device and CPU', () => {
  assert.equal(plan({}, env({})), { precision: 'float32', lossScaling: false, warnings: [], description: 'float32' });
  const cpuBf16 = plan({ bf16: true }, env({}));
  assert.equal([cpuBf16.precision, cpuBf16.lossScaling, cpuBf16.warnings], ['bfloat16', false, []]);
  assert.match(cpuBf16.description, /^bfloat16 products \(avx512_bf16\); weights, optimizer state, loss, layer norm, softmax and GELU in float32$/);
  const gpu16 = plan({ fp16: true }, env({ device: 'gpu', cpuBf16: null }));
  assert.equal([gpu16.precision, gpu16.lossScaling, gpu16.warnings], ['float16', true, []]);
  assert.equal(plan({ bf16: true }, env({ device: 'gpu', cpuBf16: null })).precision, 'bfloat16');
  const cpu16 = plan({ fp16: true }, env({ cpuBf16: 'amx_bf16' }));
  assert.equal([cpu16.precision, cpu16.lossScaling], ['bfloat16', false]);
  assert.equal(cpu16.warnings, ['warning: --fp16: CPUs have no fast float16 kernels; the products run in bfloat16 instead (this CPU has amx_bf16), without loss scaling']);
  for (const [flags, e, line] of [
    [{ bf16: true }, env({ cpuBf16: null }), /^warning: --bf16 ignored: this CPU has no bfloat16 instructions \(avx512_bf16, amx_bf16\).*; the products run in float32$/],
    [{ fp16: true }, env({ cpuBf16: null }), /^warning: --fp16 ignored: CPUs have no fast float16 kernels and this one has no bfloat16 instructions/],
    [{ bf16: true }, env({ backend: 'wasm', kernels: { ok: false, reason: 'the wasm backend has no reduced-precision kernels' } }), /^warning: --bf16 ignored: the wasm backend has no reduced-precision kernels; the products run in float32$/],
    [{ fp16: true }, env({ device: 'gpu', kernels: { ok: false, reason: 'the tensorflow binding was built without ...' } }), /^warning: --fp16 ignored: the tensorflow binding was built without/],
  ] as const) {
    const p = plan(flags, e);
    assert.equal([p.precision, p.lossScaling, p.warnings.length], ['float32', false, 1]);
    assert.match(p.warnings[0], line);
  }
  assert.throws(() => plan({ bf16: true, fp16: true }, env({})), /--bf16 and --fp16 both given: pick one/);
});

test('a tensorflow binding built without native/\'s entry points (an older build) is named, with the fix', () => {
  assert.equal(mixedPrecisionSupport('tensorflow', {}), {
    ok: false,
    reason: 'the tensorflow binding was built without tevatron-ts\'s mixed-precision entry points (an older build): run `npm run setup:tensorflow` to rebuild it',
  });
});

test('bfloat16 instructions are read from /proc/cpuinfo\'s flags', () => {
  assert.is(cpuBf16Instructions('processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n'), 'avx512_bf16');
  assert.is(cpuBf16Instructions('flags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\n'), 'amx_bf16');
  assert.is(cpuBf16Instructions('flags\t\t: fpu sse avx2 avx512f\n'), null);
  assert.is(cpuBf16Instructions(null), null);
});

test('the running backend: wasm and cpu have no reduced-precision kernels, and --bf16 warns once and stays float32', () => {
  const e = precisionEnvironment(backendInfo());
  if (backend === 'tensorflow') {
    assert.ok(e.kernels.ok, 'the tensorflow binding built by setup:tensorflow has native/\'s entry points');
    return;
  }
  assert.equal(e.kernels, { ok: false, reason: `the ${backend} backend has no reduced-precision kernels` });
  for (const flags of [{ bf16: true }, { fp16: true }]) {
    const p = plan(flags, e);
    assert.equal([p.precision, p.warnings.length], ['float32', 1]);
  }
  assert.throws(() => reducedMatMul(tf.ones([2, 2]), tf.ones([2, 2]), false, false, 'bfloat16'), new RegExp(`reduced-precision products are unavailable: the ${backend} backend`));
});

for (const p of ['bfloat16', 'float16'] as const) {
  testUnless(noKernels, `${p} products (rank 2 and batched, every transpose) equal float64 products of ${p}-rounded operands, and float32's within ${p} rounding`, () => {
    tf.tidy(() => {
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
        const a = tf.randomNormal(ta ? [9, 5] : [5, 9], 0, 1, 'float32', 1);
        const b = tf.randomNormal(tb ? [4, 9] : [9, 4], 0, 3, 'float32', 2);
        checkProduct(reducedMatMul(a, b, ta, tb, p), a, b, ta, tb, p, `${ta ? 'aᵀ' : 'a'}·${tb ? 'bᵀ' : 'b'}`);
        const qa = tf.randomNormal(ta ? [2, 3, 8, 6] : [2, 3, 6, 8], 0, 1, 'float32', 3);
        const qb = tf.randomNormal(tb ? [2, 3, 7, 8] : [2, 3, 8, 7], 0, 1, 'float32', 4);
        checkProduct(reducedMatMul(qa, qb, ta, tb, p), qa, qb, ta, tb, p, `batched ${ta}/${tb}`);
      }
    });
  });
}

testUnless(noKernels, 'bfloat16 linear and matMul: gradients are bfloat16 products too (dX = dY·W, dW = dYᵀ·X, db = 1ᵀ·dY, the four batched cases)', () => {
  tf.tidy(() => {
    const x = tf.randomNormal([6, 10], 0, 1, 'float32', 5) as tf.Tensor2D;
    const w = tf.randomNormal([7, 10], 0, 0.5, 'float32', 6) as tf.Tensor2D;
    const bias = tf.randomNormal([7], 0, 1, 'float32', 7) as tf.Tensor1D;
    const dy = tf.randomNormal([6, 7], 0, 1, 'float32', 8);
    const y = linear(x, w, bias, 'bfloat16');
    checkProduct(tf.sub(y, bias), x, w, false, true, 'bfloat16', 'x·wᵀ');
    const [dx, dw, db] = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => linear(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor1D, 'bfloat16'))([x, w, bias], dy);
    checkProduct(dx, dy, w, false, false, 'bfloat16', 'dX');
    checkProduct(dw, dy, x, true, false, 'bfloat16', 'dW');
    checkProduct(tf.reshape(db, [1, 7]), tf.ones([1, 6]), dy, false, false, 'bfloat16', 'db = 1ᵀ·dY');
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
      const a = tf.randomNormal([2, 3, 6, 6], 0, 1, 'float32', 9);
      const b = tf.randomNormal([2, 3, 6, 6], 0, 1, 'float32', 10);
      const g = tf.randomNormal([2, 3, 6, 6], 0, 1, 'float32', 11);
      const [da, dB] = tf.grads((s: tf.Tensor, t: tf.Tensor) => matMul(s, t, ta, tb, 'bfloat16'))([a, b], g);
      // tfjs's BatchMatMul gradient, written out: each is one product of dY with the other operand
      const [ea, eb] = !ta && !tb ? [[g, b, false, true], [a, g, true, false]] : !ta ? [[g, b, false, false], [g, a, true, false]] : !tb ? [[b, g, false, true], [a, g, false, false]] : [[b, g, true, true], [g, a, true, true]];
      checkProduct(da, ea[0] as tf.Tensor, ea[1] as tf.Tensor, ea[2] as boolean, ea[3] as boolean, 'bfloat16', `dA (${ta}/${tb})`);
      checkProduct(dB, eb[0] as tf.Tensor, eb[1] as tf.Tensor, eb[2] as boolean, eb[3] as boolean, 'bfloat16', `dB (${ta}/${tb})`);
    }
  });
});

testUnless(noKernels, 'a kept cast lives as long as its tensor: disposing the operands empties the binding\'s cache', () => {
  const before = keptCasts();
  const a = tf.randomNormal([4, 3]);
  const b = tf.randomNormal([3, 5]);
  tf.dispose([reducedMatMul(a, b, false, false, 'bfloat16', { a: true, b: true }), reducedMatMul(a, b, false, false, 'bfloat16', { b: true })]);
  assert.is(keptCasts(), before + 2, 'one cast per kept operand, reused by the second product');
  a.dispose();
  assert.is(keptCasts(), before + 1);
  b.dispose();
  assert.is(keptCasts(), before);
  // a training-style use: casts made during forward and backward are all gone with the step's tensors
  const x = tf.randomNormal([6, 10]);
  const w = tf.randomNormal([7, 10]);
  tf.dispose(tf.grads((s: tf.Tensor, t: tf.Tensor) => tf.sum(tf.square(linear(s as tf.Tensor2D, t as tf.Tensor2D, undefined, 'bfloat16'))))([x, w]));
  assert.is(keptCasts(), before + 2, 'only the live inputs\' casts remain');
  tf.dispose([x, w]);
  assert.is(keptCasts(), before);
});

test.run();

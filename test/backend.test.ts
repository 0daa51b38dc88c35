// Backend choice: the runner's backend is the one running and says what it is (tensorflow: its
// TensorFlow version); 'auto' picks tensorflow when it loads and TensorFlow's C++ logs are quiet unless
// asked for; a missing or broken binding explains how to build it; the setup script fails on one line;
// and matMul and the gradients of gather and erf agree with float64 references on every backend.
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backendInfo, describeBackend, filterTensorflowLog, initBackend, probeTfjsNode, tfjsNodeBindingPath, type BackendChoice } from '../lib/backend.ts';
import { embeddingLookup } from '../lib/ops.ts';
import { backend } from './helpers.ts';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** Runs TypeScript in a fresh Node process (tsx) from the repository root. */
function runTs(args: string[], env: NodeJS.ProcessEnv) {
  // NO_COLOR (the runner's) next to FORCE_COLOR (uvu's) makes Node print a warning on stderr.
  const quiet = withoutKeys(env, 'NO_COLOR', 'FORCE_COLOR');
  return spawnSync(process.execPath, ['--import', 'tsx', ...args], { cwd: root, env: quiet, encoding: 'utf8', timeout: 120_000 });
}

function withoutKeys(env: NodeJS.ProcessEnv, ...keys: string[]): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const k of keys) delete out[k];
  return out;
}

test('the backend the runner asked for is running, and backendInfo describes it', () => {
  assert.is(tf.getBackend(), backend);
  if (process.env.TEVATRON_BACKEND) assert.is(backend, process.env.TEVATRON_BACKEND);
  const info = backendInfo();
  assert.is(info.name, backend);
  assert.is(info.tfjsVersion, tf.version_core);
  if (backend === 'tensorflow') {
    assert.match(info.tensorflowVersion ?? '', /^2\.\d+\.\d+/);
    assert.match(info.package ?? '', /^@tensorflow\/tfjs-node(-gpu)?$/);
    assert.ok(info.device === 'cpu' || info.device === 'gpu');
    assert.is(describeBackend(info), `tensorflow (TensorFlow ${info.tensorflowVersion} on ${info.device}, ${info.package})`);
  } else {
    assert.is(info.tensorflowVersion, undefined);
    assert.is(describeBackend(info), backend);
  }
});

test('an unknown backend is an error naming the flag or variable and the choices', async () => {
  try {
    await initBackend('gpu' as BackendChoice);
    assert.unreachable('initBackend accepted gpu');
  } catch (err) {
    assert.match((err as Error).message, /^--backend gpu: unknown backend; use one of auto, tensorflow, wasm, cpu$/);
  }
  const saved = process.env.TEVATRON_BACKEND;
  process.env.TEVATRON_BACKEND = 'webgpu';
  try {
    await initBackend('auto');
    assert.unreachable('initBackend accepted TEVATRON_BACKEND=webgpu');
  } catch (err) {
    assert.match((err as Error).message, /^TEVATRON_BACKEND=webgpu: unknown backend/);
  } finally {
    if (saved === undefined) delete process.env.TEVATRON_BACKEND;
    else process.env.TEVATRON_BACKEND = saved;
  }
  assert.is(tf.getBackend(), backend);
});

test('a tfjs-node package whose binding is missing or broken says how to build it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tevatron-tfjs-node-'));
  try {
    const pkgJson = path.join(dir, 'package.json');
    const binary = { module_name: 'tfjs_binding', module_path: './lib/napi-v{napi_build_version}', napi_versions: [3, 4, 5, 6, 7, 8] };
    fs.writeFileSync(pkgJson, JSON.stringify({ name: '@tensorflow/tfjs-node', version: '4.22.0', binary }));
    // node-pre-gyp takes the highest listed N-API version this Node supports: 8 on Node >= 18.
    const expected = path.join(dir, 'lib/napi-v8/tfjs_binding.node');
    assert.equal(tfjsNodeBindingPath(pkgJson), { path: expected });
    const missing = probeTfjsNode(pkgJson);
    assert.equal(missing, { ok: false, reason: 'its binding is not built', fix: 'run `npm run setup:tensorflow` (README, section Backends)' });
    fs.mkdirSync(path.dirname(expected), { recursive: true });
    fs.writeFileSync(expected, 'not a shared object');
    const broken = probeTfjsNode(pkgJson);
    assert.is(broken.ok, false);
    assert.ok(!broken.ok && broken.reason.startsWith(`its binding ${expected} does not load (`), JSON.stringify(broken));
    assert.match(!broken.ok ? broken.fix : '', /npm run setup:tensorflow -- --force/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('setup:tensorflow reports a bad TensorFlow folder on one line, and --optional turns it into exit 0', () => {
  const env = withoutKeys(process.env, 'TEVATRON_TENSORFLOW', 'TEVATRON_TENSORFLOW_DIR', 'TEVATRON_TENSORFLOW_WHEEL');
  const bad = path.join(os.tmpdir(), 'tevatron-no-such-tensorflow');
  const hard = runTs(['scripts/setup-tensorflow.ts', '--tensorflow-dir', bad], env);
  assert.is(hard.status, 1, hard.stderr);
  assert.is(hard.stdout, '');
  assert.is(hard.stderr.trim().split('\n').length, 1, hard.stderr);
  assert.match(hard.stderr, `setup:tensorflow: --tensorflow-dir ${bad}: no such folder; give the folder holding libtensorflow_cc.so.2`);

  const soft = runTs(['scripts/setup-tensorflow.ts', '--optional', '--tensorflow-dir', bad], env);
  assert.is(soft.status, 0, soft.stderr);
  assert.is(soft.stderr, '');
  assert.is(soft.stdout.trim().split('\n').length, 1, soft.stdout);
  assert.match(soft.stdout, /^tevatron-ts: tensorflow backend not built: --tensorflow-dir .* \(wasm\/cpu will be used; retry with `npm run setup:tensorflow`\)$/m);

  const notTf = fs.mkdtempSync(path.join(os.tmpdir(), 'tevatron-not-tf-'));
  try {
    const wrong = runTs(['scripts/setup-tensorflow.ts', '--tensorflow-dir', notTf], env);
    assert.is(wrong.status, 1);
    assert.match(wrong.stderr, `--tensorflow-dir ${notTf}: no TensorFlow C library there; expected libtensorflow_cc.so.2`);
    const flag = runTs(['scripts/setup-tensorflow.ts', '--gpus'], env);
    assert.is(flag.status, 1);
    assert.match(flag.stderr, /^setup:tensorflow: Unknown option '--gpus'.*; see --help\n$/);
  } finally {
    fs.rmSync(notTf, { recursive: true, force: true });
  }
});

test("TensorFlow's load-time log keeps entries at or above the level, with their continuation lines", () => {
  const log = [
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'I0000 00:00:1795708589.218539   21560 port.cc:153] oneDNN custom operations are on.',
    'W0000 00:00:1795708589.300000   21560 gpu_device.cc:2344] Cannot dlopen some GPU libraries.',
    'Skipping registering GPU devices...',
    '2026-01-16 10:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:227] This TensorFlow binary is optimized',
    'To enable the following instructions: AVX2 FMA',
    'E0116 10:00:00.5 21560 cuda_dnn.cc:8310] Unable to register cuDNN factory',
  ].join('\n');
  const lines = (level: number) => filterTensorflowLog(log, level).split('\n').filter(Boolean);
  assert.equal(lines(0), log.split('\n').slice(1));
  assert.equal(lines(1), [log.split('\n')[2], log.split('\n')[3], log.split('\n')[6]]);
  assert.equal(lines(2), [log.split('\n')[6]]);
  assert.equal(lines(3), []);
  assert.equal(filterTensorflowLog('plain text before any entry\n', 3).split('\n').filter(Boolean), ['plain text before any entry']);
});

if (backend === 'tensorflow') {
  test("'auto' starts tensorflow; TF_CPP_MIN_LOG_LEVEL defaults to 2 and a user's value is kept", () => {
    const script = [
      '--input-type=module',
      '-e',
      `import { initBackend } from ${JSON.stringify(path.join(root, 'lib/backend.ts'))};
       console.log(JSON.stringify({ backend: await initBackend('auto'), level: process.env.TF_CPP_MIN_LOG_LEVEL }));`,
    ];
    const env = withoutKeys(process.env, 'TEVATRON_BACKEND', 'TF_CPP_MIN_LOG_LEVEL');
    const quiet = runTs(script, env);
    assert.equal(JSON.parse(quiet.stdout.trim().split('\n').at(-1) ?? '{}'), { backend: 'tensorflow', level: '2' }, quiet.stderr);
    assert.is(quiet.stderr, '', 'TensorFlow logged below the error level while loading');
    const verbose = runTs(script, { ...env, TF_CPP_MIN_LOG_LEVEL: '0' });
    assert.equal(JSON.parse(verbose.stdout.trim().split('\n').at(-1) ?? '{}'), { backend: 'tensorflow', level: '0' }, verbose.stderr);
  });
}

test('matMul agrees with a float64 reference (max error ≤ 1e-5 of the largest entry)', () => {
  const [M, K, N] = [33, 70, 21];
  const a = Float64Array.from({ length: M * K }, (_, i) => Math.sin(0.37 * i + 0.1));
  const b = Float64Array.from({ length: K * N }, (_, i) => Math.cos(0.23 * i - 0.4));
  const ref = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) ref[m * N + n] += a[m * K + k] * b[k * N + n];
  const got = tf.tidy(() => tf.matMul(tf.tensor2d(Float32Array.from(a), [M, K]), tf.tensor2d(Float32Array.from(b), [K, N])).dataSync());
  const scale = Math.max(...ref.map(Math.abs));
  const err = Math.max(...Array.from(ref, (r, i) => Math.abs(r - got[i])));
  assert.ok(err <= 1e-5 * scale, `max |error| ${err} > 1e-5 × ${scale}`);
});

test('gradients through gather and erf equal the hand-computed ones (repeated ids add up)', () => {
  const [V, D] = [5, 3];
  const table = Float64Array.from({ length: V * D }, (_, i) => 0.3 * Math.sin(i + 1));
  const ids = [0, 2, 2, 4, 1, 2];
  const weights = Float64Array.from({ length: ids.length * D }, (_, i) => (i % 4) - 1.5); // loss = Σ w ⊙ erf(table[ids])
  const expected = new Float64Array(V * D);
  ids.forEach((r, k) => {
    for (let j = 0; j < D; j++) {
      const x = table[r * D + j];
      expected[r * D + j] += weights[k * D + j] * (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x);
    }
  });
  const lookups: [string, (t: tf.Tensor2D, i: tf.Tensor1D) => tf.Tensor][] = [['embeddingLookup', embeddingLookup]];
  // tf.gather's gradient is UnsortedSegmentSum, which wasm lacks (hence embeddingLookup).
  if (tf.getKernel('UnsortedSegmentSum', backend)) lookups.push(['tf.gather', (t, i) => tf.gather(t, i)]);
  for (const [name, lookup] of lookups) {
    const before = tf.memory().numTensors;
    const grad = tf.tidy(() => {
      const w = tf.tensor2d(Float32Array.from(weights), [ids.length, D]);
      const idx = tf.tensor1d(ids, 'int32');
      const f = (t: tf.Tensor) => tf.sum(tf.mul(w, tf.erf(lookup(t as tf.Tensor2D, idx))));
      return tf.grad(f)(tf.tensor2d(Float32Array.from(table), [V, D])).dataSync();
    });
    const err = Math.max(...Array.from(expected, (e, i) => Math.abs(e - grad[i])));
    assert.ok(err <= 1e-5, `${name}: max |error| ${err} on ${backend}`);
    assert.is(tf.memory().numTensors, before, `${name} leaked tensors`);
  }
});

test.run();

// `npm run gpu-check`: checks the GPU path on a machine with NVIDIA GPUs, in a few minutes, in one go:
//   1. builds @tensorflow/tfjs-node-gpu's binding (setup:tensorflow --gpu; cached after the first time),
//   2. trains the test model (tiny-bert, 4 queries) 2 steps on 1 GPU, batch 4,
//   3. and on 2 GPUs: launch.ts --nproc_per_node 2 --ddp_backend tensorflow --negatives_x_device, batch 2 each
//      (the tensorflow process group, NCCL between the GPUs),
//   4. reports each run's device, process group and seconds per step, and whether the 2-GPU model equals the
//      1-GPU one (the exactness the tests check on CPUs; TF32 is turned off for it).
// Exits non-zero when a check fails.   npm run gpu-check [-- --skip-build]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSafetensors } from '../lib/model/safetensors.ts';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const fixtures = path.join(root, 'test/fixtures');
const env = { ...process.env, TEVATRON_BACKEND: 'tensorflow', NVIDIA_TF32_OVERRIDE: '0', TF_FORCE_GPU_ALLOW_GROWTH: 'true' };
const common = [
  '--model_name_or_path', path.join(fixtures, 'tiny-bert'), '--train_dir', path.join(fixtures, 'train-step/train.jsonl'), '--backend', 'tensorflow',
  '--train_n_passages', '2', '--q_max_len', '8', '--p_max_len', '12', '--max_steps', '2', '--logging_steps', '1',
  // the tests' contract: AdamW with eps 1 keeps a step smooth in the gradient (eps 1e-8 turns float noise into ±lr)
  '--warmup_ratio', '0', '--weight_decay', '0', '--max_grad_norm', '0', '--learning_rate', '1', '--adam_epsilon', '1',
];
const failures: string[] = [];
const report = (ok: boolean, line: string) => {
  console.log(`gpu-check: ${ok ? 'ok  ' : 'FAIL'} ${line}`);
  if (!ok) failures.push(line);
};

function run(args: string[], extraEnv: NodeJS.ProcessEnv = {}): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', ...args], { cwd: root, encoding: 'utf8', env: { ...env, ...extraEnv }, timeout: 600_000 });
  return { code: r.status, out: r.stdout ?? '', err: r.stderr ?? '' };
}

/** Seconds per step from train.ts's log (its last step line's samples/s). */
const secondsPerStep = (out: string, samples: number) => {
  const m = [...out.matchAll(/ ([\d.]+) samples\/s/g)].at(-1);
  return m ? (samples / Number(m[1])).toFixed(3) : '?';
};

const gpus = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
const count = gpus.status === 0 ? gpus.stdout.split('\n').filter((l) => l.startsWith('GPU ')).length : 0;
if (count === 0) {
  console.error(`gpu-check: no NVIDIA GPU visible (nvidia-smi -L: ${gpus.error ? 'not found' : gpus.stdout.trim() || gpus.stderr.trim()}): run it on a machine with an NVIDIA driver and GPUs`);
  process.exit(1);
}
console.log(`gpu-check: ${count} GPU(s): ${gpus.stdout.trim().split('\n').join('; ')}`);

if (!process.argv.includes('--skip-build')) {
  const built = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/setup-tensorflow.ts'), '--gpu'], { cwd: root, stdio: 'inherit', env });
  if (built.status !== 0) {
    console.error('gpu-check: setup:tensorflow --gpu failed (above)');
    process.exit(1);
  }
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'tevatron-gpu-check-'));
try {
  const one = run([path.join(root, 'scripts/train.ts'), '--output_dir', path.join(dir, 'one'), '--per_device_train_batch_size', '4', ...common], { CUDA_VISIBLE_DEVICES: '0' });
  report(one.code === 0, `1 GPU: train.ts exited with ${one.code}${one.code === 0 ? '' : `: ${one.err.trim().split('\n').at(-1)}`}`);
  report(/backend tensorflow \(TensorFlow [\d.]+ on gpu/.test(one.out), `1 GPU: ${one.out.match(/^backend .*$/m)?.[0] ?? 'no backend line'}`);
  console.log(`gpu-check:      1 GPU: ${secondsPerStep(one.out, 4)} s/step (tiny-bert, batch 4)`);
  if (count < 2) {
    report(false, `2 GPUs: only ${count} GPU visible; the tensorflow process group's NCCL path needs 2`);
  } else {
    const port = String(29500 + Math.floor(Math.random() * 1000));
    const two = run([path.join(root, 'scripts/launch.ts'), '--nproc_per_node', '2', '--master_port', port, path.join(root, 'scripts/train.ts'),
      '--output_dir', path.join(dir, 'two'), '--per_device_train_batch_size', '2', '--negatives_x_device', '--ddp_backend', 'tensorflow', ...common], { CUDA_VISIBLE_DEVICES: '0,1' });
    report(two.code === 0, `2 GPUs: launch.ts exited with ${two.code}${two.code === 0 ? '' : `: ${two.err.trim().split('\n').at(-1)}`}`);
    report(/^process group: tensorflow \(2 ranks on 1 host, TensorFlow's collectives over NCCL between GPUs/m.test(two.out), `2 GPUs: ${two.out.match(/^process group: .*$/m)?.[0] ?? 'no process group line'}`);
    console.log(`gpu-check:      2 GPUs: ${secondsPerStep(two.out, 4)} s/step (batch 2 x 2 processes)`);
    if (one.code === 0 && two.code === 0) {
      const [a, b] = ['one', 'two'].map((d) => parseSafetensors(readFileSync(path.join(dir, d, 'model.safetensors'))).tensors);
      let worst = 0;
      for (const k of Object.keys(a)) a[k].data.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - b[k].data[i]) / Math.max(1, Math.abs(x)))));
      report(worst <= 1e-4, `2 GPUs x batch 2 with --negatives_x_device = 1 GPU x batch 4 after 2 steps: largest relative difference ${worst.toExponential(2)} (allowed 1e-4)`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(failures.length ? `gpu-check: ${failures.length} check(s) failed` : 'gpu-check: every check passed');
process.exit(failures.length ? 1 : 0);

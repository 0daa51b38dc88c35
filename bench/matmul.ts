// `npm run bench:matmul`: float32 matMul throughput (GFLOP/s) on each backend that starts here, for a
// BERT-base-sized product (1024 tokens × 768 × 768 by default). Prints one line per backend and, with
// --json FILE, writes the figures.
//   npm run bench:matmul -- --backends tensorflow,wasm --size 1024x768x768 --seconds 3
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { describeBackend, initBackend, type BackendChoice } from '../lib/backend.ts';

const { values } = parseArgs({
  options: {
    backends: { type: 'string', default: 'tensorflow,wasm,cpu' },
    size: { type: 'string', default: '1024x768x768' },
    seconds: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const dims = values.size.split('x').map(Number);
if (dims.length !== 3 || !dims.every((d) => Number.isInteger(d) && d > 0)) {
  console.error(`--size ${values.size}: expected MxKxN, e.g. 1024x768x768`);
  process.exit(2);
}
const seconds = Number(values.seconds);
if (!(seconds > 0)) {
  console.error(`--seconds ${values.seconds}: expected a positive number`);
  process.exit(2);
}
const [M, K, N] = dims;
const flop = 2 * M * K * N;
const names = values.backends.split(',').filter(Boolean) as BackendChoice[]; // 'auto': the one scripts start

interface Row {
  backend: string;
  description?: string;
  ms?: number;
  gflops?: number;
  runs?: number;
  error?: string;
}
const rows: Row[] = [];
console.log(`matMul [${M}, ${K}] x [${K}, ${N}] float32 (${(flop / 1e9).toFixed(2)} GFLOP per product); median over about ${seconds} s per backend`);
for (const name of names) {
  let started: string;
  try {
    started = await initBackend(name);
  } catch (err) {
    rows.push({ backend: name, error: (err as Error).message });
    console.log(`${name.padEnd(10)} unavailable: ${(err as Error).message}`);
    continue;
  }
  const a = tf.randomUniform([M, K], -1, 1, 'float32', 1);
  const b = tf.randomUniform([K, N], -1, 1, 'float32', 2);
  const once = () => {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync(); // waits for the product on every backend
    c.dispose();
    return performance.now() - t0;
  };
  once(); // first call: kernel setup, thread pools, JIT
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 3 || (performance.now() - start < seconds * 1000 && times.length < 200)) times.push(once());
  tf.dispose([a, b]);
  times.sort((x, y) => x - y);
  const ms = times[Math.floor(times.length / 2)];
  const row = { backend: started, description: describeBackend(), ms, gflops: flop / (ms / 1000) / 1e9, runs: times.length };
  rows.push(row);
  console.log(`${started.padEnd(10)} ${row.gflops.toFixed(1).padStart(7)} GFLOP/s  ${ms.toFixed(1).padStart(8)} ms  (${row.runs} runs; ${row.description})`);
}
if (values.json) fs.writeFileSync(values.json, JSON.stringify({ size: [M, K, N], rows }, null, 2) + '\n');

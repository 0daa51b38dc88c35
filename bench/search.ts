// Exact inner-product search throughput (queries/s) of lib/search.ts over a random corpus held in memory.
//   npx tsx bench/search.ts [--backend auto] [--passages 100000] [--queries 1024] [--dim 768] [--depth 100] [--json]
import { parseArgs } from 'node:util';
import { initBackend, type BackendChoice } from '../lib/backend.ts';
import { search, type Encoded } from '../lib/search.ts';

const { values: v } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' }, passages: { type: 'string', default: '100000' }, queries: { type: 'string', default: '1024' },
    dim: { type: 'string', default: '768' }, depth: { type: 'string', default: '100' }, json: { type: 'boolean', default: false },
  },
});
const [N, Q, d, depth] = ['passages', 'queries', 'dim', 'depth'].map((k) => Number(v[k as keyof typeof v]));
const backend = await initBackend(v.backend as BackendChoice);
const random = (rows: number, prefix: string): Encoded => {
  const data = new Float32Array(rows * d);
  for (let i = 0; i < data.length; i++) data[i] = Math.random() - 0.5;
  return { ids: Array.from({ length: rows }, (_, i) => `${prefix}${i}`), dim: d, data };
};
const corpus = random(N, 'p');
const queries = random(Q, 'q');
search(random(8, 'w'), [corpus], depth); // warm-up
let best = Infinity;
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  search(queries, [corpus], depth);
  best = Math.min(best, (performance.now() - t0) / 1000);
}
const result = { backend, passages: N, queries: Q, dim: d, depth, seconds: best, queriesPerSecond: Q / best };
console.log(v.json ? JSON.stringify(result) : `search ${Q} queries over ${N} × ${d} (depth ${depth}) on ${backend}: ${(Q / best).toFixed(0)} queries/s (${best.toFixed(2)} s)`);

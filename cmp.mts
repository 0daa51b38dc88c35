import { readFileSync } from 'node:fs';
import { parseSafetensors } from './lib/model/safetensors.ts';
const [a, b] = process.argv.slice(2).map((d) => parseSafetensors(readFileSync(d + '/model.safetensors')).tensors);
let worst = 0;
for (const k of Object.keys(a)) a[k].data.forEach((v: number, i: number) => (worst = Math.max(worst, Math.abs(v - b[k].data[i]) / Math.max(1, Math.abs(v)))));
console.log('max rel diff', worst);

// Tokenizer throughput on the shared NQ corpus (title + ' ' + text per passage, as Tevatron encodes
// passages): passages/s and tokens/s with an empty word cache (first pass) and a filled one. Prints only.
//   npx tsx bench/tokenizer.ts [tokenizer-dir] [corpus.jsonl]
// tokenizer-dir defaults to ../shared/data/bert-base-uncased; a directory with only tokenizer.json
// measures the @huggingface/tokenizers path.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTokenizer } from '../lib/tokenizer.ts';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const data = path.resolve(root, '../shared/data');
const dir = process.argv[2] ?? path.join(data, 'bert-base-uncased');
const corpus = process.argv[3] ?? path.join(data, 'nq/corpus.jsonl');

const texts: string[] = readFileSync(corpus, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((line) => {
    const row = JSON.parse(line);
    return `${row.title} ${row.text}`;
  });

function pass(encode: (t: string) => number[]): { seconds: number; tokens: number } {
  const t0 = process.hrtime.bigint();
  let tokens = 0;
  for (const t of texts) tokens += encode(t).length;
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, tokens };
}

const report = (label: string, r: { seconds: number; tokens: number }, passes = 1) =>
  console.log(`${label.padEnd(22)} ${Math.round((passes * texts.length) / r.seconds).toLocaleString('en-US').padStart(9)} passages/s  ${Math.round(r.tokens / r.seconds).toLocaleString('en-US').padStart(11)} tokens/s`);

const cold = await loadTokenizer(dir);
console.log(`${texts.length} passages of ${corpus}; tokenizer ${dir} (${cold.kind}), node ${process.version}`);
report('first pass (cold)', pass((t) => cold.encode(t)));
const passes = 5;
let total = { seconds: 0, tokens: 0 };
for (let k = 0; k < passes; k++) {
  const r = pass((t) => cold.encode(t));
  total = { seconds: total.seconds + r.seconds, tokens: total.tokens + r.tokens };
}
report(`warm cache (${passes} passes)`, total, passes);

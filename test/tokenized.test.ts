// Tokenize once and cache (lib/data/tokenized.ts): the cached examples equal a fresh tokenization (the plain
// loadTrainExamples path), a second load reads the cache without tokenizing, every part of the key
// (file size/mtime, tokenizer, lengths, separator) invalidates it, a damaged cache is rebuilt, nothing
// temporary is left behind, and the worker-thread path gives the very same ids as one thread.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTrainExamples, loadTrainExamplesAsync, type ExampleOptions } from '../lib/data/load.ts';
import { defaultTokenizedCacheDir, loadTrainData, packExamples, unpackExamples } from '../lib/data/tokenized.ts';
import { loadTokenizer, type Tokenizer } from '../lib/tokenizer.ts';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/hub-dataset');
const WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega rontgen naive cafe'.split(' ');
let work: string;
let tok: Tokenizer;
let tok2: Tokenizer;
const optsFor = (t: Tokenizer, extra: Partial<ExampleOptions> = {}): ExampleOptions => ({ tokenize: (s, max) => t.encode(s).slice(0, max), qMaxLen: 6, pMaxLen: 12, separator: '[SEP]', ...extra });

async function tokenizerWith(vocab: string[]): Promise<Tokenizer> {
  const dir = mkdtempSync(path.join(work, 'tok-'));
  writeFileSync(path.join(dir, 'vocab.txt'), vocab.join('\n') + '\n');
  return loadTokenizer(dir);
}

/** `n` raw rows made from the fixture's rows, each query made distinct. */
function bigFile(n: number, name = 'big.jsonl'): string {
  const base = readFileSync(path.join(FIX, 'nq-tiny.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ ...base[i % base.length], query_id: `q${i}`, query: `${WORDS[i % WORDS.length]} ${base[i % base.length].query} ${i}` }));
  const file = path.join(work, name);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

test.before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'tevatron-tokcache-'));
  const special = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '?', '0', '1', '2', '3'];
  tok = await tokenizerWith([...special, ...WORDS, ...WORDS.map((w) => `##${w.slice(1)}`)]);
  tok2 = await tokenizerWith([...special, ...WORDS.slice(0, 10)]);
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test('pack/unpack round-trips examples, query ids and empty lists', () => {
  const ex = [
    { queryId: 'a', query: [1, 2], positives: [[3], [4, 5, 6]], negatives: [] },
    { queryId: undefined, query: [], positives: [[7]], negatives: [[], [8, 2147483647]] },
  ];
  const { data, queryIds } = packExamples(ex);
  assert.equal(queryIds, ['a', null]);
  assert.equal(unpackExamples(data, queryIds), ex);
  assert.throws(() => unpackExamples(data.subarray(0, data.length - 1), queryIds));
  assert.is(defaultTokenizedCacheDir({ TEVATRON_TS_CACHE: '/c' }), '/c/tokenized');
  assert.is(defaultTokenizedCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/tevatron-ts/tokenized');
});

test('first load tokenizes and writes the cache; the second reads it (no tokenizing) and gives the same examples', async () => {
  const cacheDir = path.join(work, 'c1');
  const files = [path.join(FIX, 'nq-tiny.jsonl'), path.join(FIX, 'nq-tiny.parquet'), path.join(FIX, 'pretokenized.parquet')];
  const o = optsFor(tok);
  const reference = [...loadTrainExamples([files[0]], o), ...(await loadTrainExamplesAsync(files.slice(1), o))];
  assert.ok(reference[0].positives[0].length > 3 && !reference[0].query.includes(1), 'the test vocabulary covers the text (no [UNK])');
  const first = await loadTrainData(files, o, { tokenizer: tok, cacheDir });
  assert.is(first.fromCache, null);
  assert.ok(first.cacheFile && first.cacheFile.startsWith(cacheDir));
  assert.equal(first.examples, reference);
  const refuse: ExampleOptions = { ...o, tokenize: () => { throw new Error('tokenized again'); } };
  const second = await loadTrainData(files, refuse, { tokenizer: tok, cacheDir });
  assert.is(second.fromCache, first.cacheFile);
  assert.equal(second.examples, reference);
  assert.equal(readdirSync(cacheDir), [path.basename(first.cacheFile!)], 'one file, no temporary leftovers');
  const none = await loadTrainData(files, o, { tokenizer: tok, cacheDir: null });
  assert.is(none.cacheFile, null);
  assert.equal(none.examples, reference);
});

test('the key: file size and mtime, tokenizer, q/p max length and separator each invalidate the cache', async () => {
  const cacheDir = path.join(work, 'c2');
  const file = bigFile(20, 'key.jsonl');
  const o = optsFor(tok);
  const base = await loadTrainData([file], o, { tokenizer: tok, cacheDir });
  const hit = async (oo: ExampleOptions, t: Tokenizer) => (await loadTrainData([file], oo, { tokenizer: t, cacheDir })).fromCache !== null;
  assert.ok(await hit(o, tok));
  assert.not.ok(await hit(optsFor(tok2), tok2), 'another vocabulary');
  assert.not.ok(await hit({ ...o, pMaxLen: 11 }, tok), 'p_max_len');
  assert.not.ok(await hit({ ...o, qMaxLen: 5 }, tok), 'q_max_len');
  assert.not.ok(await hit({ ...o, separator: ' ' }, tok), 'separator');
  const later = new Date(Date.now() + 5000);
  utimesSync(file, later, later);
  const touched = await loadTrainData([file], o, { tokenizer: tok, cacheDir });
  assert.is(touched.fromCache, null, 'mtime');
  assert.equal(touched.examples, base.examples);
  // a damaged cache file is a miss, and is rewritten
  truncateSync(touched.cacheFile!, 100);
  const rebuilt = await loadTrainData([file], o, { tokenizer: tok, cacheDir });
  assert.is(rebuilt.fromCache, null);
  assert.equal(rebuilt.examples, base.examples);
  assert.ok((await loadTrainData([file], o, { tokenizer: tok, cacheDir })).fromCache);
});

test('worker threads (dataset_proc_num) give the same examples as one thread, in order; a bad row still names file:line', async () => {
  const file = bigFile(700);
  const o = optsFor(tok);
  const seq = await loadTrainData([file], o, { tokenizer: tok, cacheDir: null, procNum: 1, parallelMinRows: 0 });
  assert.is(seq.workers, 0);
  assert.equal(seq.examples, loadTrainExamples([file], o), 'one thread = the plain loader');
  const progress: number[] = [];
  const par = await loadTrainData([file], o, { tokenizer: tok, cacheDir: null, procNum: 2, parallelMinRows: 0, onProgress: (d) => progress.push(d) });
  if ((os.availableParallelism?.() ?? os.cpus().length) >= 2) assert.is(par.workers, 2);
  assert.equal(par.examples, seq.examples);
  assert.is(progress.at(-1), 700);
  const bad = readFileSync(file, 'utf8').split('\n');
  bad[600] = JSON.stringify({ query: 'x', positive_passages: [{ title: 't' }] });
  writeFileSync(file, bad.join('\n'));
  try {
    await loadTrainData([file], o, { tokenizer: tok, cacheDir: null, procNum: 2, parallelMinRows: 0 });
    assert.unreachable('a bad row must fail');
  } catch (e) {
    assert.match((e as Error).message, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:601: "positive_passages"\\[0\\] must be an object with a string "text"`));
  }
});

test.run();

// Tokenize once into the on-disk store (lib/data/store.ts, lib/data/tokenized.ts): ids read back equal ids
// written (uint16 and int32 stores); the store's examples equal a fresh tokenization by the plain loader
// (loadTrainExamples, no store); a second load opens the store without tokenizing; every part of the key
// invalidates it; a store cut short or stale is rebuilt; workers give the same examples as one thread; two
// processes building one store at once end with one valid store.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTrainExamples, loadTrainExamplesAsync, type ExampleOptions } from '../lib/data/load.ts';
import { PyRandom } from '../lib/data/pyrandom.ts';
import type { TrainExample, TrainSource } from '../lib/data/sample.ts';
import { ExamplePacker, openStore, StoreWriter, unpackPart } from '../lib/data/store.ts';
import { defaultTokenizedCacheDir, loadTrainData } from '../lib/data/tokenized.ts';
import { loadTokenizer, saveTokenizer, type Tokenizer } from '../lib/tokenizer.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIX = path.join(HERE, 'fixtures/hub-dataset');
const WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega rontgen naive cafe'.split(' ');
let work: string;
let tok: Tokenizer;
let tok2: Tokenizer;
const optsFor = (t: Tokenizer, extra: Partial<ExampleOptions> = {}): ExampleOptions => ({ tokenize: (s, max) => t.encode(s).slice(0, max), qMaxLen: 6, pMaxLen: 12, separator: '[SEP]', ...extra });
const all = (src: TrainSource): TrainExample[] => Array.from({ length: src.length }, (_, i) => src.get(i));

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

/** Random examples with ids in [0, vocab), empty lists and sequences included. */
function randomExamples(seed: number, n: number, vocab: number): TrainExample[] {
  const rng = new PyRandom(seed);
  const seq = () => Array.from({ length: rng.randbelow(9) }, () => (rng.randbelow(4) === 0 ? vocab - 1 : rng.randbelow(vocab)));
  const list = () => Array.from({ length: rng.randbelow(4) }, seq);
  return Array.from({ length: n }, (_, i) => ({ queryId: i % 3 === 0 ? undefined : `q"${i}é`, query: seq(), positives: list(), negatives: list() }));
}

test.before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'tevatron-tokcache-'));
  const special = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '?', '0', '1', '2', '3'];
  tok = await tokenizerWith([...special, ...WORDS, ...WORDS.map((w) => `##${w.slice(1)}`)]);
  tok2 = await tokenizerWith([...special, ...WORDS.slice(0, 10)]);
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test('store round trip: ids, counts and query ids back equal what went in (uint16 and int32 ids)', async () => {
  for (const [idBytes, vocab] of [[2, 65536], [4, 2 ** 31 - 1]] as const) {
    const examples = randomExamples(idBytes, 300, vocab);
    const dir = path.join(work, `round-${idBytes}`);
    const writer = await StoreWriter.create(dir, { key: 'k', parts: null, idBytes });
    const packer = new ExamplePacker(idBytes, vocab);
    examples.forEach((e, i) => {
      packer.add(e, `row ${i}`);
      if (i % 97 === 0) writer.write(packer.take()); // parts of uneven sizes, one with a single example
    });
    writer.write(packer.take());
    await writer.commit();
    const store = openStore(dir, 'k')!;
    assert.ok(store, 'the store opens');
    assert.is(store.meta.idBytes, idBytes);
    assert.is(statSync(path.join(dir, 'ids.bin')).size, examples.reduce((s, e) => s + e.query.length + [...e.positives, ...e.negatives].flat().length, 0) * idBytes);
    assert.equal(all(store), examples);
    assert.equal(store.counts(1), { queryId: examples[1].queryId, positives: examples[1].positives.length, negatives: examples[1].negatives.length });
    assert.throws(() => store.get(300), /example 300 is outside the tokenized store's 300 examples/);
    assert.is(openStore(dir, 'another key'), null, 'a store made for another key is not used');
    store.close();
    const p = new ExamplePacker(idBytes, vocab);
    examples.slice(0, 5).forEach((e) => p.add(e, 'x'));
    assert.equal(unpackPart(p.take()), examples.slice(0, 5));
    assert.throws(() => p.add({ query: [vocab], positives: [], negatives: [] }, 'f.jsonl:7'), /f\.jsonl:7: token id \d+ is outside the tokenizer's vocabulary/);
  }
  assert.is(defaultTokenizedCacheDir({ TEVATRON_TS_CACHE: '/c' }), '/c/tokenized');
  assert.is(defaultTokenizedCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/tevatron-ts/tokenized');
});

test('first load tokenizes into the store; the second opens it (no tokenizing) and gives the same examples', async () => {
  const cacheDir = path.join(work, 'c1');
  const files = [path.join(FIX, 'nq-tiny.jsonl'), path.join(FIX, 'nq-tiny-groups.parquet'), path.join(FIX, 'pretokenized.parquet')];
  const o = optsFor(tok);
  const reference = [...loadTrainExamples([files[0]], o), ...(await loadTrainExamplesAsync(files.slice(1), o))];
  assert.ok(reference[0].positives[0].length > 3 && !reference[0].query.includes(1), 'the test vocabulary covers the text (no [UNK])');
  const first = await loadTrainData(files, o, { tokenizer: tok, cacheDir });
  assert.is(first.fromCache, null);
  assert.ok(first.store && first.store.dir.startsWith(cacheDir));
  assert.equal(all(first.examples), reference);
  const refuse: ExampleOptions = { ...o, tokenize: () => { throw new Error('tokenized again'); } };
  const second = await loadTrainData(files, refuse, { tokenizer: tok, cacheDir });
  assert.is(second.fromCache, first.store!.dir);
  assert.equal(all(second.examples), reference);
  assert.equal(readdirSync(cacheDir), [path.basename(first.store!.dir)], 'one store, no temporary directory or lock left');
  const none = await loadTrainData(files, o, { tokenizer: tok, cacheDir: null });
  assert.is(none.store, null);
  assert.equal(all(none.examples), reference);
});

test('the key: file size and mtime, tokenizer, q/p max length and separator each invalidate the store', async () => {
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
  assert.equal(all(touched.examples), all(base.examples));
});

test('a store cut short (any of its files) or stale (another format) is detected and rebuilt', async () => {
  const cacheDir = path.join(work, 'c3');
  const file = bigFile(30, 'cut.jsonl');
  const o = optsFor(tok);
  const reference = loadTrainExamples([file], o);
  const first = await loadTrainData([file], o, { tokenizer: tok, cacheDir });
  const dir = first.store!.dir;
  first.store!.close();
  const damage: [string, (f: string) => void][] = [
    ['ids.bin', (f) => truncateSync(f, statSync(f).size - 2)],
    ['lengths.bin', (f) => truncateSync(f, statSync(f).size - 4)],
    ['examples.bin', (f) => truncateSync(f, 64)],
    ['query_ids.jsonl', (f) => writeFileSync(f, readFileSync(f, 'utf8').split('\n').slice(1).join('\n'))],
    ['meta.json', (f) => writeFileSync(f, readFileSync(f, 'utf8').replace('"format": 2', '"format": 1'))],
    ['meta.json', (f) => writeFileSync(f, '{"format": 2, "key": ')],
  ];
  for (const [name, cut] of damage) {
    cut(path.join(dir, name));
    const again = await loadTrainData([file], o, { tokenizer: tok, cacheDir });
    assert.is(again.fromCache, null, `${name} damaged: rebuilt`);
    assert.equal(all(again.examples), reference, `${name} damaged: the rebuilt store is right`);
    again.store!.close();
    const next = await loadTrainData([file], o, { tokenizer: tok, cacheDir });
    assert.is(next.fromCache, dir, 'and then used');
    next.store!.close();
  }
  assert.equal(readdirSync(cacheDir), [path.basename(dir)]);
});

test('two writers committing the same store: the second keeps the first, one valid store and nothing temporary remain', async () => {
  const dir = path.join(work, 'c4', 'key');
  const examples = randomExamples(5, 40, 1000);
  for (const w of [await StoreWriter.create(dir, { key: 'key', parts: null, idBytes: 2 }), await StoreWriter.create(dir, { key: 'key', parts: null, idBytes: 2 })]) {
    const p = new ExamplePacker(2, 1000);
    examples.forEach((e) => p.add(e, 'x'));
    w.write(p.take());
    await w.commit();
  }
  assert.equal(readdirSync(path.dirname(dir)), ['key']);
  assert.equal(all(openStore(dir, 'key')!), examples);
});

test('worker threads (dataset_proc_num) give the same examples as one thread, in order; a bad row still names file:line', async () => {
  const file = bigFile(700);
  const o = optsFor(tok);
  const seq = await loadTrainData([file], o, { tokenizer: tok, cacheDir: null, procNum: 1, parallelMinBytes: 0 });
  assert.is(seq.workers, 0);
  assert.equal(all(seq.examples), loadTrainExamples([file], o), 'one thread = the plain loader');
  const progress: number[] = [];
  const par = await loadTrainData([file], o, { tokenizer: tok, cacheDir: path.join(work, 'c5'), procNum: 2, parallelMinBytes: 0, onProgress: (d) => progress.push(d) });
  if ((os.availableParallelism?.() ?? os.cpus().length) >= 2) assert.is(par.workers, 2);
  assert.equal(all(par.examples), all(seq.examples));
  assert.is(progress.at(-1), statSync(file).size);
  const bad = readFileSync(file, 'utf8').split('\n');
  bad[600] = JSON.stringify({ query: 'x', positive_passages: [{ title: 't' }] });
  writeFileSync(file, bad.join('\n'));
  try {
    await loadTrainData([file], o, { tokenizer: tok, cacheDir: path.join(work, 'c5'), procNum: 2, parallelMinBytes: 0 });
    assert.unreachable('a bad row must fail');
  } catch (e) {
    assert.match((e as Error).message, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:601: "positive_passages"\\[0\\] must be an object with a string "text"`));
  }
  assert.equal(readdirSync(path.join(work, 'c5')).length, 1, 'the failed build left nothing behind');
});

test('two processes building one store at once: one builds, the other waits and opens it; one valid store remains', async () => {
  const file = bigFile(1500, 'shared.jsonl');
  const cacheDir = path.join(work, 'c6');
  const tokDir = path.join(work, 'tok-saved');
  await saveTokenizer(tok, tokDir);
  const go = path.join(work, 'go');
  const run = () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(HERE, 'fixtures/build_store.ts'), tokDir, file, cacheDir, go], { cwd: path.dirname(HERE), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const ready = new Promise<void>((resolve) => child.stdout.on('data', () => out.includes('ready') && resolve()));
    const done = new Promise<{ fromCache: string | null; waited: boolean; examples: number; digest: string }>((resolve, reject) => {
      const timer = setTimeout(() => child.kill(), 120_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (code !== 0) reject(new Error(`build_store.ts exited with ${code}: ${err}`));
        else resolve(JSON.parse(out.trim().split('\n').at(-1)!));
      });
    });
    return { ready, done };
  };
  const a = run();
  const b = run();
  await Promise.all([a.ready, b.ready]);
  writeFileSync(go, '');
  const results = await Promise.all([a.done, b.done]);
  const h = createHash('sha256');
  for (const e of loadTrainExamples([file], optsFor(tok))) h.update(JSON.stringify(e));
  const digest = h.digest('hex');
  assert.ok(results.every((r) => r.examples === 1500 && r.digest === digest), 'both processes read every example right');
  assert.is(results.filter((r) => r.fromCache === null).length, 1, 'exactly one process tokenized');
  assert.equal(readdirSync(cacheDir).length, 1, 'one store; no temporary directory or lock left');
  assert.ok(openStore(path.join(cacheDir, readdirSync(cacheDir)[0]), readdirSync(cacheDir)[0]));
});

test.run();

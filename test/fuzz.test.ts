// Bounded, seeded fuzzing of every parser of outside bytes: training and encoding rows (JSON Lines, JSON
// arrays), safetensors files, tokenizer.json / vocab.txt / tokenizer_config.json, run and qrels files.
// Valid inputs are mutated byte by byte and node by node (a JSON value replaced by another type, a huge
// or negative number, a deep or long value, a key removed); every case must end either in a result that
// holds together or in the parser's own one-line Error naming the input, never a TypeError, RangeError
// or SyntaxError escaping, a case that takes seconds, or memory that balloons. (The process group's frames
// are fuzzed with the process group; parquet files are read by hyparquet, whose errors load.ts wraps.)
//   TEVATRON_FUZZ_CASES=N (default 300 per parser) and TEVATRON_FUZZ_SEED=S extend a run; TEVATRON_FUZZ_CASE=I
//   runs case I alone (the earlier ones are drawn, not parsed) and writes its input to TEVATRON_FUZZ_DUMP.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { readRows, toEncodeItem, toTrainExample, type ExampleOptions } from '../lib/data/load.ts';
import { parseQrels, parseRun } from '../lib/metrics.ts';
import { parseSafetensors, serializeSafetensors } from '../lib/model/safetensors.ts';
import { JsonTokenizer, loadTokenizer, type Tokenizer } from '../lib/tokenizer.ts';

const CASES = Number(process.env.TEVATRON_FUZZ_CASES ?? 300);
const SEED = Number(process.env.TEVATRON_FUZZ_SEED ?? 16);
const ONLY = process.env.TEVATRON_FUZZ_CASE === undefined ? null : Number(process.env.TEVATRON_FUZZ_CASE);
const MAX_CASE_MS = 2000; // generous on a loaded machine; a parser that loops or allocates gigabytes takes far longer
const MAX_RSS_GROWTH_MB = 1024;
const work = mkdtempSync(path.join(tmpdir(), 'fuzz-'));
const fixtures = path.resolve('test/fixtures');

type Rng = PyRandom;
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.randbelow(xs.length)];

/** Bytes that parsers treat specially, inserted or swapped in by the byte mutator. */
const TOKENS = ['{', '}', '[', ']', '"', ',', ':', '\n', '\t', ' ', '-', '0', '1e309', '-1', 'null', 'true', '\\', '\\u0000', '\u0000', '\uFFFD', '\uD800', '9'.repeat(30), 'NaN'];

/** A byte-level mutation: flip, insert a token, delete or duplicate a range, truncate. */
function mutateBytes(rng: Rng, input: Uint8Array): Uint8Array {
  const b = Array.from(input);
  const at = () => rng.randbelow(b.length + 1);
  switch (rng.randbelow(5)) {
    case 0:
      if (b.length) b[rng.randbelow(b.length)] = rng.randbelow(256);
      break;
    case 1:
      b.splice(at(), 0, ...Buffer.from(pick(rng, TOKENS)));
      break;
    case 2: {
      const s = at();
      b.splice(s, 1 + rng.randbelow(16));
      break;
    }
    case 3: {
      const s = at();
      b.splice(s, 0, ...b.slice(s, s + 1 + rng.randbelow(64)));
      break;
    }
    default:
      b.length = at();
  }
  return Uint8Array.from(b);
}

/** A value of another kind than the one it replaces: the shapes that break unchecked code. */
function strangeValue(rng: Rng): unknown {
  return pick(rng, [
    () => null, () => true, () => 0, () => -1, () => 1.5, () => 2 ** 31, () => 2 ** 53 + 2, () => 1e308, () => -1e308, () => 4294967301,
    () => '', () => 'x', () => '__proto__', () => 'é\u0000\uD800', () => 'w '.repeat(5000),
    () => [], () => [[]], () => [1, 'a', null], () => Array.from({ length: 2000 }, (_, i) => i),
    () => ({}), () => ({ content: 1 }), () => ({ text: 5, title: [] }),
    () => JSON.parse('['.repeat(200) + ']'.repeat(200)),
  ])();
}

/** A node-level mutation of parsed JSON: replace, remove or duplicate one value somewhere inside it. */
function mutateJson(rng: Rng, value: unknown): unknown {
  const root = { v: structuredClone(value) as unknown };
  let parent: Record<string, unknown> | unknown[] = root as Record<string, unknown>;
  let key: string | number = 'v';
  for (let depth = 0; depth < 8; depth++) {
    const here: unknown = (parent as Record<string | number, unknown>)[key];
    if (here === null || typeof here !== 'object') break;
    const keys = Object.keys(here);
    if (!keys.length || rng.random() < 0.25) break;
    parent = here as Record<string, unknown>;
    key = Array.isArray(here) ? Number(pick(rng, keys)) : pick(rng, keys);
  }
  const slot = parent as Record<string | number, unknown>;
  const r = rng.randbelow(4);
  if (r === 0 && key !== 'v') {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete slot[key];
  } else if (r === 1 && Array.isArray(parent)) parent.push(structuredClone(slot[key]));
  else slot[key] = strangeValue(rng);
  return root.v;
}

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));

/**
 * Runs `cases` mutated inputs through `parse`; each must return (then `check` its result) or throw a plain
 * Error whose one-line message contains `names(input)`. Reports the seed and case of a failure.
 */
async function fuzz<T>(label: string, cases: number, make: (rng: Rng, i: number) => T, parse: (input: T) => unknown, names: (input: T) => string, check: (out: unknown) => void = () => {}): Promise<void> {
  const rng = new PyRandom(SEED);
  const rss0 = process.memoryUsage().rss;
  let ok = 0;
  let slowest = 0;
  for (let i = 0; i < cases; i++) {
    const input = make(rng, i);
    if (ONLY !== null && i !== ONLY) continue;
    if (ONLY !== null && process.env.TEVATRON_FUZZ_DUMP) writeFileSync(process.env.TEVATRON_FUZZ_DUMP, typeof input === 'string' && input.startsWith(work) ? readFileSync(input) : JSON.stringify(input));
    const where = `${label}, case ${i} (TEVATRON_FUZZ_SEED=${SEED})`;
    const t0 = performance.now();
    try {
      check(await parse(input));
      ok++;
    } catch (e) {
      const err = e as Error;
      if (!(err instanceof Error) || err.constructor !== Error) assert.unreachable(`${where}: ${err?.constructor?.name ?? typeof err} escaped the parser: ${err?.message ?? err}\n${err?.stack?.split('\n').slice(1, 4).join('\n') ?? ''}`);
      if (err.message.startsWith('fuzz check:')) assert.unreachable(`${where}: ${err.message}`);
      assert.ok(err.message.includes(names(input)), `${where}: the error does not name the input: ${err.message}`);
      assert.not.ok(err.message.includes('\n'), `${where}: the error is not one line: ${err.message}`);
    }
    slowest = Math.max(slowest, performance.now() - t0);
    assert.ok(slowest < MAX_CASE_MS, `${where}: took ${slowest.toFixed(0)} ms`);
  }
  const grew = (process.memoryUsage().rss - rss0) / 2 ** 20;
  assert.ok(grew < MAX_RSS_GROWTH_MB, `${label}: resident memory grew by ${grew.toFixed(0)} MB`);
  // the mutations must leave some inputs valid, or the fuzzer tests nothing but the first check
  if (ONLY === null) assert.ok(ok > 0.02 * cases && ok < cases, `${label}: ${ok} of ${cases} inputs parsed`);
}

const fail = (why: string) => new Error(`fuzz check: ${why}`);
const tinyBert = await loadTokenizer(path.join(fixtures, 'tiny-bert'));
const opts: ExampleOptions = { tokenize: (s, max) => tinyBert.encode(s).slice(0, max), qMaxLen: 8, pMaxLen: 16, separator: ' ' };
/** The row reader under test (a streaming reader that replaces readRows plugs in here). */
const readAllRows = (file: string) => readRows(file);
const isIdList = (v: unknown) => Array.isArray(v) && v.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 31);

test('JSON / JSON Lines rows (training and encoding)', async () => {
  const raw = readFileSync(path.join(fixtures, 'hub-dataset/nq-tiny.jsonl'), 'utf8').trim().split('\n').slice(0, 3);
  const pre = readFileSync(path.join(fixtures, 'hub-dataset/pretokenized.jsonl'), 'utf8').trim().split('\n').slice(0, 3);
  const file = path.join(work, 'rows.jsonl');
  await fuzz('rows', CASES, (rng) => {
    let lines = [...pick(rng, [raw, pre])];
    if (rng.random() < 0.6) {
      const i = rng.randbelow(lines.length);
      lines[i] = JSON.stringify(mutateJson(rng, JSON.parse(lines[i])));
    } else lines = text(mutateBytes(rng, bytes(lines.join('\n')))).split('\n');
    const asArray = rng.random() < 0.3;
    writeFileSync(file, asArray ? `[${lines.join(',')}]` : lines.join('\n'));
    return file;
  }, (f) => readAllRows(f).map(({ row, where }) => {
    const ex = toTrainExample(row, where, opts);
    if (![ex.query, ...ex.positives, ...ex.negatives].every(isIdList)) throw fail(`bad token ids from ${JSON.stringify(row).slice(0, 200)}`);
    const q = toEncodeItem(row, where, true, opts);
    if (!isIdList(q.tokens) || typeof q.id !== 'string') throw fail('bad encode item');
    return ex;
  }), (f) => f);
});

test('safetensors files (header and data)', async () => {
  const valid = serializeSafetensors({ 'a.weight': { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }, b: { shape: [4], data: new Float32Array(4) } });
  const headerOf = (b: Uint8Array) => JSON.parse(text(b.subarray(8, 8 + Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true)))));
  const body = (b: Uint8Array) => b.subarray(8 + Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true)));
  const pack = (header: unknown, data: Uint8Array, lie = 0) => {
    const h = bytes(JSON.stringify(header));
    const out = new Uint8Array(8 + h.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(Math.max(0, h.length + lie)), true);
    out.set(h, 8);
    out.set(data, 8 + h.length);
    return out;
  };
  // F16, BF16 and an integer buffer (skipped) beside F32
  const mixed = pack({ __metadata__: { format: 'pt' }, h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] }, bf: { dtype: 'BF16', shape: [1, 2], data_offsets: [4, 8] }, ids: { dtype: 'I64', shape: [1], data_offsets: [8, 16] } },
    Uint8Array.from([0, 60, 0, 188, 128, 63, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0]));
  await fuzz('safetensors', CASES, (rng) => {
    const seed = pick(rng, [valid, mixed]);
    const r = rng.random();
    if (r < 0.5) return pack(mutateJson(rng, headerOf(seed)), body(seed), rng.random() < 0.2 ? rng.randbelow(64) - 32 : 0);
    if (r < 0.6) return pack(headerOf(seed), body(seed), pick(rng, [2 ** 40, 2 ** 62, -1]));
    return mutateBytes(rng, seed);
  }, (b) => parseSafetensors(b, 'fuzz.safetensors'), () => 'fuzz.safetensors', (out) => {
    for (const [name, t] of Object.entries((out as ReturnType<typeof parseSafetensors>).tensors)) {
      if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || t.data.length !== t.shape.reduce((a, d) => a * d, 1)) throw fail(`tensor ${name}: shape [${t.shape}] with ${t.data.length} values`);
    }
  });
});

const PROBES = ['Hello, WORLD! café naïve 東京', 'tok12 tok7 [SEP] xx', '', '\u0000\uD800 \t\n'];
const encodesAll = (tok: Tokenizer) => {
  for (const p of PROBES) if (!isIdList(tok.encode(p))) throw fail(`encode(${JSON.stringify(p)}) gave bad ids ${JSON.stringify(tok.encode(p))}`);
  return tok;
};

test('tokenizer.json (with tokenizer_config.json)', async () => {
  const json = JSON.parse(readFileSync(path.join(fixtures, 'tokenizer/tiny-json/tokenizer.json'), 'utf8'));
  const config = JSON.parse(readFileSync(path.join(fixtures, 'tokenizer/tiny-json/tokenizer_config.json'), 'utf8'));
  await fuzz('tokenizer.json', CASES, (rng) => {
    const r = rng.random();
    if (r < 0.6) return { json: JSON.stringify(mutateJson(rng, json)), config };
    if (r < 0.8) return { json: JSON.stringify(json), config: mutateJson(rng, config) as Record<string, unknown> };
    return { json: text(mutateBytes(rng, bytes(JSON.stringify(json)))), config };
  }, (i) => encodesAll(new JsonTokenizer(i.json, i.config, 'fuzz/tokenizer.json')), () => 'fuzz/tokenizer.json');
});

test('vocab.txt, tokenizer_config.json and special_tokens_map.json of a tokenizer directory', async () => {
  const src = path.join(fixtures, 'tiny-bert');
  const vocab = readFileSync(path.join(src, 'vocab.txt'));
  const config = { do_lower_case: true, cls_token: '[CLS]', sep_token: '[SEP]', added_tokens_decoder: { 0: { content: '[PAD]', special: true } }, never_split: ['[SEP]'], model_max_length: 64 };
  const dir = path.join(work, 'tok');
  await fuzz('tokenizer directory', Math.ceil(CASES / 2), (rng) => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    const r = rng.random();
    writeFileSync(path.join(dir, 'vocab.txt'), r < 0.4 ? mutateBytes(rng, vocab) : vocab);
    const cfg = r >= 0.4 && r < 0.9 ? JSON.stringify(mutateJson(rng, config)) : text(mutateBytes(rng, bytes(JSON.stringify(config))));
    writeFileSync(path.join(dir, rng.random() < 0.8 ? 'tokenizer_config.json' : 'special_tokens_map.json'), cfg);
    return dir;
  }, async (d) => encodesAll(await loadTokenizer(d)), (d) => d);
});

test('run and qrels files', async () => {
  const run = 'q1\td1\t0.9\nq1\td2\t0.5\nq2\td3\t1\n';
  const trec = 'q1 Q0 d1 1 0.9 tag\nq1 Q0 d2 2 0.5 tag\n';
  const qrels = 'q1\td1\nq1\td2\t2\nq2 0 d3 1\n';
  const file = path.join(work, 'ranking.txt');
  const lineMutation = (rng: Rng, s: string) => {
    const lines = s.trim().split('\n').map((l) => l.split(/\s+/));
    const l = pick(rng, lines);
    const f = rng.randbelow(l.length + 1);
    if (rng.random() < 0.5) l[f] = String(strangeValue(rng)).slice(0, 50);
    else if (rng.random() < 0.5) l.splice(f, 1);
    else l.splice(f, 0, 'x');
    return lines.map((x) => x.join('\t')).join('\n');
  };
  for (const [label, seeds, parse] of [['run', [run, trec], parseRun], ['qrels', [qrels], parseQrels]] as const) {
    await fuzz(label, CASES, (rng) => {
      const seed = pick(rng, seeds as readonly string[]);
      writeFileSync(file, rng.random() < 0.5 ? lineMutation(rng, seed) : mutateBytes(rng, bytes(seed)));
      return file;
    }, (f) => parse(f), (f) => f);
  }
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test.run();

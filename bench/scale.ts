// The recipe at its real size (issues 14 and 19): one command for every full-size figure of the README. From the
// shared NQ sample (bench/scale_data.ts) it makes an NQ-size training file (58,622 queries × 31 passages, one
// file), an MS MARCO-size one (400,000 × 38 passages, 8.2 GB), a 5M-passage corpus, a ranking of the NQ-size questions at
// depth 100 over the corpus's first 3M passages and 768-d representations larger than memory (~30 GB), and runs
// each stage as a user does, with a tiny BERT, in a child process of its own (so each peak RSS is its own):
//   train     train.ts on each training file: the first start (tokenizing into the store), the second (opening it)
//   tokenize  the NQ-size file tokenized alone, in this process, with --dataset_proc_num 1 and 2: passages/s and per CPU-second
//   mine      mine.ts: the ranking at depth 100 over 3M passages, the corpus plain and gzipped
//   encode    encode.ts: shard 0 of 20 of the 5M-passage corpus
//   search    search.ts: 3,610 queries (NQ test's count) at depth 100 over the representations
// and checks the targets of issue 14. Everything generated lives in one temporary directory; each data set is
// deleted once its stages ran, and everything at the end, on failure and on Ctrl-C.
//   npm run bench -- --sections scale [--scale 0.01] [--stages train,mine]      npx tsx bench/scale.ts [same] [--json]
// --scale multiplies every size (0.01 runs the pipeline in minutes); --stages runs some stages only. Figures go
// to bench/results/scale.json; TEVATRON_BACKEND picks the backend.
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { createGzip } from 'node:zlib';
import { loadTrainData } from '../lib/data/tokenized.ts';
import { defaultBlockRows } from '../lib/search.ts';
import { loadTokenizer } from '../lib/tokenizer.ts';
import { GB, killStage, loadSample, needDisk, passageRow, ROOT, runStage, trainRow, writeLines, writeReps, writeTinyModel, xorshift, type Stage } from './scale_data.ts';

const STAGES = ['train', 'tokenize', 'mine', 'encode', 'search'];
const { values: opt } = parseArgs({ options: { scale: { type: 'string', default: '1' }, stages: { type: 'string', default: STAGES.join(',') }, json: { type: 'boolean', default: false } } });
const scale = Number(opt.scale);
const stages = new Set(opt.stages.split(','));
const badStage = [...stages].find((s) => !STAGES.includes(s));
if (!(scale > 0 && scale <= 1) || badStage) {
  console.error(badStage ? `--stages: no stage "${badStage}"; pick from ${STAGES.join(',')}` : `--scale ${opt.scale}: expected a number in (0, 1]`);
  process.exit(2);
}
const backend = process.env.TEVATRON_BACKEND ?? 'auto';
const SIZES = {
  nqQueries: Math.round(58_622 * scale),
  nqNegatives: 30,
  marcoQueries: Math.round(400_000 * scale),
  marcoNegatives: 37,
  corpusPassages: Math.round(5_000_000 * scale),
  minePassages: Math.round(3_000_000 * scale), // the corpus's first part: what mining ranks and reads
  repRows: Math.round(10_000_000 * scale), // × 768 × 4 bytes = 30.7 GB
  repShards: 10,
  dim: 768,
  queries: 3610,
  depth: 100,
  encodeShards: 20,
};
const MB = 1 << 20;
const round = (x: number | null, digits = 1) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(digits)));
const since = (t0: number) => ((performance.now() - t0) / 1000).toFixed(0);
const log = (line: string) => console.error(line);

const work = mkdtempSync(path.join(os.tmpdir(), 'tevatron-scale-'));
const cleanup = () => rmSync(work, { recursive: true, force: true });
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killStage();
    cleanup();
    process.exit(130);
  });
}
const env = { TEVATRON_TS_CACHE: path.join(work, 'cache'), TEVATRON_BACKEND: backend };
const results: Record<string, unknown> = { date: new Date().toISOString(), scale, stages: [...stages], backend, cpus: os.cpus().length, memoryGB: round(os.totalmem() / GB), sizes: SIZES };
const figures: Record<string, Record<string, unknown>> = {};
function record(name: string, f: Record<string, unknown>, error?: string): void {
  figures[name] = { ...f, ...(error ? { error } : {}) };
  log(`  ${name.padEnd(31)} ${error ? `FAILED: ${error}` : Object.entries(f).map(([k, v]) => `${k} ${v}`).join(', ')}`);
}
const ofStage = (s: Stage) => ({ seconds: round(s.seconds), peakRssMB: round(s.peakRssMB, 0) });
/** A number the script printed (its own clock), or NaN. */
const printed = (s: Stage, re: RegExp) => Number(re.exec(s.stdout)?.[1] ?? NaN);

try {
  const sample = loadSample();
  const model = writeTinyModel(path.join(work, 'model'));
  const P_MAX_LEN = 156; // Tevatron's NQ recipe

  const trainFile = async (name: string, rows: number, negatives: number) => {
    const file = path.join(work, `${name}.jsonl`);
    needDisk(work, rows * (negatives + 1) * sample.passageBytes * 2, `the ${name} training file and its store`);
    const t0 = performance.now();
    const bytes = await writeLines(file, rows, (i) => trainRow(sample, i, negatives));
    log(`${name}: ${rows} queries × ${negatives + 1} passages, ${(bytes / GB).toFixed(2)} GB, made in ${since(t0)} s`);
    return { name, file, bytes, passages: rows * (negatives + 1) };
  };
  type TrainFile = Awaited<ReturnType<typeof trainFile>>;

  const trainTwice = async (f: TrainFile) => {
    for (const start of ['first', 'second']) {
      const s = await runStage(work, `${f.name}-${start}`, 'scripts/train.ts', [
        '--output_dir', path.join(work, `${f.name}-${start}`), '--model_name_or_path', model, '--train_dir', f.file, '--do_train', '--cache_dir', path.join(work, 'cache'),
        '--per_device_train_batch_size', '8', '--train_n_passages', '8', '--q_max_len', '32', '--p_max_len', String(P_MAX_LEN), '--max_steps', '3',
        '--logging_steps', '1', '--save_steps', '1000000', '--dataset_proc_num', String(os.availableParallelism()),
      ], env);
      const load = printed(s, /training queries .* in ([\d.]+) s/);
      record(`train ${f.name}, ${start} start`, {
        ...ofStage(s), fileGB: round(f.bytes / GB, 2), passages: f.passages, dataLoadSeconds: round(load),
        passagesPerSecond: start === 'first' ? round(f.passages / load, 0) : null, firstStepSeconds: round(s.firstStepSeconds),
      }, s.error);
    }
    rmSync(path.join(work, 'cache'), { recursive: true, force: true });
  };

  // in this process, so that its CPU time (every thread's) is the tokenizing's: the rate whatever else loads the machine
  const tokenizeAlone = async (f: TrainFile, procNum: number) => {
    const name = `tokenize, --dataset_proc_num ${procNum}`;
    try {
      const tokenizer = await loadTokenizer(model);
      const o = { tokenize: (t: string, max: number) => tokenizer.encode(t).slice(0, max), qMaxLen: 32, pMaxLen: P_MAX_LEN, separator: ' ' };
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const data = await loadTrainData([f.file], o, { tokenizer, cacheDir: path.join(work, 'tokenize'), procNum });
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      data.store?.close();
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      record(name, { seconds: round(seconds), cpuSeconds: round(cpuSeconds), workers: data.workers, passages: f.passages, passagesPerSecond: round(f.passages / seconds, 0), passagesPerCpuSecond: round(f.passages / cpuSeconds, 0) });
    } catch (e) {
      record(name, {}, (e as Error).message);
    } finally {
      rmSync(path.join(work, 'tokenize'), { recursive: true, force: true });
    }
  };

  /** Part 0 of the corpus (the passages mining ranks) or part 1 (the rest up to the encode corpus's size), made once. */
  const corpusPart = async (k: 0 | 1) => {
    const file = path.join(work, `corpus.${k}.jsonl`);
    if (existsSync(file)) return file;
    const [from, to] = k === 0 ? [0, SIZES.minePassages] : [SIZES.minePassages, SIZES.corpusPassages];
    needDisk(work, (to - from) * sample.passageBytes * 1.1, 'the corpus');
    const bytes = await writeLines(file, to - from, (i) => passageRow(sample, from + i));
    log(`corpus part ${k}: passages ${from}–${to - 1}, ${(bytes / GB).toFixed(2)} GB`);
    return file;
  };

  const mine = async (f: TrainFile) => {
    const corpus = await corpusPart(0);
    // each question's positive at a random rank among `depth` passages drawn uniformly from the corpus, best first
    const ranking = path.join(work, 'ranking.txt');
    const next = xorshift(1);
    const depth = SIZES.depth;
    let positiveAt = 0;
    await writeLines(ranking, SIZES.nqQueries * depth, (l) => {
      const [q, r] = [Math.floor(l / depth), l % depth];
      if (r === 0) positiveAt = next() % depth;
      return `${q}\t${r === positiveAt ? q * (SIZES.nqNegatives + 1) : next() % SIZES.minePassages}\t${(100 - r * 0.25).toFixed(2)}`;
    });
    const gzipped = `${corpus}.gz`;
    await pipeline(createReadStream(corpus), createGzip(), createWriteStream(gzipped));
    for (const [kind, file] of [['plain', corpus], ['gzipped', gzipped]]) {
      const out = path.join(work, 'mined.jsonl');
      const s = await runStage(work, `mine-${kind}`, 'scripts/mine.ts', ['--train_file', f.file, '--ranking', ranking, '--corpus', file, '--save_to', out, '--depth', String(depth)], env);
      record(`mine, corpus ${kind}`, {
        ...ofStage(s), questions: SIZES.nqQueries, depth, corpusPassages: SIZES.minePassages, outputMB: existsSync(out) ? round(statSync(out).size / MB, 0) : null, summary: s.stdout.trim().split('\n').pop()?.replace(/ into \S+/, ''),
      }, s.error);
      rmSync(out, { force: true });
    }
    rmSync(gzipped);
    rmSync(ranking);
  };

  const encode = async () => {
    const corpus = [await corpusPart(0), await corpusPart(1)];
    const encoded = path.join(work, 'corpus.00.st');
    const s = await runStage(work, 'encode', 'scripts/encode.ts', [
      '--model_name_or_path', model, '--encode_in_path', ...corpus, '--encode_num_shard', String(SIZES.encodeShards), '--encode_shard_index', '0',
      '--p_max_len', '128', '--per_device_eval_batch_size', '128', '--encoded_save_path', encoded,
    ], env);
    const shardRows = Math.ceil(SIZES.corpusPassages / SIZES.encodeShards);
    // the script's own clock: reading the corpus and encoding the shard, without the process start and the model load
    const seconds = printed(s, / in ([\d.]+) s/);
    record(`encode shard 0 of ${SIZES.encodeShards}`, {
      ...ofStage(s), corpusPassages: SIZES.corpusPassages, shardPassages: shardRows, encodeSeconds: round(seconds), corpusReadPerSecond: round(SIZES.corpusPassages / seconds, 0),
      encodedPerSecond: round(shardRows / seconds, 0), outputMB: existsSync(encoded) ? round(statSync(encoded).size / MB, 0) : null,
    }, s.error);
  };

  const search = async () => {
    const repBytes = SIZES.repRows * SIZES.dim * 4;
    needDisk(work, repBytes * 1.02, 'the passage representations');
    const t0 = performance.now();
    const perShard = Math.ceil(SIZES.repRows / SIZES.repShards);
    for (let i = 0; i < SIZES.repShards; i++) await writeReps(path.join(work, `reps.${String(i).padStart(2, '0')}.st`), Math.min(perShard, SIZES.repRows - i * perShard), SIZES.dim, i + 1);
    await writeReps(path.join(work, 'queries.st'), SIZES.queries, SIZES.dim, 99);
    log(`representations: ${SIZES.repRows} × ${SIZES.dim} in ${SIZES.repShards} shards, ${(repBytes / GB).toFixed(1)} GB (machine memory ${(os.totalmem() / GB).toFixed(0)} GB), made in ${since(t0)} s`);
    const run = path.join(work, 'run.txt');
    const s = await runStage(work, 'search', 'scripts/search.ts', [
      '--query_reps', path.join(work, 'queries.st'), '--passage_reps', path.join(work, 'reps.*.st'), '--depth', String(SIZES.depth), '--batch_size', '128', '--save_ranking_to', run,
    ], env);
    // the script's own clock: reading the shards and scoring, without the process start and loading the queries
    const seconds = printed(s, / in ([\d.]+) s/);
    const gflops = (2 * SIZES.queries * SIZES.repRows * SIZES.dim) / seconds / 1e9;
    // the backend's own matmul speed at the shape search multiplies (128 queries × one block), in a process of its own
    const mmJson = path.join(work, 'matmul.json');
    const mm = await runStage(work, 'matmul', 'bench/matmul.ts', ['--backends', backend, '--size', `128x${SIZES.dim}x${defaultBlockRows(SIZES.dim)}`, '--seconds', '3', '--json', mmJson], env);
    const mmGflops = mm.error ? null : ((JSON.parse(readFileSync(mmJson, 'utf8')).rows as { gflops?: number }[]).find((r) => r.gflops !== undefined)?.gflops ?? null);
    const lines = existsSync(run) ? readFileSync(run, 'utf8').split('\n').length - 1 : null;
    if (!s.error && lines !== SIZES.queries * SIZES.depth) s.error = `the ranking has ${lines} lines, expected ${SIZES.queries * SIZES.depth}`;
    record('search', {
      ...ofStage(s), queries: SIZES.queries, passages: SIZES.repRows, repsGB: round(repBytes / GB), searchSeconds: round(seconds), passagesPerSecond: round(SIZES.repRows / seconds, 0),
      queriesPerSecond: round(SIZES.queries / seconds), gflops: round(gflops), matmulGflops: round(mmGflops), ofMatmul: mmGflops ? round(gflops / mmGflops, 2) : null,
    }, s.error);
  };

  // in an order that makes each data set once and deletes it after its last stage
  if (stages.has('train') || stages.has('tokenize') || stages.has('mine')) {
    const nq = await trainFile('nq', SIZES.nqQueries, SIZES.nqNegatives);
    if (stages.has('train')) await trainTwice(nq);
    if (stages.has('tokenize')) for (const procNum of [1, 2]) await tokenizeAlone(nq, procNum);
    if (stages.has('mine')) await mine(nq);
    rmSync(nq.file);
  }
  if (stages.has('encode')) await encode();
  rmSync(path.join(work, 'corpus.0.jsonl'), { force: true });
  rmSync(path.join(work, 'corpus.1.jsonl'), { force: true });
  if (stages.has('train')) {
    const marco = await trainFile('marco', SIZES.marcoQueries, SIZES.marcoNegatives);
    await trainTwice(marco);
    rmSync(marco.file);
  }
  if (stages.has('search')) await search();
} catch (e) {
  results.error = (e as Error).message;
  log(`scale: ${results.error}`);
} finally {
  cleanup();
}

// ---- targets (issue 14) ----------------------------------------------------------------------------
const fig = (stage: string, key: string) => (figures[stage]?.[key] ?? null) as number | null;
const check = (what: string, value: number | null, ok: (v: number) => boolean, unit: string) =>
  `${what}: ${value === null ? 'n/a' : `${value}${unit} ${ok(value) ? '(met)' : '(NOT met)'}`}`;
const encodeStage = `encode shard 0 of ${SIZES.encodeShards}`;
const encodeLimit = 1536 + (fig(encodeStage, 'outputMB') ?? 0);
const targets = [
  check('train NQ-size peak RSS <= 2048 MB (first start)', fig('train nq, first start', 'peakRssMB'), (v) => v <= 2048, ' MB'),
  check('train MS MARCO-size peak RSS <= 2048 MB (first start)', fig('train marco, first start', 'peakRssMB'), (v) => v <= 2048, ' MB'),
  check('tokenizing >= 13k passages/s (MS MARCO-size, first start)', fig('train marco, first start', 'passagesPerSecond'), (v) => v >= 13000, ' passages/s'),
  check('second start <= 15 s to the first step (MS MARCO-size)', fig('train marco, second start', 'firstStepSeconds'), (v) => v <= 15, ' s'),
  check(`encode shard 0 of 20 peak RSS <= 1536 MB + the shard's output (${encodeLimit.toFixed(0)} MB)`, fig(encodeStage, 'peakRssMB'), (v) => v <= encodeLimit, ' MB'),
  check('search peak RSS <= 3072 MB', fig('search', 'peakRssMB'), (v) => v <= 3072, ' MB'),
];
results.figures = figures;
results.targets = targets;
log(`\ntargets${scale < 1 ? ` (at --scale ${scale}: the sizes are not the issue's)` : ''}:\n${targets.map((t) => `  ${t}`).join('\n')}`);
mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(path.join(ROOT, 'bench/results/scale.json'), JSON.stringify(results, null, 2) + '\n');
if (opt.json) console.log(JSON.stringify(results));
if (results.error || Object.values(figures).some((f) => f.error)) process.exitCode = 1;

// The recipe at its real size (issue 14): from the shared NQ sample's real texts, repeated, it generates an
// NQ-size training file (58,622 queries × 31 passages, one file), an MS MARCO-size one (400k queries, ~8 GB),
// a 5M-passage corpus and 768-d passage representations larger than memory (~30 GB), and runs each stage as
// a user does, each in a child process of its own (so each peak RSS is its own): training's first start
// (tokenizing into the store) and second start (reading it) with a tiny BERT, encoding shard 0 of 20 of the
// corpus, searching 3,610 queries at depth 100. Everything generated lives in one temporary directory,
// deleted at the end, on failure and on Ctrl-C; each data set is deleted once its stages ran.
//   npx tsx bench/scale.ts [--scale 1] [--json]      npm run bench -- --sections scale [--scale 0.01]
// --scale multiplies every size (0.01 checks the pipeline in a few minutes). Figures go to
// bench/results/scale.json; TEVATRON_BACKEND picks the backend.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createEncodedWriter } from '../lib/encoded.ts';
import { defaultBlockRows } from '../lib/search.ts';

const { values: opt } = parseArgs({ options: { scale: { type: 'string', default: '1' }, json: { type: 'boolean', default: false } } });
const scale = Number(opt.scale);
if (!(scale > 0 && scale <= 1)) throw new Error(`--scale ${opt.scale}: expected a number in (0, 1]`);
const backend = process.env.TEVATRON_BACKEND ?? 'auto';
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const shared = path.join(root, '..', 'shared', 'data');
const SIZES = {
  nqQueries: Math.round(58_622 * scale),
  marcoQueries: Math.round(400_000 * scale),
  marcoBytes: 8e9 * scale,
  corpusPassages: Math.round(5_000_000 * scale),
  repRows: Math.round(10_000_000 * scale), // × 768 × 4 bytes = 30.7 GB
  repShards: 10,
  dim: 768,
  queries: 3610,
  depth: 100,
  encodeShards: 20,
};
const GB = 1e9;
const MB = 1 << 20;

// ---- generated data ------------------------------------------------------------------------------

/** The sample's passages (JSON text, each once) and queries. */
function loadSample(): { passages: string[]; queries: string[] } {
  const file = path.join(shared, 'nq', 'train.jsonl');
  if (!existsSync(file)) throw new Error(`${file} is absent: bench/scale.ts generates its data from the shared NQ sample (see ../shared/data/README.md)`);
  const byId = new Map<string, string>();
  const queries: string[] = [];
  const add = (p: { docid: string; title: string; text: string }) => byId.set(p.docid, JSON.stringify({ docid: p.docid, title: p.title, text: p.text }));
  for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const r = JSON.parse(line);
    queries.push(r.query);
    [...r.positive_passages, ...r.negative_passages].forEach(add);
  }
  for (const line of readFileSync(path.join(shared, 'nq', 'corpus.jsonl'), 'utf8').split('\n').filter(Boolean)) add(JSON.parse(line));
  return { passages: [...byId.values()], queries };
}

/** Writes `count` lines through a 4 MB buffer; returns the bytes written. */
function writeLines(file: string, count: number, line: (i: number) => string): number {
  const fd = openSync(file, 'w');
  let bytes = 0;
  let pending: string[] = [];
  let size = 0;
  const flush = () => {
    bytes += writeSync(fd, pending.join(''));
    pending = [];
    size = 0;
  };
  for (let i = 0; i < count; i++) {
    const l = line(i) + '\n';
    pending.push(l);
    if ((size += l.length) > 4 * MB) flush();
  }
  flush();
  closeSync(fd);
  return bytes;
}

/** Tevatron's raw training rows: query i of the sample (cycled), 1 positive and `negatives` negatives from the passage pool. */
function trainFile(file: string, rows: number, negatives: number, s: ReturnType<typeof loadSample>): number {
  const P = s.passages.length;
  return writeLines(file, rows, (i) => {
    const at = (i * (negatives + 1)) % P;
    const negs = Array.from({ length: negatives }, (_, j) => s.passages[(at + 1 + j) % P]);
    return `{"query_id":"${i}","query":${JSON.stringify(s.queries[i % s.queries.length])},"positive_passages":[${s.passages[at]}],"negative_passages":[${negs.join(',')}]}`;
  });
}

/** A corpus of `rows` passages {docid, title, text}: the pool cycled, unique docids. */
const corpusFile = (file: string, rows: number, s: ReturnType<typeof loadSample>) =>
  writeLines(file, rows, (i) => `{"docid":"c${i}",${s.passages[i % s.passages.length].replace(/^\{"docid":"[^"]*",/, '')}`);

/** Random representations (xorshift: random rows cost nothing to search but their arithmetic). */
function repsFile(file: string, rows: number, dim: number, seed: number): number {
  const w = createEncodedWriter(file);
  let x = seed >>> 0 || 1;
  const block = Math.min(rows, Math.floor(defaultBlockRows(dim) / 4));
  const data = new Float32Array(block * dim);
  for (let start = 0; start < rows; start += block) {
    const n = Math.min(block, rows - start);
    for (let i = 0; i < n * dim; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      data[i] = (x >>> 0) / 2 ** 32 - 0.5;
    }
    w.append(Array.from({ length: n }, (_, i) => `p${start + i}`), data.subarray(0, n * dim), dim);
  }
  w.close();
  return statSync(file).size;
}

/** Refuses to start a stage that would fill the disk (others share it). */
function needDisk(dir: string, bytes: number, what: string): void {
  const st = statfsSync(dir);
  const free = st.bavail * st.bsize;
  if (free < bytes + 2 * GB) throw new Error(`${what} needs ${(bytes / GB).toFixed(1)} GB and ${dir} has ${(free / GB).toFixed(1)} GB free (2 GB kept); free some space or pass --scale`);
}

// ---- stages in child processes -------------------------------------------------------------------

interface Stage {
  seconds: number;
  peakRssMB: number | null;
  /** Seconds from the start of the process to its first training step's log line. */
  firstStepSeconds: number | null;
  stdout: string;
  error?: string;
}

let running: ChildProcess | null = null;

function runStage(name: string, work: string, script: string, args: string[]): Promise<Stage> {
  const rssFile = path.join(work, `rss-${name}`);
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', path.join(root, 'bench/peak-rss.ts'), path.join(root, script), ...args], {
      cwd: root,
      env: { ...process.env, TEVATRON_PEAK_RSS_FILE: rssFile, TEVATRON_TS_CACHE: path.join(work, 'cache'), TEVATRON_BACKEND: backend },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running = child;
    let stdout = '';
    let stderr = '';
    let firstStep: number | null = null;
    child.stdout!.on('data', (d) => {
      stdout += d;
      if (firstStep === null && /^step \d+\//m.test(stdout)) firstStep = (performance.now() - started) / 1000;
    });
    child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
    child.on('close', (code, signal) => {
      running = null;
      const seconds = (performance.now() - started) / 1000;
      const peakRssMB = existsSync(rssFile) ? Number(readFileSync(rssFile, 'utf8')) / 1024 : null;
      const error = code === 0 ? undefined : (stderr.trim().split('\n').pop() ?? '').slice(0, 300) || `exit ${code ?? signal}`;
      resolve({ seconds, peakRssMB, firstStepSeconds: firstStep, stdout, error });
    });
  });
}

/** The tiny BERT every stage uses (2 layers, hidden 128) with the bert-base-uncased vocabulary: config only, random init. */
function tinyBert(dir: string): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(path.join(shared, 'bert-base-uncased', 'vocab.txt'), path.join(dir, 'vocab.txt'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'bert', vocab_size: 30522, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 512, max_position_embeddings: 512, hidden_act: 'gelu', pad_token_id: 0 }));
  return dir;
}

const round = (x: number | null, digits = 1) => (x === null ? null : Number(x.toFixed(digits)));

// ---- the run ---------------------------------------------------------------------------------------

const work = mkdtempSync(path.join(os.tmpdir(), 'tevatron-scale-'));
const cleanup = () => rmSync(work, { recursive: true, force: true });
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    running?.kill('SIGKILL');
    cleanup();
    process.exit(130);
  });
}
const results: Record<string, unknown> = { date: new Date().toISOString(), scale, backend, cpus: os.cpus().length, memoryGB: round(os.totalmem() / GB), sizes: SIZES };
const stages: Record<string, Record<string, unknown>> = {};
const log = (line: string) => console.error(line);
const show = (name: string, s: Stage, extra: Record<string, unknown>) => {
  stages[name] = { seconds: round(s.seconds), peakRssMB: round(s.peakRssMB, 0), ...extra, ...(s.error ? { error: s.error } : {}) };
  log(`  ${name.padEnd(22)} ${s.error ? `FAILED: ${s.error}` : `${s.seconds.toFixed(1)} s, peak RSS ${s.peakRssMB?.toFixed(0)} MB, ${JSON.stringify(extra)}`}`);
};

try {
  const sample = loadSample();
  const passageBytes = sample.passages.reduce((n, p) => n + p.length, 0) / sample.passages.length;
  const model = tinyBert(path.join(work, 'init'));
  const trainArgs = (file: string, out: string) => [
    '--output_dir', out, '--model_name_or_path', model, '--train_dir', file, '--do_train', '--cache_dir', path.join(work, 'cache'),
    '--per_device_train_batch_size', '8', '--train_n_passages', '2', '--q_max_len', '32', '--p_max_len', '128', '--max_steps', '3',
    '--logging_steps', '1', '--save_steps', '1000000', '--dataset_proc_num', String(os.availableParallelism()),
  ];
  const train = async (name: string, rows: number, negatives: number) => {
    const file = path.join(work, `${name}.jsonl`);
    needDisk(work, rows * (negatives + 1) * passageBytes * 2, `the ${name} training file and its store`);
    const t0 = performance.now();
    const bytes = trainFile(file, rows, negatives, sample);
    log(`${name}: ${rows} queries × ${negatives + 1} passages, ${(bytes / GB).toFixed(2)} GB, generated in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    const passages = rows * (negatives + 1);
    for (const start of ['first', 'second']) {
      const s = await runStage(`${name}-${start}`, work, 'scripts/train.ts', trainArgs(file, path.join(work, `${name}-${start}`)));
      const load = Number(/training queries .* in ([\d.]+) s/.exec(s.stdout)?.[1] ?? NaN);
      show(`train ${name}, ${start} start`, s, {
        fileGB: round(bytes / GB, 2), passages, dataLoadSeconds: round(load), passagesPerSecond: Number.isFinite(load) && start === 'first' ? Math.round(passages / load) : null, firstStepSeconds: round(s.firstStepSeconds),
      });
    }
    rmSync(file);
    rmSync(path.join(work, 'cache'), { recursive: true, force: true });
  };
  await train('nq', SIZES.nqQueries, 30);
  await train('marco', SIZES.marcoQueries, Math.max(1, Math.round(SIZES.marcoBytes / SIZES.marcoQueries / passageBytes) - 1));

  // encode: shard 0 of 20 of the corpus, with the model the NQ run trained
  const corpus = path.join(work, 'corpus.jsonl');
  needDisk(work, SIZES.corpusPassages * passageBytes * 1.1, 'the corpus');
  const corpusBytes = corpusFile(corpus, SIZES.corpusPassages, sample);
  log(`corpus: ${SIZES.corpusPassages} passages, ${(corpusBytes / GB).toFixed(2)} GB`);
  const encoded = path.join(work, 'corpus.00.st');
  const enc = await runStage('encode', work, 'scripts/encode.ts', [
    '--model_name_or_path', path.join(work, 'nq-first'), '--encode_in_path', corpus, '--encode_num_shard', String(SIZES.encodeShards), '--encode_shard_index', '0',
    '--p_max_len', '128', '--per_device_eval_batch_size', '128', '--encoded_save_path', encoded,
  ]);
  const outMB = existsSync(encoded) ? statSync(encoded).size / MB : null;
  const shardRows = Math.ceil(SIZES.corpusPassages / SIZES.encodeShards);
  // the script's own clock: reading the corpus and encoding the shard, without the process start and the model load
  const encodeSeconds = Number(/ in ([\d.]+) s/.exec(enc.stdout)?.[1] ?? NaN);
  show('encode shard 0 of 20', enc, {
    corpusPassages: SIZES.corpusPassages, shardPassages: shardRows, encodeSeconds: round(encodeSeconds), corpusReadPerSecond: Math.round(SIZES.corpusPassages / encodeSeconds),
    encodedPerSecond: Math.round(shardRows / encodeSeconds), outputMB: round(outMB, 0),
  });
  rmSync(corpus);

  // search: 3,610 queries at depth 100 over representations larger than memory
  const repBytes = SIZES.repRows * SIZES.dim * 4;
  needDisk(work, repBytes * 1.02, 'the passage representations');
  const t0 = performance.now();
  const perShard = Math.ceil(SIZES.repRows / SIZES.repShards);
  for (let i = 0; i < SIZES.repShards; i++) repsFile(path.join(work, `reps.${String(i).padStart(2, '0')}.st`), Math.min(perShard, SIZES.repRows - i * perShard), SIZES.dim, i + 1);
  repsFile(path.join(work, 'queries.st'), SIZES.queries, SIZES.dim, 99);
  log(`representations: ${SIZES.repRows} × ${SIZES.dim} in ${SIZES.repShards} shards, ${(repBytes / GB).toFixed(1)} GB (machine memory ${(os.totalmem() / GB).toFixed(0)} GB), generated in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  const run = path.join(work, 'run.txt');
  const s = await runStage('search', work, 'scripts/search.ts', [
    '--query_reps', path.join(work, 'queries.st'), '--passage_reps', path.join(work, 'reps.*.st'), '--depth', String(SIZES.depth), '--batch_size', '128', '--save_ranking_to', run,
  ]);
  // the script's own clock: reading the shards and scoring, without the process start and loading the queries
  const searchSeconds = Number(/ in ([\d.]+) s/.exec(s.stdout)?.[1] ?? NaN);
  const gflops = (2 * SIZES.queries * SIZES.repRows * SIZES.dim) / searchSeconds / 1e9;
  // the backend's own matmul speed at the shape search multiplies (128 queries × one block), in a process of its own
  const mm = await runStage('matmul', work, 'bench/matmul.ts', ['--backends', backend, '--size', `128x${SIZES.dim}x${defaultBlockRows(SIZES.dim)}`, '--seconds', '3', '--json', path.join(work, 'matmul.json')]);
  const mmRow = mm.error ? null : (JSON.parse(readFileSync(path.join(work, 'matmul.json'), 'utf8')).rows as { gflops?: number }[]).find((r) => r.gflops !== undefined);
  const rankingLines = existsSync(run) ? readFileSync(run, 'utf8').split('\n').length - 1 : null;
  if (!s.error && rankingLines !== SIZES.queries * SIZES.depth) s.error = `the ranking has ${rankingLines} lines, expected ${SIZES.queries * SIZES.depth}`;
  show('search', s, {
    queries: SIZES.queries, passages: SIZES.repRows, repsGB: round(repBytes / GB), searchSeconds: round(searchSeconds), passagesPerSecond: Math.round(SIZES.repRows / searchSeconds),
    queriesPerSecond: round(SIZES.queries / searchSeconds), gflops: round(gflops), matmulGflops: round(mmRow?.gflops ?? null), ofMatmul: mmRow?.gflops ? round(gflops / mmRow.gflops, 2) : null,
  });
} catch (e) {
  results.error = (e as Error).message;
  log(`scale: ${results.error}`);
} finally {
  cleanup();
}

// ---- targets (issue 14) ----------------------------------------------------------------------------
const st = (k: string, f: string) => (stages[k]?.[f] ?? null) as number | null;
const check = (what: string, value: number | null, ok: (v: number) => boolean, unit: string) =>
  `${what}: ${value === null ? 'n/a' : `${value}${unit} ${ok(value) ? '(met)' : '(NOT met)'}`}`;
const encodeLimit = 1536 + (st('encode shard 0 of 20', 'outputMB') ?? 0);
const targets = [
  check('train NQ-size peak RSS <= 2048 MB (first start)', st('train nq, first start', 'peakRssMB'), (v) => v <= 2048, ' MB'),
  check('train MS MARCO-size peak RSS <= 2048 MB (first start)', st('train marco, first start', 'peakRssMB'), (v) => v <= 2048, ' MB'),
  check('tokenizing >= 13k passages/s (MS MARCO-size, first start)', st('train marco, first start', 'passagesPerSecond'), (v) => v >= 13000, ' passages/s'),
  check('second start <= 15 s to the first step (MS MARCO-size)', st('train marco, second start', 'firstStepSeconds'), (v) => v <= 15, ' s'),
  check(`encode shard 0 of 20 peak RSS <= 1536 MB + the shard's output (${encodeLimit.toFixed(0)} MB)`, st('encode shard 0 of 20', 'peakRssMB'), (v) => v <= encodeLimit, ' MB'),
  check('search peak RSS <= 3072 MB', st('search', 'peakRssMB'), (v) => v <= 3072, ' MB'),
];
results.stages = stages;
results.targets = targets;
log(`\ntargets${scale < 1 ? ` (at --scale ${scale}: the sizes are not the issue's)` : ''}:\n${targets.map((t) => `  ${t}`).join('\n')}`);
mkdirSync(path.join(root, 'bench/results'), { recursive: true });
writeFileSync(path.join(root, 'bench/results/scale.json'), JSON.stringify(results, null, 2) + '\n');
if (opt.json) console.log(JSON.stringify(results));
if (results.error || Object.values(stages).some((s) => s.error)) process.exitCode = 1;

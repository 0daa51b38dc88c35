// The training stage at full size (issue 14): generates one training file shaped like Tevatron/wikipedia-nq's
// train split from the shared NQ sample (58,622 queries x 1 positive + 30 negatives, real passage texts
// repeated: about 1 GB; --rows 400000 for MS MARCO's size, about 8 GB), then runs scripts/train.ts on it twice
// with a tiny BERT (bert-base-uncased's vocabulary, 2 layers, hidden 32): the first start tokenizes into the
// store, the second opens it. Reports tokenizing passages/s, seconds from process start to the first step,
// and each run's peak RSS; deletes what it generated unless --keep.
//   npx tsx bench/scale_train.ts [--rows 58622] [--negatives 30] [--proc 2] [--steps 3] [--dir /tmp/...] [--keep]
//   npx tsx bench/scale_train.ts --tokenize-only [--rows 58622] [--proc 1,2]    # tokenizing alone, in this process
// or, from another benchmark: import { trainStage } from './scale_train.ts'.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTrainData } from '../lib/data/tokenized.ts';
import { loadTokenizer } from '../lib/tokenizer.ts';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const SHARED_DATA = path.resolve(root, '../shared/data');

interface Passage {
  docid: string;
  title: string;
  text: string;
}

/**
 * Writes `rows` training rows in Tevatron's raw format: row i takes query i mod 2,106 of the shared sample
 * with its gold passage, and `negatives` passages drawn in turn from every passage of the sample (its BM25
 * negatives and the corpus). Returns the file's size and its passage count.
 */
export async function makeTrainFile(file: string, rows: number, negatives: number, dataDir = SHARED_DATA): Promise<{ bytes: number; passages: number }> {
  const lines = (f: string) => readFileSync(path.join(dataDir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const train = lines('nq/train.jsonl') as { query: string; answers: string[]; positive_passages: Passage[]; negative_passages: Passage[] }[];
  const pool = new Map<string, Passage>();
  for (const p of [...train.flatMap((r) => r.negative_passages), ...(lines('nq/corpus.jsonl') as Passage[])]) pool.set(p.docid, p);
  const passages = [...pool.values()];
  const out = createWriteStream(file);
  let at = 0;
  for (let i = 0; i < rows; i++) {
    const t = train[i % train.length];
    const negs = Array.from({ length: negatives }, () => passages[at++ % passages.length]);
    const line = JSON.stringify({ query_id: String(i), query: t.query, answers: t.answers, positive_passages: t.positive_passages.slice(0, 1), negative_passages: negs }) + '\n';
    if (!out.write(line)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  return { bytes: statSync(file).size, passages: rows * (1 + negatives) };
}

/** A randomly initialised tiny BERT with bert-base-uncased's vocabulary (30,522 ids: the store keeps uint16 ids). */
export function makeTinyModel(dir: string, dataDir = SHARED_DATA): string {
  mkdirSync(dir, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(root, 'test/fixtures/tiny-bert/config.json'), 'utf8'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, vocab_size: 30522, max_position_embeddings: 512 }, null, 2));
  copyFileSync(path.join(dataDir, 'bert-base-uncased/vocab.txt'), path.join(dir, 'vocab.txt'));
  return dir;
}

export interface TrainRun {
  /** From the process's start to its first logged step. */
  secondsToFirstStep: number;
  /** Reading and tokenizing (or opening the store), as scripts/train.ts reports it. */
  dataSeconds: number;
  tokenized: boolean;
  peakRssMB: number;
  exitCode: number;
}

/** scripts/train.ts as a child process; its peak RSS from a preloaded exit hook (worker threads are in the process). */
export function runTrain(args: string[], cwd = root): Promise<TrainRun & { output: string }> {
  const rssHook = `data:text/javascript,process.on('exit',()=>process.stderr.write('peak_rss_kb '+process.resourceUsage().maxRSS+'\\n'))`;
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', rssHook, '--import', 'tsx', path.join(root, 'scripts/train.ts'), ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let firstStep = NaN;
  child.stdout.on('data', (d) => {
    output += d;
    if (Number.isNaN(firstStep) && /^step \d+\//m.test(output)) firstStep = (performance.now() - t0) / 1000;
  });
  child.stderr.on('data', (d) => (output += d));
  return new Promise((resolve) => {
    child.on('exit', (code) => {
      const data = /training queries (tokenized|opened)[^\n]* in ([\d.]+) s/.exec(output);
      resolve({
        secondsToFirstStep: firstStep,
        dataSeconds: data ? Number(data[2]) : NaN,
        tokenized: data?.[1] === 'tokenized',
        peakRssMB: Number(/peak_rss_kb (\d+)/.exec(output)?.[1] ?? NaN) / 1024,
        exitCode: code ?? -1,
        output,
      });
    });
  });
}

/**
 * Tokenizing alone, in this process: loadTrainData into a fresh store with `procNum` workers. CPU seconds
 * count every thread of the process, so passages per CPU-second shows the work whatever else loads the machine.
 */
export async function tokenizeStage(file: string, passages: number, procNum: number, dataDir = SHARED_DATA): Promise<{ seconds: number; cpuSeconds: number; passagesPerSecond: number; passagesPerCpuSecond: number; workers: number }> {
  const tokenizer = await loadTokenizer(path.join(dataDir, 'bert-base-uncased'));
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'tevatron-scale-store-'));
  try {
    const o = { tokenize: (t: string, max: number) => tokenizer.encode(t).slice(0, max), qMaxLen: 32, pMaxLen: 156, separator: ' ' };
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const data = await loadTrainData([file], o, { tokenizer, cacheDir, procNum });
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    data.store?.close();
    return { seconds, cpuSeconds, passagesPerSecond: passages / seconds, passagesPerCpuSecond: passages / cpuSeconds, workers: data.workers };
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

export interface TrainStageOptions {
  rows?: number;
  negatives?: number;
  /** --dataset_proc_num (capped at the CPU count by the loader). */
  procNum?: number;
  steps?: number;
  /** Where the data, the store and the outputs go (default: a new directory under the OS's temp dir). */
  dir?: string;
  keep?: boolean;
  dataDir?: string;
}

export interface TrainStageResult {
  rows: number;
  passages: number;
  fileMB: number;
  generateSeconds: number;
  first: TrainRun & { passagesPerSecond: number };
  second: TrainRun;
}

/** Generates the file, then trains on it twice (tokenizing into the store, then opening it). */
export async function trainStage(o: TrainStageOptions = {}): Promise<TrainStageResult> {
  const rows = o.rows ?? 58622;
  const negatives = o.negatives ?? 30;
  const dir = o.dir ?? mkdtempSync(path.join(os.tmpdir(), 'tevatron-scale-train-'));
  mkdirSync(dir, { recursive: true });
  try {
    const file = path.join(dir, 'train.jsonl');
    const g0 = performance.now();
    const made = await makeTrainFile(file, rows, negatives, o.dataDir);
    const generateSeconds = (performance.now() - g0) / 1000;
    const model = makeTinyModel(path.join(dir, 'model'), o.dataDir);
    const args = (out: string) => [
      '--output_dir', path.join(dir, out), '--overwrite_output_dir', '--model_name_or_path', model, '--train_dir', file,
      '--cache_dir', path.join(dir, 'cache'), '--dataset_proc_num', String(o.procNum ?? 2),
      '--per_device_train_batch_size', '8', '--train_n_passages', '8', '--q_max_len', '32', '--p_max_len', '156',
      '--max_steps', String(o.steps ?? 3), '--logging_steps', '1', '--save_steps', '1000000', '--learning_rate', '1e-4',
    ];
    const check = (r: TrainRun & { output: string }, which: string) => {
      if (r.exitCode !== 0 || Number.isNaN(r.secondsToFirstStep)) throw new Error(`the ${which} training run failed (exit ${r.exitCode}):\n${r.output.slice(-2000)}`);
      const { output: _, ...run } = r;
      return run;
    };
    const first = check(await runTrain(args('out1')), 'first');
    const second = check(await runTrain(args('out2')), 'second');
    return {
      rows, passages: made.passages, fileMB: made.bytes / 2 ** 20, generateSeconds,
      first: { ...first, passagesPerSecond: made.passages / first.dataSeconds }, second,
    };
  } finally {
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const flag = (name: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  if (!existsSync(path.join(SHARED_DATA, 'nq/train.jsonl'))) {
    console.error(`bench/scale_train.ts: needs the shared NQ sample at ${SHARED_DATA}`);
    process.exit(1);
  }
  const num = (name: string) => (flag(name) === undefined ? undefined : Number(flag(name)));
  if (process.argv.includes('--tokenize-only')) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tevatron-scale-tok-'));
    try {
      const file = path.join(dir, 'train.jsonl');
      const made = await makeTrainFile(file, num('rows') ?? 58622, num('negatives') ?? 30);
      for (const proc of (flag('proc') ?? '1,2').split(',').map(Number)) {
        const t = await tokenizeStage(file, made.passages, proc);
        console.log(`tokenizing ${made.passages} passages (${(made.bytes / 2 ** 20).toFixed(0)} MB), --dataset_proc_num ${proc} (${t.workers} workers): ${t.seconds.toFixed(1)} s = ${Math.round(t.passagesPerSecond)} passages/s; ${t.cpuSeconds.toFixed(1)} CPU s = ${Math.round(t.passagesPerCpuSecond)} passages per CPU-second`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    process.exit(0);
  }
  const r = await trainStage({ rows: num('rows'), negatives: num('negatives'), procNum: num('proc'), steps: num('steps'), dir: flag('dir'), keep: process.argv.includes('--keep') });
  const mb = (x: number) => `${x.toFixed(0)} MB`;
  console.log(`${r.rows} rows x ${r.passages / r.rows} passages (${r.passages} passages), ${mb(r.fileMB)} in one file, generated in ${r.generateSeconds.toFixed(0)} s`);
  console.log(`first start:  tokenized ${r.passages} passages in ${r.first.dataSeconds.toFixed(1)} s = ${Math.round(r.first.passagesPerSecond)} passages/s; first step after ${r.first.secondsToFirstStep.toFixed(1)} s; peak RSS ${mb(r.first.peakRssMB)}`);
  console.log(`second start: store opened in ${r.second.dataSeconds.toFixed(1)} s; first step after ${r.second.secondsToFirstStep.toFixed(1)} s; peak RSS ${mb(r.second.peakRssMB)}`);
  console.log(JSON.stringify(r));
}

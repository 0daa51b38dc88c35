// What bench/scale.ts runs its stages on: data shaped like the recipe's at its real size, made from the shared
// NQ sample's real texts (repeated) and written as it is made, so no size is ever held in memory; random
// representations and a tiny BERT with random weights; and each stage as a child process whose peak RSS is its
// own. One docid space for everything: passage j (docid "j") has the sample's text j mod its text count, so the
// training files, the corpus and the rankings all name the same passages.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createEncodedWriter } from '../lib/encoded.ts';
import { bertConfigFromJson, bertParamShapes } from '../lib/model/bert.ts';
import { serializeSafetensors } from '../lib/model/safetensors.ts';
import { defaultBlockRows } from '../lib/search.ts';

export const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const SHARED = path.join(ROOT, '..', 'shared', 'data');
export const GB = 1e9;

export interface Sample {
  /** Each distinct passage of the sample once, as the JSON members `"title":…,"text":…`. */
  texts: string[];
  /** Each training question as the JSON members `"query":…,"answers":[…]`. */
  questions: string[];
  /** The mean length of a passage's JSON object. */
  passageBytes: number;
}

/** The shared NQ sample's passages (its training rows' and its corpus's) and training questions. */
export function loadSample(): Sample {
  const read = (name: string) => {
    const file = path.join(SHARED, 'nq', name);
    if (!existsSync(file)) throw new Error(`${file} is absent: bench/scale.ts makes its data from the shared NQ sample (see ../shared/data/README.md)`);
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  };
  type P = { docid: string; title: string; text: string };
  const train = read('train.jsonl') as { query: string; answers: string[]; positive_passages: P[]; negative_passages: P[] }[];
  const byId = new Map<string, string>();
  for (const p of [...train.flatMap((r) => [...r.positive_passages, ...r.negative_passages]), ...(read('corpus.jsonl') as P[])]) {
    byId.set(p.docid, `"title":${JSON.stringify(p.title)},"text":${JSON.stringify(p.text)}`);
  }
  const texts = [...byId.values()];
  const questions = train.map((r) => `"query":${JSON.stringify(r.query)},"answers":${JSON.stringify(r.answers)}`);
  return { texts, questions, passageBytes: texts.reduce((n, t) => n + t.length + 20, 0) / texts.length };
}

/** Passage j: {docid, title, text}. */
export const passageRow = (s: Sample, j: number) => `{"docid":"${j}",${s.texts[j % s.texts.length]}}`;

/** Training row i in Tevatron's raw format: question i mod the sample's, passage i·(n+1) as its positive, the next n as its negatives. */
export function trainRow(s: Sample, i: number, negatives: number): string {
  const at = i * (negatives + 1);
  const negs = Array.from({ length: negatives }, (_, k) => passageRow(s, at + 1 + k));
  return `{"query_id":"${i}",${s.questions[i % s.questions.length]},"positive_passages":[${passageRow(s, at)}],"negative_passages":[${negs.join(',')}]}`;
}

/** Writes `count` lines in 4 MB writes, yielding between them (so Ctrl-C is handled at once); returns the bytes written. */
export async function writeLines(file: string, count: number, line: (i: number) => string): Promise<number> {
  const fh = await open(file, 'w');
  try {
    let pending: string[] = [];
    let size = 0;
    let bytes = 0;
    const flush = async () => {
      bytes += (await fh.write(pending.join(''))).bytesWritten;
      [pending, size] = [[], 0];
    };
    for (let i = 0; i < count; i++) {
      const l = line(i) + '\n';
      pending.push(l);
      if ((size += l.length) > 4 << 20) await flush();
    }
    await flush();
    return bytes;
  } finally {
    await fh.close();
  }
}

/** xorshift32: a seeded stream of uint32s (random data costs nothing to make but its arithmetic). */
export function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** `rows` random `dim`-d representations (uniform in ±0.5, ids p0, p1, …) as encode.ts writes them; returns the file's bytes. */
export async function writeReps(file: string, rows: number, dim: number, seed: number): Promise<number> {
  const w = createEncodedWriter(file);
  const next = xorshift(seed);
  const block = Math.max(1, Math.min(rows, Math.floor(defaultBlockRows(dim) / 4)));
  const data = new Float32Array(block * dim);
  for (let start = 0; start < rows; start += block) {
    const n = Math.min(block, rows - start);
    for (let i = 0; i < n * dim; i++) data[i] = next() / 2 ** 32 - 0.5;
    w.append(Array.from({ length: n }, (_, i) => `p${start + i}`), data.subarray(0, n * dim), dim);
    await nextTurn();
  }
  w.close();
  return statSync(file).size;
}

/**
 * A tiny BERT (2 layers, hidden 128) with bert-base-uncased's vocabulary (30,522 ids: the store keeps uint16
 * ids) and random weights (uniform, about transformers' init scale), so that training starts from it and
 * encoding loads it without a training run first.
 */
export function writeTinyModel(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const json = { model_type: 'bert', vocab_size: 30522, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 512, max_position_embeddings: 512, hidden_act: 'gelu', pad_token_id: 0 };
  const next = xorshift(7);
  const tensors = Object.fromEntries(
    Object.entries(bertParamShapes(bertConfigFromJson(json))).map(([name, shape]) => {
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      if (name.endsWith('LayerNorm.weight')) data.fill(1);
      else if (!name.endsWith('.bias')) data.forEach((_, i) => (data[i] = (next() / 2 ** 32 - 0.5) * 0.07));
      return [name, { shape, data }];
    }),
  );
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json, null, 2));
  writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(tensors));
  copyFileSync(path.join(SHARED, 'bert-base-uncased', 'vocab.txt'), path.join(dir, 'vocab.txt'));
  return dir;
}

/** Refuses to write what would leave less than 2 GB of the disk free (others share it). */
export function needDisk(dir: string, bytes: number, what: string): void {
  const st = statfsSync(dir);
  const free = st.bavail * st.bsize;
  if (free < bytes + 2 * GB) throw new Error(`${what} needs ${(bytes / GB).toFixed(1)} GB and ${dir} has ${(free / GB).toFixed(1)} GB free (2 GB kept); free some space or pass --scale`);
}

export interface Stage {
  seconds: number;
  peakRssMB: number | null;
  /** Seconds from the process's start to its first training step's log line (null: none). */
  firstStepSeconds: number | null;
  stdout: string;
  error?: string;
}

let running: ChildProcess | null = null;

/** Kills the stage running now, if any (on Ctrl-C). */
export const killStage = () => running?.kill('SIGKILL');

/** Runs `script` (relative to the repository) in a child process; its peak RSS comes from bench/peak-rss.ts, preloaded. */
export function runStage(work: string, name: string, script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Stage> {
  const rssFile = path.join(work, `rss-${name}`);
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', path.join(ROOT, 'bench/peak-rss.ts'), path.join(ROOT, script), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env, TEVATRON_PEAK_RSS_FILE: rssFile },
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
      const peakRssMB = existsSync(rssFile) ? Number(readFileSync(rssFile, 'utf8')) / 1024 : null;
      const error = code === 0 ? undefined : (stderr.trim().split('\n').pop() ?? '').slice(0, 300) || `exit ${code ?? signal}`;
      resolve({ seconds: (performance.now() - started) / 1000, peakRssMB, firstStepSeconds: firstStep, stdout, error });
    });
  });
}

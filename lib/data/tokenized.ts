// Training data, tokenized once: rows → token-id examples, in parallel worker threads when the data is
// large (Tevatron's dataset_proc_num), cached in one binary file keyed by the data files (path, size,
// mtime), the tokenizer (a hash of its files), q_max_len, p_max_len and the separator, so a second run
// reads the ids back instead of tokenizing again.
//
// Cache file: "TVTK" | u32 index length | index JSON | zero padding to a multiple of 4 | int32 ids
// (little-endian). The ids are one stream: per example, query length and ids, then the positive count
// and each positive's length and ids, then the same for the negatives.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { saveTokenizer, type Tokenizer } from '../tokenizer.ts';
import { readDataRows, toTrainExample, type ExampleOptions } from './load.ts';
import type { TrainExample } from './sample.ts';

const MAGIC = 'TVTK';
const FORMAT = 1;
/** Rows per message to a worker (and per progress report). */
const CHUNK = 256;

/** `$TEVATRON_TS_CACHE/tokenized`, else `$XDG_CACHE_HOME/tevatron-ts/tokenized`, else `~/.cache/tevatron-ts/tokenized`. */
export function defaultTokenizedCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TEVATRON_TS_CACHE) return path.resolve(env.TEVATRON_TS_CACHE, 'tokenized');
  return path.resolve(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'tevatron-ts', 'tokenized');
}

/** A hash of everything that decides how the tokenizer splits text: its saved files. */
export function tokenizerHash(tokenizer: Tokenizer): string {
  const h = createHash('sha256').update(tokenizer.kind);
  for (const [name, content] of Object.entries(tokenizer.toFiles()).sort(([a], [b]) => (a < b ? -1 : 1))) h.update(`\0${name}\0${content}`);
  return h.digest('hex');
}

export interface CacheKeyParts {
  files: { path: string; size: number; mtimeMs: number }[];
  tokenizer: string;
  qMaxLen: number;
  pMaxLen: number;
  separator: string;
}

export function cacheKeyParts(files: string[], o: Omit<ExampleOptions, 'tokenize'>, tokenizer: string): CacheKeyParts {
  return {
    files: files.map((f) => {
      const st = statSync(f); // follows the hub cache's symlinks: the blob's size and mtime
      return { path: path.resolve(f), size: st.size, mtimeMs: st.mtimeMs };
    }),
    tokenizer,
    qMaxLen: o.qMaxLen,
    pMaxLen: o.pMaxLen,
    separator: o.separator,
  };
}

export const cacheKey = (parts: CacheKeyParts): string => createHash('sha256').update(JSON.stringify({ format: FORMAT, ...parts })).digest('hex').slice(0, 32);

/** Examples → one int32 stream (see the header) and their query ids. */
export function packExamples(examples: TrainExample[]): { data: Int32Array; queryIds: (string | null)[] } {
  let n = 0;
  for (const e of examples) {
    n += 3 + e.query.length;
    for (const p of e.positives) n += 1 + p.length;
    for (const p of e.negatives) n += 1 + p.length;
  }
  const data = new Int32Array(n);
  let i = 0;
  const put = (ids: number[]) => {
    data[i++] = ids.length;
    data.set(ids, i);
    i += ids.length;
  };
  for (const e of examples) {
    put(e.query);
    data[i++] = e.positives.length;
    e.positives.forEach(put);
    data[i++] = e.negatives.length;
    e.negatives.forEach(put);
  }
  return { data, queryIds: examples.map((e) => e.queryId ?? null) };
}

export function unpackExamples(data: Int32Array, queryIds: (string | null)[]): TrainExample[] {
  let i = 0;
  const take = () => {
    const len = data[i++];
    const out = new Array<number>(len);
    for (let k = 0; k < len; k++) out[k] = data[i + k];
    i += len;
    return out;
  };
  const list = () => Array.from({ length: data[i++] }, take);
  const out: TrainExample[] = [];
  for (const id of queryIds) {
    const query = take();
    const positives = list();
    const negatives = list();
    out.push({ queryId: id ?? undefined, query, positives, negatives }); // the shape toTrainExample gives
  }
  if (i !== data.length) throw new Error(`the tokenized stream holds ${data.length} ids but ${queryIds.length} examples use ${i}`);
  return out;
}

interface CacheIndex {
  format: number;
  key: string;
  parts: CacheKeyParts;
  queryIds: (string | null)[];
  ids: number;
}

/** Writes the cache file under a temporary name, then renames it into place. */
export async function writeTokenizedCache(file: string, parts: CacheKeyParts, data: Int32Array, queryIds: (string | null)[]): Promise<void> {
  const index: CacheIndex = { format: FORMAT, key: cacheKey(parts), parts, queryIds, ids: data.length };
  const json = Buffer.from(JSON.stringify(index), 'utf8');
  const head = Buffer.alloc(8);
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32LE(json.length, 4);
  const pad = Buffer.alloc((4 - ((8 + json.length) % 4)) % 4);
  const ids = Buffer.alloc(data.length * 4);
  for (let k = 0; k < data.length; k++) ids.writeInt32LE(data[k], k * 4);
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, Buffer.concat([head, json, pad, ids]));
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** The examples in a cache file, or null when it is absent, unreadable or made for another key. */
export function readTokenizedCache(file: string, key: string): TrainExample[] | null {
  if (!existsSync(file)) return null;
  try {
    const buf = readFileSync(file);
    if (buf.toString('latin1', 0, 4) !== MAGIC) return null;
    const len = buf.readUInt32LE(4);
    const index = JSON.parse(buf.toString('utf8', 8, 8 + len)) as CacheIndex;
    if (index.format !== FORMAT || index.key !== key) return null;
    const start = 8 + len + ((4 - ((8 + len) % 4)) % 4);
    if (buf.length !== start + index.ids * 4) return null;
    let data: Int32Array;
    if (os.endianness() === 'LE' && (buf.byteOffset + start) % 4 === 0) data = new Int32Array(buf.buffer, buf.byteOffset + start, index.ids);
    else {
      data = new Int32Array(index.ids);
      for (let k = 0; k < index.ids; k++) data[k] = buf.readInt32LE(start + 4 * k);
    }
    return unpackExamples(data, index.queryIds);
  } catch {
    return null;
  }
}

export interface LoadTrainDataOptions {
  /** The tokenizer behind `o.tokenize` (which must be `tokenizer.encode(text).slice(0, max)`): hashed for the cache key, and rebuilt in the workers. */
  tokenizer: Tokenizer;
  /** Where cache files go; default defaultTokenizedCacheDir(); null: no cache. */
  cacheDir?: string | null;
  /** Worker threads at most (Tevatron's dataset_proc_num, default 12); capped at the CPU count. */
  procNum?: number;
  /** Tokenize in workers only above this many rows (default 5000): below it, starting workers costs more than it saves. */
  parallelMinRows?: number;
  /** Rows tokenized so far, of how many. */
  onProgress?(done: number, total: number): void;
}

export interface LoadedTrainData {
  examples: TrainExample[];
  /** Read back from this cache file (null: tokenized now). */
  fromCache: string | null;
  /** The cache file written (null: none). */
  cacheFile: string | null;
  /** Worker threads used (0: tokenized on this thread, or read from the cache). */
  workers: number;
  /** Things worth a log line, e.g. a cache that could not be written. */
  notes: string[];
}

type Row = { row: unknown; where: string };
type Reply = { chunk: number; data: Int32Array; queryIds: (string | null)[] } | { chunk: number; error: string };

/** Tokenizes `rows` in `n` worker threads, in chunks handed out as workers free up; the same ids, in order, as on one thread. */
async function tokenizeInWorkers(rows: Row[], o: ExampleOptions, tokenizer: Tokenizer, n: number, onProgress?: (done: number, total: number) => void): Promise<{ data: Int32Array; queryIds: (string | null)[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tevatron-tok-'));
  const workers: Worker[] = [];
  try {
    await saveTokenizer(tokenizer, dir);
    const chunks: Row[][] = [];
    for (let i = 0; i < rows.length; i += CHUNK) chunks.push(rows.slice(i, i + CHUNK));
    const results: { data: Int32Array; queryIds: (string | null)[] }[] = new Array(chunks.length);
    // Node 20's workers do not inherit tsx's module hooks (--import in execArgv is not applied to them), so a
    // small JS bootstrap registers tsx in the worker before importing the TypeScript worker module.
    const bootstrap = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(new URL('./tokenize-worker.ts', import.meta.url).href)}); })`;
    let next = 0;
    let done = 0;
    await new Promise<void>((resolve, reject) => {
      let finished = 0;
      const fail = (e: Error) => reject(e);
      for (let w = 0; w < n; w++) {
        const worker = new Worker(bootstrap, { eval: true, workerData: { tokenizerDir: dir, qMaxLen: o.qMaxLen, pMaxLen: o.pMaxLen, separator: o.separator } });
        workers.push(worker);
        const feed = () => {
          if (next < chunks.length) {
            const chunk = next++;
            worker.postMessage({ chunk, rows: chunks[chunk] });
          } else if (++finished === n) resolve();
        };
        worker.on('message', (m: Reply) => {
          if ('error' in m) return fail(new Error(m.error));
          results[m.chunk] = { data: m.data, queryIds: m.queryIds };
          done += chunks[m.chunk].length;
          onProgress?.(done, rows.length);
          feed();
        });
        worker.on('error', fail);
        worker.on('exit', (code) => code !== 0 && fail(new Error(`a tokenizer worker exited with code ${code}; run with --dataset_proc_num 1 to tokenize on one thread`)));
        worker.once('online', feed);
      }
    });
    const total = results.reduce((s, r) => s + r.data.length, 0);
    const data = new Int32Array(total);
    let at = 0;
    for (const r of results) {
      data.set(r.data, at);
      at += r.data.length;
    }
    return { data, queryIds: results.flatMap((r) => r.queryIds) };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The training examples of `files` (JSON / JSON Lines / parquet): from the cache when it holds them for
 * these files, this tokenizer and these lengths; else tokenized (in workers when large) and cached.
 */
export async function loadTrainData(files: string[], o: ExampleOptions, opts: LoadTrainDataOptions): Promise<LoadedTrainData> {
  const notes: string[] = [];
  const cacheDir = opts.cacheDir === undefined ? defaultTokenizedCacheDir() : opts.cacheDir;
  const parts = cacheKeyParts(files, o, tokenizerHash(opts.tokenizer));
  const key = cacheKey(parts);
  const cacheFile = cacheDir === null ? null : path.join(cacheDir, `${key}.tvtk`);
  if (cacheFile) {
    const cached = readTokenizedCache(cacheFile, key);
    if (cached) return { examples: cached, fromCache: cacheFile, cacheFile, workers: 0, notes };
  }

  const rows: Row[] = [];
  for (const f of files) rows.push(...(await readDataRows(f)));
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const procs = Math.min(opts.procNum ?? 12, cpus, Math.ceil(rows.length / CHUNK));
  const workers = rows.length > (opts.parallelMinRows ?? 5000) && procs > 1 ? procs : 0;
  let packed: { data: Int32Array; queryIds: (string | null)[] };
  let examples: TrainExample[] | null = null;
  if (workers > 0) {
    packed = await tokenizeInWorkers(rows, o, opts.tokenizer, workers, opts.onProgress);
  } else {
    examples = [];
    for (let i = 0; i < rows.length; i++) {
      examples.push(toTrainExample(rows[i].row, rows[i].where, o));
      if ((i + 1) % CHUNK === 0 || i + 1 === rows.length) opts.onProgress?.(i + 1, rows.length);
    }
    packed = packExamples(examples);
  }
  let written: string | null = null;
  if (cacheFile) {
    try {
      await writeTokenizedCache(cacheFile, parts, packed.data, packed.queryIds);
      written = cacheFile;
    } catch (e) {
      notes.push(`warning: could not write the tokenized cache ${cacheFile} (${(e as Error).message}); the next run tokenizes again (set TEVATRON_TS_CACHE or --cache_dir to a writable place)`);
    }
  }
  return { examples: examples ?? unpackExamples(packed.data, packed.queryIds), fromCache: null, cacheFile: written, workers, notes };
}

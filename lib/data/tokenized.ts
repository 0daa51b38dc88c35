// Training data, tokenized once into the on-disk store (lib/data/store.ts): the data files are streamed in
// blocks (whole lines, or parquet row groups) to worker threads (Tevatron's dataset_proc_num; each parses
// and tokenizes its block), and the blocks' ids are appended to the store in file order as they come back,
// so memory holds a few blocks whatever the data's size. The store is keyed by the data files (path, size,
// mtime), the tokenizer (a hash of its files), q_max_len, p_max_len and the separator: a second run opens
// it instead of tokenizing. One process builds a store at a time (a lock file beside it); the others wait
// for it, and a store is renamed into place only when complete.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, statSync, utimesSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { saveTokenizer, type Tokenizer } from '../tokenizer.ts';
import { toTrainExample, type ExampleOptions } from './load.ts';
import { arraySource, type TrainExample, type TrainSource } from './sample.ts';
import { ExamplePacker, idBytesFor, openStore, StoreWriter, STORE_FORMAT, unpackPart, type PackedPart, type TokenizedStore } from './store.ts';
import { blockLines, isJsonArray, isParquet, openParquet, parseLine, readLineBlocks, streamRows, type ParquetFile, type Row } from './stream.ts';

/** Bytes per block of JSON Lines handed to a worker (about 60 rows of Tevatron's NQ training data). */
const BLOCK_BYTES = 1 << 20;
/** Rows per block of a JSON array file. */
const ARRAY_ROWS = 256;
/** A lock file untouched this long belongs to a builder that died (checked for locks of other hosts; same-host locks are checked by pid). */
const LOCK_STALE_MS = 10 * 60_000;

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

export const cacheKey = (parts: CacheKeyParts): string => createHash('sha256').update(JSON.stringify({ format: STORE_FORMAT, ...parts })).digest('hex').slice(0, 32);

/**
 * A unit of tokenizing work: whole lines of a JSON Lines file (raw bytes, parsed by whoever tokenizes them),
 * rows of a JSON array file, or a row range of a parquet file. `size`: its share of the input bytes (progress).
 */
export type TokenizeTask =
  | { kind: 'lines'; file: string; bytes: Uint8Array; firstLine: number; size: number }
  | { kind: 'rows'; rows: Row[]; size: number }
  | { kind: 'parquet'; file: string; start: number; end: number; size: number };

export interface TaskContext {
  o: ExampleOptions;
  idBytes: 2 | 4;
  vocabSize: number;
  /** Open parquet files, kept between tasks. */
  parquet: Map<string, ParquetFile>;
}

/** One task → its examples, packed in the store's layout. The same function runs in the workers and on the main thread. */
export async function tokenizeTask(task: TokenizeTask, ctx: TaskContext): Promise<PackedPart> {
  const packer = new ExamplePacker(ctx.idBytes, ctx.vocabSize);
  const add = ({ row, where }: Row) => packer.add(toTrainExample(row, where, ctx.o), where);
  if (task.kind === 'lines') {
    const bytes = Buffer.from(task.bytes.buffer, task.bytes.byteOffset, task.bytes.byteLength);
    for (const l of blockLines({ bytes, firstLine: task.firstLine })) if (l.text.trim() !== '') add(parseLine(task.file, l));
  } else if (task.kind === 'rows') {
    task.rows.forEach(add);
  } else {
    let pq = ctx.parquet.get(task.file);
    if (!pq) ctx.parquet.set(task.file, (pq = await openParquet(task.file)));
    (await pq.read(task.start, task.end)).forEach(add);
  }
  return packer.take();
}

/** The tasks of the files, in file order. */
async function* tasksOf(files: string[]): AsyncGenerator<TokenizeTask> {
  for (const file of files) {
    const size = statSync(file).size;
    if (isParquet(file)) {
      const pq = await openParquet(file);
      await pq.close();
      const rows = pq.groups.at(-1)?.[1] ?? 0;
      for (const [start, end] of pq.groups) yield { kind: 'parquet', file, start, end, size: (size * (end - start)) / Math.max(1, rows) };
    } else if (await isJsonArray(file)) {
      let rows: Row[] = [];
      for await (const r of streamRows(file)) {
        rows.push(r);
        if (rows.length < ARRAY_ROWS) continue;
        yield { kind: 'rows', rows, size: 0 };
        rows = [];
      }
      yield { kind: 'rows', rows, size };
    } else {
      let read = 0;
      for await (const b of readLineBlocks(file, { chunkSize: BLOCK_BYTES })) {
        // a copy with a buffer of its own, handed over to a worker without another copy
        yield { kind: 'lines', file, bytes: new Uint8Array(b.bytes), firstLine: b.firstLine, size: b.read - read };
        read = b.read;
      }
    }
  }
}

type Reply = { id: number; part: PackedPart } | { id: number; error: string };

/** A tokenizer worker thread running one task at a time. */
class TokenizeWorker {
  private readonly worker: Worker;
  private pending: { id: number; resolve(p: PackedPart): void; reject(e: Error): void } | null = null;
  private nextId = 0;
  private dead: Error | null = null;

  constructor(tokenizerDir: string, o: ExampleOptions, idBytes: 2 | 4) {
    // Node 20's workers do not inherit tsx's module hooks (--import in execArgv is not applied to them), so a
    // small JS bootstrap registers tsx in the worker before importing the TypeScript worker module.
    const bootstrap = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(new URL('./tokenize-worker.ts', import.meta.url).href)}); })`;
    this.worker = new Worker(bootstrap, { eval: true, workerData: { tokenizerDir, qMaxLen: o.qMaxLen, pMaxLen: o.pMaxLen, separator: o.separator, idBytes } });
    this.worker.on('message', (m: Reply) => {
      const p = this.pending;
      if (!p || p.id !== m.id) return;
      this.pending = null;
      if ('error' in m) p.reject(new Error(m.error));
      else p.resolve(m.part);
    });
    const fail = (e: Error) => {
      this.dead ??= e;
      this.pending?.reject(e);
      this.pending = null;
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`a tokenizer worker exited with code ${code}; run with --dataset_proc_num 1 to tokenize on one thread`)));
  }

  run(task: TokenizeTask): Promise<PackedPart> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending = { id, resolve, reject };
      this.worker.postMessage({ id, task }, task.kind === 'lines' ? [task.bytes.buffer as ArrayBuffer] : []);
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

/**
 * Runs every task through `runners` (one task in flight per runner) and hands the parts to `sink` in task
 * order; at most `ahead` tasks are read before their turn to be written, which bounds the memory.
 */
async function runTasks(tasks: AsyncIterable<TokenizeTask>, runners: ((t: TokenizeTask) => Promise<PackedPart>)[], sink: (part: PackedPart, size: number) => void, ahead: number): Promise<void> {
  const it = tasks[Symbol.asyncIterator]();
  const done = new Map<number, { part: PackedPart; size: number }>();
  let taken = 0;
  let written = 0;
  let failed = false;
  let wake: (() => void)[] = [];
  const wakeAll = () => {
    const w = wake;
    wake = [];
    w.forEach((f) => f());
  };
  const loop = async (run: (t: TokenizeTask) => Promise<PackedPart>) => {
    for (;;) {
      while (taken - written >= ahead && !failed) await new Promise<void>((r) => wake.push(r));
      if (failed) return;
      const index = taken++; // before the await: tasks are numbered in the order they are asked for, which is file order
      const next = await it.next();
      if (next.done || failed) return;
      let part: PackedPart;
      try {
        part = await run(next.value);
      } catch (e) {
        failed = true;
        wakeAll();
        throw e;
      }
      done.set(index, { part, size: next.value.size });
      for (let d = done.get(written); d; d = done.get(written)) {
        done.delete(written++);
        sink(d.part, d.size);
      }
      wakeAll();
    }
  };
  const results = await Promise.allSettled(runners.map(loop));
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) {
    await it.return?.(undefined); // closes the file being read
    throw bad.reason;
  }
}

export interface LoadTrainDataOptions {
  /** The tokenizer behind `o.tokenize` (which must be `tokenizer.encode(text).slice(0, max)`): hashed for the cache key, and rebuilt in the workers. */
  tokenizer: Tokenizer;
  /** Where stores go; default defaultTokenizedCacheDir(); null: no store, the examples are kept in memory. */
  cacheDir?: string | null;
  /** Worker threads at most (Tevatron's dataset_proc_num, default 12); capped at the CPU count. */
  procNum?: number;
  /** Tokenize in workers only when the files hold more bytes than this (default 4 MiB): below it, starting workers costs more than it saves. */
  parallelMinBytes?: number;
  /** Input bytes tokenized so far, of how many. */
  onProgress?(doneBytes: number, totalBytes: number): void;
  /** Said once when another process is building the same store and this one waits for it. */
  onWait?(lockFile: string): void;
}

export interface LoadedTrainData {
  /** The examples: the opened store, or (cacheDir null, or no writable cache) an array in memory. */
  examples: TrainSource;
  /** The store, when the examples are one (close it when done). */
  store: TokenizedStore | null;
  /** The store was already there (built by an earlier run, or by another process while this one waited). */
  fromCache: string | null;
  /** Worker threads used (0: tokenized on this thread, or read from the store). */
  workers: number;
  /** Things worth a log line, e.g. a cache that could not be written. */
  notes: string[];
}

function lockIsStale(lockFile: string): boolean {
  try {
    const { pid, host } = JSON.parse(readFileSync(lockFile, 'utf8')) as { pid: number; host: string };
    if (host === os.hostname()) {
      try {
        process.kill(pid, 0);
        return false;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === 'ESRCH';
      }
    }
  } catch {
    // half-written or unreadable: judged by its age
  }
  try {
    return Date.now() - statSync(lockFile).mtimeMs > LOCK_STALE_MS;
  } catch {
    return false; // gone: the next attempt takes it
  }
}

/**
 * The store's lock (a file created exclusively), or the store when another process finished building it
 * while this one waited. A lock of a dead process (this host: by pid; another host: untouched for 10 min) is
 * taken over. Two processes that both judge a lock stale may both build: harmless, the rename keeps one.
 */
async function lockOrStore(dir: string, key: string, onWait?: (lockFile: string) => void): Promise<{ touch(): void; release(): Promise<void> } | TokenizedStore> {
  const lockFile = `${dir}.lock`;
  let said = false;
  for (;;) {
    try {
      const fd = openSync(lockFile, 'wx');
      writeSync(fd, JSON.stringify({ pid: process.pid, host: os.hostname() }));
      closeSync(fd);
      let touched = Date.now();
      return {
        touch: () => {
          if (Date.now() - touched < 10_000) return;
          touched = Date.now();
          utimesSync(lockFile, new Date(), new Date());
        },
        release: () => rm(lockFile, { force: true }),
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const store = openStore(dir, key);
    if (store) return store;
    if (lockIsStale(lockFile)) {
      await rm(lockFile, { force: true });
      continue;
    }
    if (!said) onWait?.(lockFile);
    said = true;
    await sleep(250);
  }
}

/** Tokenizes the files into `sink`, in workers when the data is large. Returns the number of workers used. */
async function tokenizeFiles(files: string[], o: ExampleOptions, opts: LoadTrainDataOptions, sink: (part: PackedPart) => void): Promise<number> {
  const totalBytes = files.reduce((s, f) => s + statSync(f).size, 0);
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const procs = Math.min(opts.procNum ?? 12, cpus);
  const nWorkers = totalBytes > (opts.parallelMinBytes ?? 4 << 20) && procs > 1 ? procs : 0;
  const idBytes = idBytesFor(opts.tokenizer.vocabSize);
  let doneBytes = 0;
  const onPart = (part: PackedPart, size: number) => {
    sink(part);
    doneBytes += size;
    opts.onProgress?.(Math.min(doneBytes, totalBytes), totalBytes);
  };
  if (nWorkers === 0) {
    const ctx: TaskContext = { o, idBytes, vocabSize: opts.tokenizer.vocabSize, parquet: new Map() };
    try {
      await runTasks(tasksOf(files), [(t) => tokenizeTask(t, ctx)], onPart, 1);
    } finally {
      await Promise.all([...ctx.parquet.values()].map((p) => p.close()));
    }
    return 0;
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tevatron-tok-'));
  const workers: TokenizeWorker[] = [];
  try {
    await saveTokenizer(opts.tokenizer, dir);
    for (let w = 0; w < nWorkers; w++) workers.push(new TokenizeWorker(dir, o, idBytes));
    await runTasks(tasksOf(files), workers.map((w) => (t: TokenizeTask) => w.run(t)), onPart, 3 * nWorkers);
    return nWorkers;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The training examples of `files` (JSON / JSON Lines / parquet): the store when one was made for these
 * files, this tokenizer and these lengths; else tokenized into a new store (in workers when large), which
 * training then reads example by example.
 */
export async function loadTrainData(files: string[], o: ExampleOptions, opts: LoadTrainDataOptions): Promise<LoadedTrainData> {
  const notes: string[] = [];
  const cacheDir = opts.cacheDir === undefined ? defaultTokenizedCacheDir() : opts.cacheDir;
  const parts = cacheKeyParts(files, o, tokenizerHash(opts.tokenizer));
  const key = cacheKey(parts);
  const inMemory = async (): Promise<LoadedTrainData> => {
    const examples: TrainExample[] = [];
    const workers = await tokenizeFiles(files, o, opts, (part) => examples.push(...unpackPart(part)));
    return { examples: arraySource(examples), store: null, fromCache: null, workers, notes };
  };
  if (cacheDir === null) return inMemory();

  const dir = path.join(cacheDir, key);
  const found = openStore(dir, key);
  if (found) return { examples: found, store: found, fromCache: dir, workers: 0, notes };
  let lock: Awaited<ReturnType<typeof lockOrStore>>;
  try {
    await mkdir(cacheDir, { recursive: true });
    lock = await lockOrStore(dir, key, opts.onWait);
  } catch (e) {
    notes.push(`warning: cannot write the tokenized store in ${cacheDir} (${(e as Error).message}); tokenizing into memory, and the next run tokenizes again (set TEVATRON_TS_CACHE or --cache_dir to a writable place)`);
    return inMemory();
  }
  if ('get' in lock) return { examples: lock, store: lock, fromCache: dir, workers: 0, notes };
  const held = lock;
  try {
    const ready = openStore(dir, key); // finished by another process between our look and our lock
    if (ready) return { examples: ready, store: ready, fromCache: dir, workers: 0, notes };
    const writer = await StoreWriter.create(dir, { key, parts, idBytes: idBytesFor(opts.tokenizer.vocabSize) });
    let workers: number;
    try {
      workers = await tokenizeFiles(files, o, opts, (part) => {
        writer.write(part);
        held.touch();
      });
    } catch (e) {
      await writer.abort();
      throw e;
    }
    await writer.commit();
    const store = openStore(dir, key);
    if (!store) throw new Error(`${dir}: the tokenized store just written does not read back; delete it and run again`);
    return { examples: store, store, fromCache: null, workers, notes };
  } finally {
    await held.release();
  }
}

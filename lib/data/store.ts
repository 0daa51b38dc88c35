// The tokenized store: training examples as token ids on disk, appended part by part while tokenizing
// (memory bounded by a part), and read one example at a time, so a training step reads only its batch.
//
// A store is a directory, named after its cache key, of five files (little-endian):
//   ids.bin          every token id, one flat array: uint16 when the vocabulary fits (<= 65,536 ids), else int32
//   lengths.bin      uint32 per sequence; an example's sequences are contiguous: query, positives, negatives
//   examples.bin     float64 x 4 per example: its first id, its first sequence, its positive and negative counts
//   query_ids.jsonl  one JSON value per example: its query_id string, or null
//   meta.json        format, key and what it was made from, the counts of examples, sequences and ids, the id width
// It is written in a temporary directory renamed into place once meta.json is in it; a store is complete
// when meta.json's counts match its files, and is otherwise treated as absent (and rebuilt).
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { writeAll } from '../files.ts';
import type { TrainExample, TrainSource } from './sample.ts';

export const STORE_FORMAT = 2;
const EXAMPLE_FIELDS = 4;
const FILES = { ids: 'ids.bin', lengths: 'lengths.bin', examples: 'examples.bin', queryIds: 'query_ids.jsonl', meta: 'meta.json' } as const;

export type IdArray = Uint16Array | Int32Array;

/** Tokenized examples in the store's layout: what a tokenizer worker hands back for one block of rows. */
export interface PackedPart {
  ids: IdArray;
  /** Per sequence. */
  lengths: Uint32Array;
  /** Per example: positive count, negative count. */
  counts: Uint32Array;
  queryIds: (string | null)[];
}

export interface StoreMeta {
  format: number;
  key: string;
  /** What the key was made from (data files, tokenizer hash, lengths, separator), for people reading the cache. */
  parts: unknown;
  examples: number;
  sequences: number;
  ids: number;
  idBytes: 2 | 4;
}

/** 2 (uint16) when every id of the vocabulary fits, else 4 (int32). */
export const idBytesFor = (vocabSize: number): 2 | 4 => (vocabSize <= 65536 ? 2 : 4);

function littleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('the tokenized store is little-endian and this machine is big-endian; train on a little-endian machine (x86-64, ARM64)');
}

/** Collects examples into a PackedPart, checking every id against the vocabulary. */
export class ExamplePacker {
  private ids: IdArray;
  private nIds = 0;
  private lengths: number[] = [];
  private counts: number[] = [];
  private queryIds: (string | null)[] = [];

  constructor(
    readonly idBytes: 2 | 4,
    readonly vocabSize: number,
  ) {
    this.ids = this.alloc(1 << 16);
  }

  private alloc(n: number): IdArray {
    return this.idBytes === 2 ? new Uint16Array(n) : new Int32Array(n);
  }

  get examples(): number {
    return this.queryIds.length;
  }

  add(e: TrainExample, where: string): void {
    const put = (seq: readonly number[]) => {
      if (this.nIds + seq.length > this.ids.length) {
        const grown = this.alloc(Math.max(2 * this.ids.length, this.nIds + seq.length));
        grown.set(this.ids.subarray(0, this.nIds));
        this.ids = grown;
      }
      for (let k = 0; k < seq.length; k++) {
        const id = seq[k];
        if (!(id >= 0 && id < this.vocabSize)) throw new Error(`${where}: token id ${id} is outside the tokenizer's vocabulary (${this.vocabSize} ids); pre-tokenized rows must use the model's vocabulary`);
        this.ids[this.nIds++] = id;
      }
      this.lengths.push(seq.length);
    };
    put(e.query);
    e.positives.forEach(put);
    e.negatives.forEach(put);
    this.counts.push(e.positives.length, e.negatives.length);
    this.queryIds.push(e.queryId ?? null);
  }

  /** The examples added so far; the packer starts empty again. */
  take(): PackedPart {
    const part: PackedPart = { ids: this.ids.slice(0, this.nIds), lengths: Uint32Array.from(this.lengths), counts: Uint32Array.from(this.counts), queryIds: this.queryIds };
    this.nIds = 0;
    this.lengths = [];
    this.counts = [];
    this.queryIds = [];
    return part;
  }
}

/** The examples of a part (what a store's get() gives for each). */
export function unpackPart(part: PackedPart): TrainExample[] {
  const out: TrainExample[] = [];
  let seq = 0;
  let at = 0;
  for (let e = 0; e < part.queryIds.length; e++) {
    const ex = splitExample(part.ids, at, part.lengths, seq, part.counts[2 * e], part.counts[2 * e + 1], part.queryIds[e]);
    seq += 1 + part.counts[2 * e] + part.counts[2 * e + 1];
    at += ex.used;
    out.push(ex.example);
  }
  return out;
}

function splitExample(ids: IdArray, at: number, lengths: Uint32Array, seq: number, nPos: number, nNeg: number, queryId: string | null): { example: TrainExample; used: number } {
  const start = at;
  const take = () => {
    const len = lengths[seq++];
    const out = new Array<number>(len);
    for (let k = 0; k < len; k++) out[k] = ids[at + k];
    at += len;
    return out;
  };
  const query = take();
  const positives = Array.from({ length: nPos }, take);
  const negatives = Array.from({ length: nNeg }, take);
  // the shape toTrainExample gives
  return { example: { queryId: queryId ?? undefined, query, positives, negatives }, used: at - start };
}

function readExactly(fd: number, into: Uint8Array, position: number, what: string): void {
  for (let off = 0; off < into.length; ) {
    const n = readSync(fd, into, off, into.length - off, position + off);
    if (n === 0) throw new Error(`${what} ends before byte ${position + into.length}: the tokenized store was cut short; delete it and run again to rebuild it`);
    off += n;
  }
}

/** Appends parts to a new store in a temporary directory; commit() renames it into place. */
export class StoreWriter {
  private fds: { ids: number; lengths: number; examples: number; queryIds: number };
  private nExamples = 0;
  private nSequences = 0;
  private nIds = 0;

  private constructor(
    readonly dir: string,
    readonly tmp: string,
    private readonly meta: Pick<StoreMeta, 'key' | 'parts' | 'idBytes'>,
  ) {
    const open = (name: string) => openSync(path.join(tmp, name), 'w');
    this.fds = { ids: open(FILES.ids), lengths: open(FILES.lengths), examples: open(FILES.examples), queryIds: open(FILES.queryIds) };
  }

  static async create(dir: string, meta: Pick<StoreMeta, 'key' | 'parts' | 'idBytes'>): Promise<StoreWriter> {
    littleEndian();
    const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
    await mkdir(tmp, { recursive: true });
    try {
      return new StoreWriter(dir, tmp, meta);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  write(part: PackedPart): void {
    const n = part.queryIds.length;
    if ((part.ids.BYTES_PER_ELEMENT as number) !== this.meta.idBytes) throw new Error(`a part of ${part.ids.BYTES_PER_ELEMENT}-byte ids for a store of ${this.meta.idBytes}-byte ids`);
    const index = new Float64Array(n * EXAMPLE_FIELDS);
    let seq = 0;
    for (let e = 0; e < n; e++) {
      const nPos = part.counts[2 * e];
      const nNeg = part.counts[2 * e + 1];
      index.set([this.nIds, this.nSequences, nPos, nNeg], e * EXAMPLE_FIELDS);
      for (let k = 0; k < 1 + nPos + nNeg; k++) this.nIds += part.lengths[seq + k];
      seq += 1 + nPos + nNeg;
      this.nSequences += 1 + nPos + nNeg;
    }
    if (seq !== part.lengths.length) throw new Error(`a part's counts name ${seq} sequences but it holds ${part.lengths.length}`);
    const file = (name: keyof typeof this.fds) => path.join(this.tmp, FILES[name]);
    writeAll(this.fds.ids, part.ids, null, file('ids'));
    writeAll(this.fds.lengths, part.lengths, null, file('lengths'));
    writeAll(this.fds.examples, index, null, file('examples'));
    writeAll(this.fds.queryIds, Buffer.from(part.queryIds.map((q) => JSON.stringify(q) + '\n').join(''), 'utf8'), null, file('queryIds'));
    this.nExamples += n;
  }

  private closeFiles(): void {
    for (const fd of Object.values(this.fds)) closeSync(fd);
    this.fds = { ids: -1, lengths: -1, examples: -1, queryIds: -1 };
  }

  /** Writes meta.json and renames the directory into place; when another process got there first with a valid store, keeps that one. */
  async commit(): Promise<void> {
    const meta: StoreMeta = { format: STORE_FORMAT, ...this.meta, examples: this.nExamples, sequences: this.nSequences, ids: this.nIds };
    try {
      this.closeFiles();
      await writeFile(path.join(this.tmp, FILES.meta), JSON.stringify(meta, null, 1) + '\n');
      try {
        await rename(this.tmp, this.dir);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EPERM') throw e;
        const theirs = openStore(this.dir, meta.key);
        if (theirs) {
          theirs.close(); // another process finished the same store first: keep it
          await rm(this.tmp, { recursive: true, force: true });
          return;
        }
        await rm(this.dir, { recursive: true, force: true }); // stale or cut short
        await rename(this.tmp, this.dir);
      }
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.fds.ids >= 0) this.closeFiles();
    await rm(this.tmp, { recursive: true, force: true });
  }
}

/** An opened store: examples read from disk by index (TrainSource). */
export class TokenizedStore implements TrainSource {
  readonly length: number;
  private readonly fds: { ids: number; lengths: number };

  constructor(
    readonly dir: string,
    readonly meta: StoreMeta,
    private readonly index: Float64Array,
    private readonly queryIds: (string | null)[],
  ) {
    this.length = meta.examples;
    this.fds = { ids: openSync(path.join(dir, FILES.ids), 'r'), lengths: openSync(path.join(dir, FILES.lengths), 'r') };
  }

  private entry(i: number): [number, number, number, number] {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`example ${i} is outside the tokenized store's ${this.length} examples`);
    const b = i * EXAMPLE_FIELDS;
    return [this.index[b], this.index[b + 1], this.index[b + 2], this.index[b + 3]];
  }

  counts(i: number): { queryId?: string; positives: number; negatives: number } {
    const [, , positives, negatives] = this.entry(i);
    return { queryId: this.queryIds[i] ?? undefined, positives, negatives };
  }

  /** Example i: two reads (its sequence lengths, then its ids), whatever the store's size. */
  get(i: number): TrainExample {
    const [idStart, seqStart, nPos, nNeg] = this.entry(i);
    const nSeq = 1 + nPos + nNeg;
    const lengths = new Uint32Array(nSeq);
    readExactly(this.fds.lengths, new Uint8Array(lengths.buffer), seqStart * 4, path.join(this.dir, FILES.lengths));
    let total = 0;
    for (let k = 0; k < nSeq; k++) total += lengths[k];
    const w = this.meta.idBytes;
    const raw = new Uint8Array(total * w);
    readExactly(this.fds.ids, raw, idStart * w, path.join(this.dir, FILES.ids));
    const ids = w === 2 ? new Uint16Array(raw.buffer) : new Int32Array(raw.buffer);
    return splitExample(ids, 0, lengths, 0, nPos, nNeg, this.queryIds[i]).example;
  }

  close(): void {
    closeSync(this.fds.ids);
    closeSync(this.fds.lengths);
  }
}

/** The store in `dir` when it is complete and made for `key`; null when absent, stale or cut short. */
export function openStore(dir: string, key: string): TokenizedStore | null {
  if (!existsSync(path.join(dir, FILES.meta))) return null;
  littleEndian();
  try {
    const meta = JSON.parse(readFileSync(path.join(dir, FILES.meta), 'utf8')) as StoreMeta;
    if (meta.format !== STORE_FORMAT || meta.key !== key || (meta.idBytes !== 2 && meta.idBytes !== 4)) return null;
    const size = (name: string) => {
      const fd = openSync(path.join(dir, name), 'r');
      try {
        return fstatSync(fd).size;
      } finally {
        closeSync(fd);
      }
    };
    if (size(FILES.ids) !== meta.ids * meta.idBytes || size(FILES.lengths) !== meta.sequences * 4 || size(FILES.examples) !== meta.examples * EXAMPLE_FIELDS * 8) return null;
    const buf = readFileSync(path.join(dir, FILES.examples));
    const index = new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    const queryIds = readFileSync(path.join(dir, FILES.queryIds), 'utf8').split('\n');
    if (queryIds.pop() !== '' || queryIds.length !== meta.examples) return null;
    const store = new TokenizedStore(dir, meta, index, queryIds.map((q) => JSON.parse(q) as string | null));
    if (meta.examples > 0) {
      // the last example must end exactly where the files end
      const last = meta.examples - 1;
      const [idStart, seqStart, nPos, nNeg] = [index[last * 4], index[last * 4 + 1], index[last * 4 + 2], index[last * 4 + 3]];
      const ex = store.get(last);
      const used = ex.query.length + [...ex.positives, ...ex.negatives].reduce((s, p) => s + p.length, 0);
      if (seqStart + 1 + nPos + nNeg !== meta.sequences || idStart + used !== meta.ids) {
        store.close();
        return null;
      }
    }
    return store;
  } catch {
    return null;
  }
}

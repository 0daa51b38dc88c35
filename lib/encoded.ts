// The encode output: `embeddings` [N, d] in a safetensors file at PATH and the N ids, one per line, in
// PATH.ids. A corpus shard can outgrow memory, so both directions stream: openEncoded checks a shard
// (header, data length, ids count) without reading its rows, encodedBlocks then reads it a block of rows
// at a time at offsets; createEncodedWriter appends rows per batch behind a header reserved up front and
// filled in at close, under a temporary name renamed at the end. readEncoded / writeEncoded load and save
// a whole (small) one, such as the queries.
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { writeAll } from './files.ts';
import { decodeFloats, floatWidth, headerBytes, headerLength, parseSafetensorsHeader } from './model/safetensors.ts';

export interface Encoded {
  ids: string[];
  data: Float32Array;
  dim: number;
}

/** A shard whose header and ids were checked: where its rows are, for encodedBlocks. */
export interface EncodedFile {
  path: string;
  rows: number;
  dim: number;
  dtype: string;
  /** Byte offset of row 0. */
  dataStart: number;
}

const CHUNK = 1 << 20;

const cannotRead = (path: string, e: unknown) =>
  new Error(`${path}: cannot read the encoded representations (${(e as Error).message}); write them with scripts/encode.ts --encoded_save_path`);

const endsEarly = (path: string, missing: number) => new Error(`${path}: ends ${missing} bytes early (was it changed while being read?); encode it again`);

function readFully(fd: number, into: Uint8Array, position: number, path: string): void {
  for (let at = 0; at < into.byteLength; ) {
    const n = readSync(fd, into, at, into.byteLength - at, position + at);
    if (n === 0) throw endsEarly(path, into.byteLength - at);
    at += n;
  }
}

/** Lines of a file as String.split('\n') counts them, less a last empty one (a final newline ends the last line). */
function countLines(path: string): number {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    let lines = 0;
    let last = -1;
    for (let n; (n = readSync(fd, buf, 0, CHUNK, null)) > 0; last = buf[n - 1]) {
      for (let i = buf.indexOf(10); i !== -1 && i < n; i = buf.indexOf(10, i + 1)) lines++;
    }
    return lines + (last !== -1 && last !== 10 ? 1 : 0);
  } finally {
    closeSync(fd);
  }
}

/** Checks a shard: a safetensors header with a 2-D float `embeddings` whose bytes are all there, and as many ids as rows. */
export function openEncoded(path: string): EncodedFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw cannotRead(path, e);
  }
  try {
    const size = fstatSync(fd).size;
    const first = Buffer.alloc(8);
    readSync(fd, first, 0, 8, 0);
    const n = headerLength(first, size, path);
    const head = Buffer.alloc(n);
    readFully(fd, head, 8, path);
    const t = parseSafetensorsHeader(head, size - 8 - n, path).entries.embeddings;
    if (!t || t.shape.length !== 2 || !floatWidth(t.dtype)) throw new Error(`${path}: holds no 2-D float tensor named "embeddings"; write it with scripts/encode.ts`);
    let ids: number;
    try {
      ids = countLines(`${path}.ids`);
    } catch (e) {
      throw cannotRead(`${path}.ids`, e);
    }
    if (ids !== t.shape[0]) throw new Error(`${path}.ids lists ${ids} ids for ${t.shape[0]} rows; the two files must come from the same encode run`);
    return { path, rows: t.shape[0], dim: t.shape[1], dtype: t.dtype, dataStart: 8 + n + t.data_offsets[0] };
  } finally {
    closeSync(fd);
  }
}

/** Reads a file's lines in order, `count` at a time, through one chunk buffer. */
function lineReader(path: string) {
  const fd = openSync(path, 'r');
  const decoder = new StringDecoder('utf8'); // a character split across two chunks
  const buf = Buffer.allocUnsafe(CHUNK);
  let lines: string[] = [];
  let next = 0;
  let partial = '';
  let eof = false;
  return {
    take(count: number): string[] {
      const out: string[] = [];
      while (out.length < count) {
        if (next < lines.length) out.push(lines[next++]);
        else if (eof) {
          if (partial === '') throw new Error(`${path}: has fewer ids than rows (was it changed while being read?); encode it again`);
          out.push(partial);
          partial = '';
        } else {
          const n = readSync(fd, buf, 0, CHUNK, null);
          eof = n === 0;
          lines = (partial + (eof ? decoder.end() : decoder.write(buf.subarray(0, n)))).split('\n');
          partial = lines.pop()!;
          next = 0;
        }
      }
      return out;
    },
    close: () => closeSync(fd),
  };
}

/** Rows [start, start + ids.length) of a shard, row-major float32, and their ids. */
export type Block = { start: number; data: Float32Array; ids: string[] };

/** A block's rows as float32: F32 in place (little-endian hosts), F16 / BF16 decoded. */
const rowsOf = (f: EncodedFile, bytes: Buffer, count: number): Float32Array =>
  f.dtype === 'F32' ? new Float32Array(bytes.buffer, bytes.byteOffset, count * f.dim) : decodeFloats(f.dtype, bytes, count * f.dim);

/**
 * A shard's rows, `blockRows` at a time, with their ids. One buffer is reused: a block's float32 data is
 * valid until the next block is read.
 */
export function* encodedBlocks(f: EncodedFile, blockRows: number): Generator<Block> {
  const width = floatWidth(f.dtype)!;
  const fd = openSync(f.path, 'r');
  const ids = lineReader(`${f.path}.ids`);
  try {
    const buf = Buffer.allocUnsafeSlow(Math.min(blockRows, f.rows) * f.dim * width);
    for (let start = 0; start < f.rows; start += blockRows) {
      const count = Math.min(blockRows, f.rows - start);
      const bytes = buf.subarray(0, count * f.dim * width);
      readFully(fd, bytes, f.dataStart + start * f.dim * width, f.path);
      yield { start, data: rowsOf(f, bytes, count), ids: ids.take(count) };
    }
  } finally {
    ids.close();
    closeSync(fd);
  }
}

/**
 * encodedBlocks with the next block read while the caller works on this one: the read runs on libuv's
 * threads, so the disk and a synchronous computation (scoring) overlap. Two buffers: a block's data is
 * valid until the next block is yielded.
 */
export async function* encodedBlocksAhead(f: EncodedFile, blockRows: number): AsyncGenerator<Block> {
  const width = floatWidth(f.dtype)!;
  const file = await open(f.path, 'r');
  const ids = lineReader(`${f.path}.ids`);
  const size = Math.min(blockRows, f.rows) * f.dim * width;
  const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)];
  const read = (start: number, buf: Buffer): Promise<Buffer> => {
    const bytes = buf.subarray(0, Math.min(blockRows, f.rows - start) * f.dim * width);
    const p = (async () => {
      for (let at = 0; at < bytes.length; ) {
        const { bytesRead } = await file.read(bytes, at, bytes.length - at, f.dataStart + start * f.dim * width + at);
        if (bytesRead === 0) throw endsEarly(f.path, bytes.length - at);
        at += bytesRead;
      }
      return bytes;
    })();
    p.catch(() => {}); // awaited below; a failure while the caller computes is not an unhandled rejection
    return p;
  };
  let pending = f.rows > 0 ? read(0, buffers[0]) : null;
  try {
    for (let start = 0, i = 0; start < f.rows; start += blockRows, i++) {
      const bytes = await pending!;
      pending = start + blockRows < f.rows ? read(start + blockRows, buffers[(i + 1) % 2]) : null;
      const count = Math.min(blockRows, f.rows - start);
      yield { start, data: rowsOf(f, bytes, count), ids: ids.take(count) };
    }
  } finally {
    await pending?.catch(() => {});
    ids.close();
    await file.close();
  }
}

/** A whole encode output in memory (the queries, a small shard). */
export function readEncoded(path: string): Encoded {
  const f = openEncoded(path);
  for (const { data, ids } of encodedBlocks(f, f.rows)) return { ids, data, dim: f.dim };
  return { ids: [], data: new Float32Array(0), dim: f.dim };
}

const embeddingsHeader = (rows: number, dim: number) => ({ __metadata__: { format: 'pt' }, embeddings: { dtype: 'F32', shape: [rows, dim], data_offsets: [0, 4 * rows * dim] } });
/** Room for the header of any row count and dimension, so rows can be written before the count is known. */
const RESERVED = headerBytes(embeddingsHeader(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)).length;

export interface EncodedWriter {
  /** Appends rows (row-major, `dim` wide) and their ids. */
  append(ids: string[], data: Float32Array, dim: number): void;
  /** Writes the header and renames the files into place; returns the shape written. */
  close(): { rows: number; dim: number };
  /** Deletes what was written. */
  abort(): void;
}

/** Writes PATH and PATH.ids a batch at a time, under temporary names until close(): nothing half-written is left. */
export function createEncodedWriter(path: string): EncodedWriter {
  const tmp = `${path}.tmp-${process.pid}`;
  const fds: number[] = [];
  const abort = () => {
    fds.splice(0).forEach((fd) => closeSync(fd));
    rmSync(tmp, { force: true });
    rmSync(`${tmp}.ids`, { force: true });
  };
  try {
    fds.push(openSync(tmp, 'w'), openSync(`${tmp}.ids`, 'w'));
  } catch (e) {
    abort();
    throw new Error(`${path}: cannot write (${(e as Error).message}); check that its directory exists and is writable`);
  }
  const [fd, idsFd] = fds;
  let rows = 0;
  let dim = -1;
  return {
    append(ids, data, d) {
      if (data.length !== ids.length * d || (rows > 0 && ids.length > 0 && d !== dim)) throw new Error(`${path}: ${ids.length} ids and ${data.length} values of dimension ${d} do not extend [${rows}, ${dim}]`);
      if (rows === 0) dim = d;
      writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 8 + RESERVED + 4 * rows * dim, path);
      writeAll(idsFd, Buffer.from(ids.map((id) => `${id}\n`).join('')), null, `${path}.ids`);
      rows += ids.length;
    },
    close() {
      dim = Math.max(dim, 0);
      const head = Buffer.alloc(8 + RESERVED);
      head.writeBigUInt64LE(BigInt(RESERVED));
      head.set(headerBytes(embeddingsHeader(rows, dim), RESERVED), 8);
      writeAll(fd, head, 0, path);
      fds.splice(0).forEach((f) => closeSync(f));
      renameSync(`${tmp}.ids`, `${path}.ids`);
      renameSync(tmp, path);
      return { rows, dim };
    },
    abort,
  };
}

/** Writes a whole encode output (see createEncodedWriter). */
export function writeEncoded(path: string, e: Encoded): void {
  const w = createEncodedWriter(path);
  try {
    w.append(e.ids, e.data, e.dim);
    w.close();
  } catch (err) {
    w.abort();
    throw err;
  }
}

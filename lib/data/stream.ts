// Data files as streams, so no file size is too large: JSON Lines (plain or gzip) line by line from chunked
// reads, split on the byte 0x0A before decoding (a UTF-8 character split between two reads stays whole),
// and parquet row group by row group. A JSON array file must be parsed whole, so it is refused above a size
// (V8 caps a string at 512 MB) with the one-line fix: convert it to JSON Lines.
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { parquetMetadataAsync, parquetReadObjects, type AsyncBuffer } from 'hyparquet';
import { errorText } from '../errors.ts';

export interface StreamOptions {
  /** Bytes per read (and per gunzip output chunk); default 1 MiB. Tests use a few bytes to hit every boundary. */
  chunkSize?: number;
  /** A JSON array file larger than this (bytes, after gunzip) is refused; default 256 MiB. */
  maxArrayBytes?: number;
}

/** Complete lines of a file: `bytes` holds `lines` lines starting at line `firstLine` (1-based); the last may lack its newline. */
export interface LineBlock {
  file: string;
  bytes: Buffer;
  firstLine: number;
  lines: number;
  /** Bytes of the file (compressed, for .gz) read when the block was complete: for progress. */
  read: number;
}

export interface Line {
  text: string;
  /** 1-based; every line of the file counts, empty ones included. */
  line: number;
}

/** A line of a block and where its text's bytes lie in the block, [start, end) (newline, CR and byte order mark excluded). */
export interface LineRange extends Line {
  start: number;
  end: number;
}

export interface Row {
  row: unknown;
  /** `file:line` (JSON Lines), `file: item N` (JSON array), `file: row N` (parquet); N 1-based. */
  where: string;
}

const MiB = 1 << 20;
const NEWLINE = 0x0a;

export const isParquet = (file: string): boolean => file.endsWith('.parquet');
const isGzip = (file: string): boolean => file.endsWith('.gz');

/** The file's bytes (gunzipped for .gz) in chunks of about `chunkSize`, each with how far into the file (compressed bytes) it has read. */
async function* chunks(file: string, chunkSize: number): AsyncGenerator<{ chunk: Buffer; read: number }> {
  const raw = createReadStream(file, { highWaterMark: chunkSize });
  // pipeline destroys both streams when either fails or the reader stops early; errors reach the reader
  const stream: Readable = isGzip(file) ? pipeline(raw, createGunzip({ chunkSize: Math.max(64, chunkSize) }), () => {}) : raw;
  try {
    for await (const chunk of stream) yield { chunk: chunk as Buffer, read: raw.bytesRead };
  } catch (e) {
    throw new Error(`${file}: cannot read (${errorText(e)})`);
  }
}

function countNewlines(bytes: Buffer): number {
  let n = 0;
  for (let i = bytes.indexOf(NEWLINE); i >= 0; i = bytes.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

/**
 * The file in blocks of whole lines (about one read each; a line longer than a read spans several): what
 * workers are handed, with the line number of their first line.
 */
export async function* readLineBlocks(file: string, o: StreamOptions = {}): AsyncGenerator<LineBlock> {
  let pending: Buffer[] = []; // the start of a line whose newline has not been read yet
  let line = 1;
  let read = 0;
  for await (const c of chunks(file, o.chunkSize ?? MiB)) {
    const chunk = c.chunk;
    read = c.read;
    const last = chunk.lastIndexOf(NEWLINE);
    if (last < 0) {
      pending.push(chunk);
      continue;
    }
    const head = chunk.subarray(0, last + 1);
    const bytes = pending.length > 0 ? Buffer.concat([...pending, head]) : head;
    pending = last + 1 < chunk.length ? [Buffer.from(chunk.subarray(last + 1))] : [];
    const lines = countNewlines(head);
    yield { file, bytes, firstLine: line, lines, read };
    line += lines;
  }
  if (pending.length > 0) yield { file, bytes: Buffer.concat(pending), firstLine: line, lines: 1, read };
}

/** The lines of a block, decoded (a trailing CR dropped, a UTF-8 byte order mark at the file's start dropped). */
export function* blockLines(block: Pick<LineBlock, 'bytes' | 'firstLine'>): Generator<Line> {
  for (const { text, line } of blockLineRanges(block)) yield { text, line };
}

/** blockLines with each line's byte range in the block: where to read it again in the file. */
export function* blockLineRanges(block: Pick<LineBlock, 'bytes' | 'firstLine'>): Generator<LineRange> {
  const { bytes } = block;
  let line = block.firstLine;
  for (let start = 0; start < bytes.length; line++) {
    const nl = bytes.indexOf(NEWLINE, start);
    const end = nl < 0 ? bytes.length : nl;
    const stop = end > start && bytes[end - 1] === 0x0d ? end - 1 : end;
    const bom = line === 1 && bytes[start] === 0xef && bytes[start + 1] === 0xbb && bytes[start + 2] === 0xbf ? 3 : 0;
    yield { text: bytes.toString('utf8', start + bom, stop), line, start: start + bom, end: stop };
    start = end + 1;
  }
}

/** Every line of a file (plain or .gz), read in chunks: no size limit. */
export async function* readLines(file: string, o: StreamOptions = {}): AsyncGenerator<Line> {
  for await (const block of readLineBlocks(file, o)) yield* blockLines(block);
}

/** One JSON Lines line → its row, or the error naming file:line. */
export function parseLine(file: string, l: Line): Row {
  try {
    return { row: JSON.parse(l.text), where: `${file}:${l.line}` };
  } catch (e) {
    throw new Error(`${file}:${l.line}: not valid JSON (${errorText(e)})`);
  }
}

/** Whether the file's content (gunzipped) starts with `[`: a JSON array rather than JSON Lines. */
export async function isJsonArray(file: string, o: StreamOptions = {}): Promise<boolean> {
  for await (const { chunk } of chunks(file, Math.min(o.chunkSize ?? 64 * 1024, 64 * 1024))) {
    const text = chunk.toString('latin1').replace(/^\uFEFF|^\xEF\xBB\xBF/, '').trimStart();
    if (text.length > 0) return text.startsWith('[');
  }
  return false;
}

/** A JSON array file's elements; refused above maxArrayBytes, before it is held whole. */
async function* arrayRows(file: string, o: StreamOptions): AsyncGenerator<Row> {
  const limit = o.maxArrayBytes ?? 256 * MiB;
  const parts: Buffer[] = [];
  let size = 0;
  for await (const { chunk } of chunks(file, o.chunkSize ?? MiB)) {
    size += chunk.length;
    if (size > limit) {
      throw new Error(`${file}: a JSON array over ${Math.round(limit / MiB)} MB cannot be read whole; convert it to JSON Lines (one row per line), e.g. jq -c '.[]' ${file} > ${file.replace(/\.json(\.gz)?$/, '')}.jsonl`);
    }
    parts.push(chunk);
  }
  let rows: unknown;
  try {
    rows = JSON.parse(Buffer.concat(parts).toString('utf8').replace(/^\uFEFF/, ''));
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${errorText(e)}); use a JSON array or one JSON object per line`);
  }
  if (!Array.isArray(rows)) throw new Error(`${file}: not a JSON array; use a JSON array or one JSON object per line`);
  for (let i = 0; i < rows.length; i++) yield { row: rows[i], where: `${file}: item ${i + 1}` };
}

/** Parquet INT64 columns come back as BigInt; token ids and ids are plain numbers here. */
function plainNumbers(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = plainNumbers(v[i]);
    return v;
  }
  if (v !== null && typeof v === 'object' && !(v instanceof Date) && !ArrayBuffer.isView(v)) {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = plainNumbers(o[k]);
  }
  return v;
}

function parquetError(file: string, e: unknown): Error {
  const msg = errorText(e);
  const fix = /compression codec/.test(msg)
    ? 'rewrite it with snappy compression (pyarrow.parquet.write_table(table, path, compression="snappy")) or convert it to .jsonl'
    : 'check that it is a complete parquet file (re-download it), or convert it to .jsonl';
  return new Error(`${file}: cannot read as parquet (${msg}); ${fix}`);
}

/** hyparquet's view of an open file: reads at offsets, never the whole file. */
async function fileBuffer(handle: FileHandle): Promise<AsyncBuffer> {
  const { size } = await handle.stat();
  return {
    byteLength: size,
    async slice(start: number, end = size) {
      const buf = Buffer.alloc(end - start);
      const { bytesRead } = await handle.read(buf, 0, buf.length, start);
      if (bytesRead !== buf.length) throw new Error(`the file ends at byte ${start + bytesRead}, before ${end}`);
      return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer;
    },
  };
}

export interface ParquetFile {
  /** Row groups as [rowStart, rowEnd) ranges. */
  groups: [number, number][];
  /** Rows [rowStart, rowEnd) (nested lists and structs as arrays and objects), numbered `file: row N`. */
  read(rowStart: number, rowEnd: number): Promise<Row[]>;
  close(): Promise<void>;
}

/** A parquet file opened for reading by row ranges: only its footer is read now. */
export async function openParquet(file: string): Promise<ParquetFile> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (e) {
    throw new Error(`${file}: cannot read (${errorText(e)})`);
  }
  try {
    const buffer = await fileBuffer(handle);
    const metadata = await parquetMetadataAsync(buffer);
    let start = 0;
    const groups = metadata.row_groups.map((g): [number, number] => [start, (start += Number(g.num_rows))]);
    return {
      groups,
      async read(rowStart, rowEnd) {
        try {
          const rows = await parquetReadObjects({ file: buffer, metadata, rowStart, rowEnd });
          return rows.map((row, i) => ({ row: plainNumbers(row), where: `${file}: row ${rowStart + i + 1}` }));
        } catch (e) {
          throw parquetError(file, e);
        }
      },
      close: () => handle.close(),
    };
  } catch (e) {
    await handle.close();
    throw parquetError(file, e);
  }
}

/** Rows of a parquet file, one row group in memory at a time. */
async function* parquetRows(file: string): AsyncGenerator<Row> {
  const pq = await openParquet(file);
  try {
    for (const [start, end] of pq.groups) for (const r of await pq.read(start, end)) yield r;
  } finally {
    await pq.close();
  }
}

/** The rows of one data file: JSON Lines or a JSON array (.json/.jsonl, gzipped or not), or parquet. */
export async function* streamRows(file: string, o: StreamOptions = {}): AsyncGenerator<Row> {
  if (isParquet(file)) yield* parquetRows(file);
  else if (await isJsonArray(file, o)) yield* arrayRows(file, o);
  else for await (const l of readLines(file, o)) if (l.text.trim() !== '') yield parseLine(file, l);
}

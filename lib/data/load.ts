// Training and encoding rows: .json (a JSON array or JSON Lines) and .jsonl files, gzipped or not, and
// .parquet files, one file or a directory of them (streamed by lib/data/stream.ts; readRows reads a small
// file at once). Rows are Tevatron's raw format {query_id, query, positive_passages, negative_passages} or
// the pre-tokenized {query, positives, negatives}; a bad row is an error naming file:line and the field.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { errorText } from '../errors.ts';
import type { TrainExample } from './sample.ts';
import { isParquet, parseLine, streamRows } from './stream.ts';

const DATA_FILE = /\.(json|jsonl)(\.gz)?$|\.parquet$/;

/** The data files of --train_dir: the file itself, or the directory's *.json/*.jsonl(.gz)/*.parquet, sorted (no recursion). */
export function listDataFiles(p: string, flag = 'train_dir'): string[] {
  let st;
  try {
    st = statSync(p);
  } catch {
    throw new Error(`--${flag} ${p}: no such file or directory`);
  }
  if (!st.isDirectory()) return [p];
  const files = readdirSync(p).filter((f) => DATA_FILE.test(f)).sort().map((f) => path.join(p, f));
  if (files.length === 0) throw new Error(`--${flag} ${p}: the directory holds no .json/.jsonl(.gz)/.parquet files`);
  return files;
}

/** Above this, readRows refuses a file (V8 caps a string at 512 MB): larger files are streamed. */
export const READ_ROWS_LIMIT = 256 * 1024 * 1024;

function tooLarge(file: string, limit: number): Error {
  return new Error(`${file}: over ${Math.round(limit / 2 ** 20)} MB, too large to read at once; stream it (streamRows in lib/data/stream.ts), or split it into smaller files`);
}

/**
 * Rows of one small file, read at once, with their line numbers (1-based; for a JSON array, the element
 * index + 1). Files over READ_ROWS_LIMIT are refused: streamRows reads any size.
 */
export function readRows(file: string, limit = READ_ROWS_LIMIT): { row: unknown; where: string }[] {
  if (isParquet(file)) throw new Error(`${file}: a parquet file; read it with readDataRows (async)`);
  const cannotRead = (e: unknown) => new Error(`${file}: cannot read (${(e as Error).message})`);
  let size: number;
  try {
    size = statSync(file).size;
  } catch (e) {
    throw cannotRead(e);
  }
  if (size > limit) throw tooLarge(file, limit);
  let text: string;
  try {
    const bytes = readFileSync(file);
    text = (file.endsWith('.gz') ? gunzipSync(bytes, { maxOutputLength: limit }) : bytes).toString('utf8');
  } catch (e) {
    throw (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? tooLarge(file, limit) : cannotRead(e);
  }
  if (text.trimStart().startsWith('[')) {
    let rows: unknown[];
    try {
      rows = JSON.parse(text);
    } catch (e) {
      throw new Error(`${file}: not valid JSON (${errorText(e)}); use a JSON array or one JSON object per line`);
    }
    return rows.map((row, i) => ({ row, where: `${file}: item ${i + 1}` }));
  }
  const out: { row: unknown; where: string }[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    out.push(parseLine(file, { text: line, line: i + 1 }));
  });
  return out;
}

/** Rows of any (small) data file, streamed and collected: parquet, or JSON / JSON Lines (gzipped or not). */
export async function readDataRows(file: string): Promise<{ row: unknown; where: string }[]> {
  const out: { row: unknown; where: string }[] = [];
  for await (const r of streamRows(file)) out.push(r);
  return out;
}

export interface PassageRow {
  docid?: string;
  title?: string;
  text: string;
}

/** Text → token ids without special tokens, at most `maxTokens`. */
export type Tokenize = (text: string, maxTokens: number) => number[];

export interface ExampleOptions {
  tokenize: Tokenize;
  qMaxLen: number;
  pMaxLen: number;
  /** Between title and text (already resolved from a tokenizer attribute name such as sep_token). */
  separator: string;
}

/** title + separator + text when the row has a title field (even an empty one, as Tevatron), else text. */
export function passageText(p: PassageRow, separator: string): string {
  return p.title !== undefined ? p.title + separator + p.text : p.text;
}

function fail(where: string, field: string, fix: string): Error {
  return new Error(`${where}: ${field} ${fix}`);
}

/** Token ids: integers in [0, 2³¹) (stored as int32; a larger one would wrap to another token). */
function isIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 31);
}

function passageOf(p: unknown, where: string, field: string): PassageRow {
  if (typeof p !== 'object' || p === null || typeof (p as PassageRow).text !== 'string') {
    throw fail(where, field, 'must be an object with a string "text" (and optional "title", "docid")');
  }
  const { title } = p as PassageRow;
  if (title !== undefined && typeof title !== 'string') throw fail(where, `${field}.title`, 'must be a string');
  return p as PassageRow;
}

/** One row (raw text or pre-tokenized) → a training example of token ids. */
export function toTrainExample(row: unknown, where: string, o: ExampleOptions): TrainExample {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) throw fail(where, 'the row', 'must be a JSON object');
  const r = row as Record<string, unknown>;
  if ('positives' in r || (isIds(r.query) && !('positive_passages' in r))) {
    // pre-tokenized: {query: ids|text, positives: [ids|text], negatives: [ids|text]}
    const seq = (v: unknown, field: string, max: number) => {
      if (typeof v === 'string') return o.tokenize(v, max);
      if (isIds(v)) return v.slice(0, max);
      throw fail(where, field, 'must be a list of token ids (integers ≥ 0) or a string');
    };
    const list = (field: string) => {
      const v = r[field] ?? [];
      if (!Array.isArray(v)) throw fail(where, `"${field}"`, 'must be a list');
      return v.map((x, i) => seq(x, `"${field}"[${i}]`, o.pMaxLen));
    };
    return { queryId: r.query_id === undefined ? undefined : String(r.query_id), query: seq(r.query, '"query"', o.qMaxLen), positives: list('positives'), negatives: list('negatives') };
  }
  if (typeof r.query !== 'string') throw fail(where, '"query"', 'must be a string (raw rows: query_id, query, positive_passages, negative_passages)');
  const passages = (field: string) => {
    const v = r[field] ?? [];
    if (!Array.isArray(v)) throw fail(where, `"${field}"`, 'must be a list of {title?, text} objects');
    return v.map((p, i) => {
      return o.tokenize(passageText(passageOf(p, where, `"${field}"[${i}]`), o.separator), o.pMaxLen);
    });
  };
  if (!('positive_passages' in r)) throw fail(where, '"positive_passages"', 'is missing');
  return {
    queryId: r.query_id === undefined ? undefined : String(r.query_id),
    query: o.tokenize(r.query, o.qMaxLen),
    positives: passages('positive_passages'),
    negatives: passages('negative_passages'),
  };
}

/** Every example of the given JSON / JSON Lines files (parquet: loadTrainExamplesAsync). */
export function loadTrainExamples(files: string[], o: ExampleOptions): TrainExample[] {
  return files.flatMap((f) => readRows(f).map(({ row, where }) => toTrainExample(row, where, o)));
}

/** Every example of the given files, parquet included. */
export async function loadTrainExamplesAsync(files: string[], o: ExampleOptions): Promise<TrainExample[]> {
  const out: TrainExample[] = [];
  for (const f of files) for await (const { row, where } of streamRows(f)) out.push(toTrainExample(row, where, o));
  return out;
}

export interface EncodeItem {
  id: string;
  tokens: number[];
}

/**
 * One row to encode: a query {query_id, query}, a passage {docid, title?, text} (title + separator + text),
 * or pre-tokenized {text_id, text: ids}.
 */
export function toEncodeItem(row: unknown, where: string, isQuery: boolean, o: ExampleOptions): EncodeItem {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) throw fail(where, 'the row', 'must be a JSON object');
  const r = row as Record<string, unknown>;
  const max = isQuery ? o.qMaxLen : o.pMaxLen;
  if ('text_id' in r && isIds(r.text)) return { id: String(r.text_id), tokens: r.text.slice(0, max) };
  if (isQuery) {
    if (r.query_id === undefined || typeof r.query !== 'string') throw fail(where, 'the query', 'needs "query_id" and a string "query" (or pre-tokenized "text_id" and "text")');
    return { id: String(r.query_id), tokens: o.tokenize(r.query, max) };
  }
  if (r.docid === undefined) throw fail(where, '"docid"', 'is missing (passages are {docid, title?, text}; queries need --encode_is_qry)');
  return { id: String(r.docid), tokens: o.tokenize(passageText(passageOf(r, where, 'the passage'), o.separator), max) };
}

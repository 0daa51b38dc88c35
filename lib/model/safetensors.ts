// The safetensors format (8-byte little-endian header length, JSON header, raw row-major data):
// read F32, F16 and BF16 into float32 (Node 20 has no Float16Array), skip integer buffers such as
// `position_ids`; write F32. Pure: bytes in, bytes out (headers validated as untrusted input); file I/O
// lives with the checkpoint code and lib/encoded.ts (which reads a header alone, then rows at offsets).

export interface NamedArray {
  shape: number[];
  data: Float32Array;
}

export type TensorDict = Record<string, NamedArray>;

export interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const FLOAT_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** Decodes one tensor's bytes (little-endian) to float32. */
export function decodeFloats(dtype: string, bytes: Uint8Array, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  if (dtype === 'F32') {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
  } else if (dtype === 'BF16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
  }
  return out;
}

export interface SafetensorsHeader {
  entries: Record<string, HeaderEntry>;
  metadata: Record<string, string>;
}

/** Safetensors' own limit: a header above it is refused before anything is allocated. */
const MAX_HEADER_BYTES = 100_000_000;

const invalid = (source: string, why: string) => new Error(`${source}: not a valid safetensors file (${why}); re-save it with safetensors' save_file or transformers' save_pretrained`);

/** The header length of a file's first 8 bytes, checked against the file's size before it is read. */
export function headerLength(first8: Uint8Array, fileBytes: number, source: string): number {
  if (fileBytes < 8 || first8.byteLength < 8) throw invalid(source, 'shorter than its 8-byte header length');
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(Math.min(fileBytes - 8, MAX_HEADER_BYTES))) throw invalid(source, `header length ${n} exceeds the file`);
  return Number(n);
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;

/**
 * Parses and checks a header (untrusted bytes): every entry has a dtype, a shape of counts and offsets
 * inside a body of `bodyBytes`; a float tensor's byte range matches its shape.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, bodyBytes: number, source: string): SafetensorsHeader {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch {
    throw invalid(source, 'its header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw invalid(source, 'its header is not a JSON object');
  const entries: Record<string, HeaderEntry> = Object.create(null); // a tensor named __proto__ stays a tensor
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry) || !Object.values(entry).every((v) => typeof v === 'string')) {
        throw invalid(source, '__metadata__ is not an object of strings');
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as Partial<HeaderEntry> | null;
    const offsets = e?.data_offsets;
    if (typeof e?.dtype !== 'string' || !Array.isArray(e.shape) || !e.shape.every(isCount) || !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw invalid(source, `tensor ${name} lacks a dtype, a shape of counts or two data_offsets`);
    }
    const [start, end] = offsets;
    const width = FLOAT_BYTES[e.dtype];
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (start > end || end > bodyBytes || (width && end - start !== count * width)) throw invalid(source, `tensor ${name} has ${end - start} bytes for shape [${e.shape}] of ${e.dtype}${end > bodyBytes ? `, past the end of the data (${bodyBytes} bytes)` : ''}`);
    entries[name] = e as HeaderEntry;
  }
  return { entries, metadata };
}

/** Bytes per element of the float dtypes this module decodes (undefined for others). */
export const floatWidth = (dtype: string): number | undefined => FLOAT_BYTES[dtype];

/**
 * Parses a safetensors file. Float tensors (F32, F16, BF16) are returned as float32; other dtypes
 * (I64 `position_ids`, U8 masks) are skipped and listed in `skipped`. `source` names the file in errors.
 */
export function parseSafetensors(bytes: Uint8Array, source = 'safetensors data'): { tensors: TensorDict; skipped: string[]; metadata: Record<string, string> } {
  const headerLen = headerLength(bytes, bytes.byteLength, source);
  const body = bytes.subarray(8 + headerLen);
  const { entries, metadata } = parseSafetensorsHeader(bytes.subarray(8, 8 + headerLen), body.byteLength, source);
  const tensors: TensorDict = Object.create(null); // a tensor named __proto__ stays a tensor
  const skipped: string[] = [];
  for (const [name, { dtype, shape, data_offsets: [start, end] }] of Object.entries(entries)) {
    if (!FLOAT_BYTES[dtype]) {
      skipped.push(name);
      continue;
    }
    tensors[name] = { shape, data: decodeFloats(dtype, body.subarray(start, end), shape.reduce((a, b) => a * b, 1)) };
  }
  return { tensors: { ...tensors }, skipped, metadata };
}

/** A header's bytes: JSON padded with spaces to a multiple of 8 (data stays 8-byte aligned), and to at least `minBytes`. */
export function headerBytes(header: Record<string, unknown>, minBytes = 0): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(Math.max(minBytes, json.length + ((8 - (json.length % 8)) % 8))).fill(0x20);
  out.set(json);
  return out;
}

/** Serializes float32 tensors (sorted by name, as the reference implementation does) to safetensors bytes. */
export function serializeSafetensors(tensors: TensorDict, metadata: Record<string, string> = { format: 'pt' }): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const { shape, data } = tensors[name];
    const count = shape.reduce((a, b) => a * b, 1);
    if (count !== data.length) throw new Error(`tensor ${name}: shape [${shape}] holds ${count} values, data has ${data.length}`);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + 4 * count] };
    offset += 4 * count;
  }
  const head = headerBytes(header);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const name of names) {
    const { data } = tensors[name];
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at); // little-endian hosts
    at += data.byteLength;
  }
  return out;
}

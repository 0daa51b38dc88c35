// The safetensors format (8-byte little-endian header length, JSON header, raw row-major data):
// read F32, F16 and BF16 into float32 (Node 20 has no Float16Array), skip integer buffers such as
// `position_ids`; write F32. Pure: bytes in, bytes out; file I/O lives with the checkpoint code.

export interface NamedArray {
  shape: number[];
  data: Float32Array;
}

export type TensorDict = Record<string, NamedArray>;

interface HeaderEntry {
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
function decode(dtype: string, bytes: Uint8Array, count: number): Float32Array {
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

/** The reference implementation's limit: a larger header is not a safetensors file. */
const MAX_HEADER_BYTES = 100_000_000;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** One header entry, checked: a dtype string, a shape of non-negative integers, offsets inside the data. */
function checkEntry(name: string, entry: unknown, bodyBytes: number, fail: (why: string) => Error): HeaderEntry {
  const e = entry as Partial<HeaderEntry>;
  if (!isObject(entry) || typeof e.dtype !== 'string') throw fail(`tensor ${name} has no "dtype"`);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw fail(`tensor ${name} has shape ${JSON.stringify(e.shape)}, not a list of sizes`);
  const o = e.data_offsets;
  if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isSafeInteger(x)) || !(0 <= o[0] && o[0] <= o[1] && o[1] <= bodyBytes)) {
    throw fail(`tensor ${name} has data_offsets ${JSON.stringify(o)} outside the ${bodyBytes} bytes of data`);
  }
  return e as HeaderEntry;
}

/**
 * Parses a safetensors file. Float tensors (F32, F16, BF16) are returned as float32; other dtypes
 * (I64 `position_ids`, U8 masks) are skipped and listed in `skipped`. `source` names the file in errors.
 */
export function parseSafetensors(bytes: Uint8Array, source = 'safetensors data'): { tensors: TensorDict; skipped: string[]; metadata: Record<string, string> } {
  const fail = (why: string) => new Error(`${source}: not a valid safetensors file (${why}); re-save it with safetensors' save_file or transformers' save_pretrained`);
  if (bytes.byteLength < 8) throw fail('shorter than its 8-byte header length');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (8 + headerLen > bytes.byteLength) throw fail(`header length ${headerLen} exceeds the file`);
  if (headerLen > MAX_HEADER_BYTES) throw fail(`header length ${headerLen} is over the format's limit of ${MAX_HEADER_BYTES}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch {
    throw fail('its header is not JSON');
  }
  if (!isObject(header)) throw fail('its header is not a JSON object');
  const body = bytes.subarray(8 + headerLen);
  const tensors: TensorDict = Object.create(null); // a tensor named __proto__ stays a tensor
  const skipped: string[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === 'string')) throw fail('__metadata__ is not an object of strings');
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = checkEntry(name, entry, body.byteLength, fail);
    const width = FLOAT_BYTES[dtype];
    if (!width) {
      skipped.push(name);
      continue;
    }
    const count = shape.reduce((a, b) => a * b, 1);
    const [start, end] = offsets;
    if (end - start !== count * width) throw fail(`tensor ${name} has ${end - start} bytes for shape [${shape}] of ${dtype}`);
    tensors[name] = { shape, data: decode(dtype, body.subarray(start, end), count) };
  }
  return { tensors: { ...tensors }, skipped, metadata };
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
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20); // data stays 8-byte aligned
  headerBytes.set(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const name of names) {
    const { data } = tensors[name];
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at); // little-endian hosts
    at += data.byteLength;
  }
  return out;
}

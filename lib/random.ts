// Explicit randomness: 32-bit keys split by hashing (no global RNG state), and dropout masks that
// are a pure function of (key, example row, element), so any chunking of a batch draws the very
// same mask for each example — the property grad-cache's replay and cross-process equivalence need.

/** A random key: an unsigned 32-bit integer. Derive sub-keys with `foldIn`, never reuse one for two draws. */
export type Key = number;

/** A finaliser with good avalanche (Wellons' lowbias32). */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** A new key from a key and an integer (a layer, a chunk, a step, a rank). */
export function foldIn(key: Key, data: number): Key {
  return mix32((mix32(key >>> 0) ^ Math.imul((data | 0) + 0x9e3779b9, 0x85ebca6b)) >>> 0);
}

/** A key from a user's integer seed (any safe integer). */
export function keyFromSeed(seed: number): Key {
  const lo = seed % 0x100000000;
  const hi = Math.floor(seed / 0x100000000);
  return foldIn(mix32(lo >>> 0), hi);
}

/**
 * Where dropout draws from: the key of the pass and the global index of this tensor's first row, so that
 * row r of a chunk starting at `rowOffset` draws as row rowOffset + r of the whole batch would.
 */
export interface DropoutRng {
  key: Key;
  rowOffset: number;
}

/** Same rows, another dropout site (layer, sub-layer): a sub-key, same row offset. */
export function siteRng(rng: DropoutRng, site: number): DropoutRng {
  return { key: foldIn(rng.key, site), rowOffset: rng.rowOffset };
}

/**
 * Inverted-dropout scale factors for `rows` rows of `rowSize` elements each: 0 with probability `rate`,
 * else 1/(1−rate). Element j of global row r depends only on (key, r, j).
 */
export function dropoutScales(rng: DropoutRng, rows: number, rowSize: number, rate: number): Float32Array {
  const out = new Float32Array(rows * rowSize);
  const keep = 1 - rate;
  const threshold = Math.floor(keep * 0x1000000); // compare 24-bit uniforms: exact for float32
  const scale = 1 / keep;
  for (let r = 0; r < rows; r++) {
    const rowKey = foldIn(rng.key, rng.rowOffset + r);
    const base = r * rowSize;
    for (let j = 0; j < rowSize; j++) {
      if (mix32((rowKey + Math.imul(j, 0x9e3779b9)) >>> 0) >>> 8 < threshold) out[base + j] = scale;
    }
  }
  return out;
}

// Exact inner-product retrieval over encoded shards (Tevatron's faiss_retriever with IndexFlatIP). Shards
// may together outgrow memory, so each is read a block of rows at a time; every block is scored against
// the queries (one matmul per batch of queries, then the backend's top-k) and its candidates enter a fixed
// buffer of the best `depth` hits per query. Memory holds the queries, one block (two while searchFiles
// reads the next one ahead) and the buffers, whatever the corpus size. Ties rank the passage that comes
// first (shard order, then row) higher, so results are deterministic and do not depend on the block size.
// A docid found twice (shards that overlap, or a corpus that lists it twice) is listed once, with its best
// score.
import * as tf from '@tensorflow/tfjs';
import { encodedBlocks, encodedBlocksAhead, openEncoded, type Block, type Encoded } from './encoded.ts';
import { stagedTextFile } from './files.ts';

export { readEncoded, writeEncoded, type Encoded } from './encoded.ts';

export interface Hit {
  docid: string;
  score: number;
  /** Global passage order (shard, row): the tie-breaker. */
  order: number;
}

/** Rows per block: 64 MB of float32 rows (one block is what a shard costs in memory). */
export const defaultBlockRows = (dim: number): number => Math.max(1, Math.floor((64 << 20) / (4 * Math.max(dim, 1))));

export interface SearchOptions {
  /** Passage rows scored at once (default: 64 MB of rows). */
  blockRows?: number;
  /** Called after each block with the passages scored so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Hears of each repeated docid that reached a query's list (query index, docid); it is listed once. */
  onDuplicate?: (query: number, docid: string) => void;
}

/**
 * The best `depth` distinct docids of every query so far, best first, in fixed buffers (no growing lists). A
 * docid offered again keeps its better hit, so the buffer always holds the top `depth` distinct docids.
 */
function topHits(queries: number, depth: number, onDuplicate?: (query: number, docid: string) => void) {
  const scores = new Float64Array(queries * depth);
  const orders = new Float64Array(queries * depth);
  const docids: string[] = new Array(queries * depth);
  const counts = new Int32Array(queries);
  const better = (s: number, o: number, at: number) => s > scores[at] || (s === scores[at] && o < orders[at]);
  const move = (to: number, from: number) => {
    scores[to] = scores[from];
    orders[to] = orders[from];
    docids[to] = docids[from];
  };
  return {
    /** The lowest score a hit needs to enter query q's list (-Infinity while it is not full). */
    floor: (q: number) => (counts[q] < depth ? -Infinity : scores[q * depth + depth - 1]),
    /** Offers a hit to query q's list; true when its docid was already listed (a repeat: one entry, the better hit). */
    offer(q: number, score: number, order: number, docid: string): boolean {
      const base = q * depth;
      let n = counts[q];
      if (n === depth && !better(score, order, base + n - 1)) return false;
      let seen = base;
      while (seen < base + n && docids[seen] !== docid) seen++;
      const repeat = seen < base + n;
      if (repeat) {
        onDuplicate?.(q, docid);
        if (!better(score, order, seen)) return true;
        for (let j = seen; j < base + n - 1; j++) move(j, j + 1);
        n -= 1;
      }
      let i = base + Math.min(n, depth - 1);
      for (; i > base && better(score, order, i - 1); i--) move(i, i - 1);
      scores[i] = score;
      orders[i] = order;
      docids[i] = docid;
      counts[q] = Math.min(n + 1, depth);
      return repeat;
    },
    hits: (q: number): Hit[] => Array.from({ length: counts[q] }, (_, j) => ({ docid: docids[q * depth + j], score: scores[q * depth + j], order: orders[q * depth + j] })),
  };
}

interface Shard {
  name: string;
  rows: number;
  dim: number;
}

function loadedShard(e: Encoded, i: number): Shard & { blocks(blockRows: number): Iterable<Block> } {
  const name = `shard ${i + 1} (loaded)`;
  if (e.data.length !== e.ids.length * e.dim) throw new Error(`${name}: ${e.ids.length} ids for ${e.data.length} values of dimension ${e.dim}`);
  return {
    name,
    rows: e.ids.length,
    dim: e.dim,
    *blocks(blockRows) {
      for (let start = 0; start < e.ids.length; start += blockRows) {
        const end = Math.min(start + blockRows, e.ids.length);
        yield { start, data: e.data.subarray(start * e.dim, end * e.dim), ids: e.ids.slice(start, end) };
      }
    },
  };
}

function fileShard(path: string): Shard & { blocks(blockRows: number): Iterable<Block> } {
  const f = openEncoded(path);
  return { name: path, rows: f.rows, dim: f.dim, blocks: (blockRows) => encodedBlocks(f, blockRows) };
}

/** Scores blocks, in global passage order, into the best `depth` hits per query. */
function blockScorer(queries: Encoded, shards: Shard[], depth: number, batchSize: number, opts: SearchOptions) {
  const Q = queries.ids.length;
  const dim = queries.dim;
  for (const s of shards) if (s.dim !== dim && s.rows > 0) throw new Error(`${s.name} has dimension ${s.dim}, the queries ${dim}; encode both with the same model`);
  const total = shards.reduce((n, s) => n + s.rows, 0);
  const best = topHits(Q, depth, opts.onDuplicate);
  const B = batchSize > 0 ? Math.min(batchSize, Q) : Q;
  // TensorFlow reads a transposed operand natively; the other backends are faster with an explicit transpose
  const flagTranspose = tf.getBackend() === 'tensorflow';
  const queryBatches: tf.Tensor2D[] = [];
  for (let s = 0; s < Q; s += B) queryBatches.push(tf.tensor2d(queries.data.subarray(s * dim, Math.min(s + B, Q) * dim), [Math.min(B, Q - s), dim]));
  let scored = 0;
  return {
    blockRows: opts.blockRows ?? defaultBlockRows(dim),
    /** Scores a block whose first row has global order `first`. */
    score(block: Block, first: number): void {
      const rows = block.ids.length;
      const k = Math.min(depth, rows);
      const passages = tf.tidy(() => {
        const p = tf.tensor2d(block.data, [rows, dim]);
        return flagTranspose ? p : tf.transpose(p);
      });
      const scoresOf = (qs: tf.Tensor2D, count: number) => {
        const { values, indices } = tf.tidy(() => tf.topk(tf.matMul(qs, passages, false, flagTranspose), count, true));
        const out = { v: values.dataSync(), idx: indices.dataSync() };
        tf.dispose([values, indices]);
        return out;
      };
      // Offers query q's candidates [from, to) of a best-first list until one falls below the list's floor
      // (none of the rest can enter); exhausted: every one was offered.
      const offerRun = (q: number, v: ArrayLike<number>, idx: ArrayLike<number>, from: number, to: number) => {
        let repeats = 0;
        for (let j = from; j < to; j++) {
          if (v[j] < best.floor(q)) return { exhausted: false, repeats };
          if (best.offer(q, v[j], first + idx[j], block.ids[idx[j]])) repeats++;
        }
        return { exhausted: true, repeats };
      };
      queryBatches.forEach((qb, b) => {
        const { v, idx } = scoresOf(qb, k);
        for (let r = 0; r < qb.shape[0]; r++) {
          const q = b * B + r;
          const run = offerRun(q, v, idx, r * k, (r + 1) * k);
          // a docid repeated within the block took a candidate's place: rank the whole block for this query
          if (run.exhausted && run.repeats > 0 && k < rows) {
            const row = qb.slice([r, 0], [1, dim]);
            const full = scoresOf(row, rows);
            row.dispose();
            offerRun(q, full.v, full.idx, k, rows);
          }
        }
      });
      passages.dispose();
      opts.onProgress?.((scored += rows), total);
    },
    hits: (): Hit[][] => Array.from({ length: Q }, (_, q) => best.hits(q)),
    dispose: () => tf.dispose(queryBatches),
  };
}

/**
 * The `depth` best passages of every query, best first, over shards given as paths (read in blocks) or
 * as loaded encodings. `batchSize` queries are scored at once (≤ 0: all). Every shard file is checked
 * before any scoring starts.
 */
export function search(queries: Encoded, shards: (string | Encoded)[], depth: number, batchSize = 128, opts: SearchOptions = {}): Hit[][] {
  const list = shards.map((s, i) => (typeof s === 'string' ? fileShard(s) : loadedShard(s, i)));
  const scorer = blockScorer(queries, list, depth, batchSize, opts);
  try {
    let offset = 0;
    for (const shard of list) {
      for (const block of shard.blocks(scorer.blockRows)) scorer.score(block, offset + block.start);
      offset += shard.rows;
    }
    return scorer.hits();
  } finally {
    scorer.dispose();
  }
}

/**
 * search() over shard files, with the next block read from disk while this one is scored (what
 * scripts/search.ts runs: over a corpus larger than memory, every block comes from the disk).
 */
export async function searchFiles(queries: Encoded, paths: string[], depth: number, batchSize = 128, opts: SearchOptions = {}): Promise<Hit[][]> {
  const files = paths.map(openEncoded);
  const scorer = blockScorer(queries, files.map((f) => ({ name: f.path, rows: f.rows, dim: f.dim })), depth, batchSize, opts);
  try {
    let offset = 0;
    for (const f of files) {
      for await (const block of encodedBlocksAhead(f, scorer.blockRows)) scorer.score(block, offset + block.start);
      offset += f.rows;
    }
    return scorer.hits();
  } finally {
    scorer.dispose();
  }
}

const rankingLine = (qid: string, h: Hit, rank: number, format: 'text' | 'trec', tag: string) =>
  format === 'text' ? `${qid}\t${h.docid}\t${h.score}\n` : `${qid} Q0 ${h.docid} ${rank} ${h.score} ${tag}\n`;

/** A ranking as text (`qid<TAB>docid<TAB>score`, Tevatron's --save_text) or TREC (`qid Q0 docid rank score tag`). */
export function formatRanking(qids: string[], hits: Hit[][], format: 'text' | 'trec', tag = 'tevatron-ts'): string {
  return hits.map((list, q) => list.map((h, i) => rankingLine(qids[q], h, i + 1, format, tag)).join('')).join('');
}

/** Writes a ranking query by query (a large one exceeds a string's size), under a temporary name, then renamed. */
export function writeRanking(path: string, qids: string[], hits: Hit[][], format: 'text' | 'trec', tag = 'tevatron-ts'): void {
  const out = stagedTextFile(path, '--save_ranking_to');
  try {
    hits.forEach((list, q) => out.write(list.map((h, i) => rankingLine(qids[q], h, i + 1, format, tag)).join('')));
    out.close();
  } catch (e) {
    out.abort();
    throw e;
  }
}

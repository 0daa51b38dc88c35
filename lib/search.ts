// Exact inner-product retrieval over encoded shards (Tevatron's faiss_retriever with IndexFlatIP):
// each shard is loaded, scored against the queries in batches, and its top candidates are merged into
// one bounded list per query, so memory holds one shard plus the result lists. Ties rank the
// passage that comes first (shard order, then row) higher, so results are deterministic. A docid found
// twice (shards that overlap, or a corpus that lists it twice) is listed once, with its best score.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { parseSafetensors, serializeSafetensors } from './model/safetensors.ts';

/** An encode output: `embeddings` [N, d] in PATH (safetensors) and N ids, one per line, in PATH.ids. */
export interface Encoded {
  ids: string[];
  data: Float32Array;
  dim: number;
}

export function readEncoded(path: string): Encoded {
  let bytes: Uint8Array;
  let idsText: string;
  try {
    bytes = readFileSync(path);
    idsText = readFileSync(`${path}.ids`, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read the encoded representations (${(e as Error).message}); write them with scripts/encode.ts --encoded_save_path`);
  }
  const t = parseSafetensors(bytes, path).tensors.embeddings;
  if (!t || t.shape.length !== 2) throw new Error(`${path}: holds no 2-D tensor named "embeddings"; write it with scripts/encode.ts`);
  const ids = idsText.split('\n').filter((l, i, a) => l !== '' || i < a.length - 1);
  if (ids.length !== t.shape[0]) throw new Error(`${path}.ids lists ${ids.length} ids for ${t.shape[0]} rows; the two files must come from the same encode run`);
  return { ids, data: t.data, dim: t.shape[1] };
}

/** Writes PATH and PATH.ids, each to a temporary name first, then renamed: no half-written output. */
export function writeEncoded(path: string, e: Encoded): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, serializeSafetensors({ embeddings: { shape: [e.ids.length, e.dim], data: e.data } }));
  writeFileSync(`${tmp}.ids`, e.ids.map((id) => `${id}\n`).join(''));
  renameSync(`${tmp}.ids`, `${path}.ids`);
  renameSync(tmp, path);
}

export interface Hit {
  docid: string;
  score: number;
  /** Global passage order (shard, row): the tie-breaker. */
  order: number;
}

const better = (a: Hit, b: Hit) => a.score > b.score || (a.score === b.score && a.order < b.order);

/** Keeps the best `depth` distinct docids of one query (a sorted array: fine for the candidate counts per shard). */
function merge(list: Hit[], candidates: Hit[], depth: number, onDuplicate?: (docid: string) => void): Hit[] {
  const all = list.concat(candidates);
  all.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
  const seen = new Set<string>();
  const out: Hit[] = [];
  for (const h of all) {
    if (out.length === depth) break;
    if (seen.has(h.docid)) onDuplicate?.(h.docid);
    else {
      seen.add(h.docid);
      out.push(h);
    }
  }
  return out;
}

/**
 * The `depth` best passages of every query, best first, over shards given as paths (loaded one at a
 * time) or as loaded encodings. `batchSize` queries are scored at once (≤ 0: all). `onDuplicate` hears of
 * each repeated docid that was dropped (query index, docid).
 */
export function search(queries: Encoded, shards: (string | Encoded)[], depth: number, batchSize = 128, onDuplicate?: (query: number, docid: string) => void): Hit[][] {
  const Q = queries.ids.length;
  const results: Hit[][] = Array.from({ length: Q }, () => []);
  const B = batchSize > 0 ? batchSize : Q;
  let offset = 0;
  for (const shard of shards) {
    const p = typeof shard === 'string' ? readEncoded(shard) : shard;
    if (p.dim !== queries.dim) throw new Error(`${typeof shard === 'string' ? shard : 'a shard'} has dimension ${p.dim}, the queries ${queries.dim}; encode both with the same model`);
    const N = p.ids.length;
    const k = Math.min(depth, N);
    if (k > 0) {
      const passages = tf.tensor2d(p.data, [N, p.dim]);
      const pt = tf.transpose(passages);
      for (let s = 0; s < Q; s += B) {
        const rows = Math.min(B, Q - s);
        const { values, indices } = tf.tidy(() => {
          const scores = tf.matMul(tf.tensor2d(queries.data.subarray(s * queries.dim, (s + rows) * queries.dim), [rows, queries.dim]), pt);
          return tf.topk(scores, k, true);
        });
        const v = values.dataSync();
        const idx = indices.dataSync();
        tf.dispose([values, indices]);
        for (let r = 0; r < rows; r++) {
          const cands: Hit[] = [];
          for (let j = 0; j < k; j++) {
            const row = idx[r * k + j];
            cands.push({ docid: p.ids[row], score: v[r * k + j], order: offset + row });
          }
          results[s + r] = merge(results[s + r], cands, depth, onDuplicate && ((docid) => onDuplicate(s + r, docid)));
        }
      }
      tf.dispose([passages, pt]);
    }
    offset += N;
  }
  return results;
}

/** A ranking as text (`qid<TAB>docid<TAB>score`, Tevatron's --save_text) or TREC (`qid Q0 docid rank score tag`). */
export function formatRanking(qids: string[], hits: Hit[][], format: 'text' | 'trec', tag = 'tevatron-ts'): string {
  const lines: string[] = [];
  hits.forEach((list, q) =>
    list.forEach((h, i) => lines.push(format === 'text' ? `${qids[q]}\t${h.docid}\t${h.score}` : `${qids[q]} Q0 ${h.docid} ${i + 1} ${h.score} ${tag}`)),
  );
  return lines.length ? `${lines.join('\n')}\n` : '';
}

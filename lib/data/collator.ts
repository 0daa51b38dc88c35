// Token ids -> fixed-shape Int32 batches, as Tevatron's QPCollator: `[CLS] content[:max-2] [SEP]`
// padded to max length (not to the longest row), with an attention mask. Passage rows i·n … i·n+n−1
// are query i's group, positive first. Plain typed arrays: no tensors until the encoder.
import type { Group } from './sample.ts';

/** Row-major [rows, length] token ids and attention mask (1 = real token, 0 = padding). */
export interface TokenBatch {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  rows: number;
  length: number;
}

/** Special token ids, read from the tokenizer's vocabulary (never hard-coded). */
export interface SpecialTokens {
  cls: number;
  sep: number;
  pad: number;
}

/** Rows [start, end) of a batch (views, no copy). */
export function rowSlice(batch: TokenBatch, start: number, end: number): TokenBatch {
  const L = batch.length;
  return {
    inputIds: batch.inputIds.subarray(start * L, end * L),
    attentionMask: batch.attentionMask.subarray(start * L, end * L),
    rows: end - start,
    length: L,
  };
}

/** Each sequence as `[CLS] ids[:maxLen-2] [SEP]`, padded to maxLen. */
export function collateSequences(seqs: readonly (readonly number[])[], maxLen: number, special: SpecialTokens): TokenBatch {
  if (!Number.isInteger(maxLen) || maxLen < 2) throw new Error(`max length must be an integer >= 2 (room for [CLS] and [SEP]), got ${maxLen}`);
  const rows = seqs.length;
  const inputIds = new Int32Array(rows * maxLen).fill(special.pad);
  const attentionMask = new Int32Array(rows * maxLen);
  seqs.forEach((seq, r) => {
    const base = r * maxLen;
    const n = Math.min(seq.length, maxLen - 2);
    inputIds[base] = special.cls;
    for (let j = 0; j < n; j++) inputIds[base + 1 + j] = seq[j];
    inputIds[base + 1 + n] = special.sep;
    attentionMask.fill(1, base, base + n + 2);
  });
  return { inputIds, attentionMask, rows, length: maxLen };
}

export interface CollateOptions {
  qMaxLen: number;
  pMaxLen: number;
  special: SpecialTokens;
}

/** B sampled groups -> queries [B, q_max_len] and passages [B·n, p_max_len]. */
export function collateGroups(groups: readonly Group[], opts: CollateOptions): { queries: TokenBatch; passages: TokenBatch } {
  const n = groups[0]?.passages.length ?? 0;
  groups.forEach((g, i) => {
    if (g.passages.length !== n) throw new Error(`collate: group ${i} has ${g.passages.length} passages, group 0 has ${n}; every group needs train_n_passages`);
  });
  return {
    queries: collateSequences(groups.map((g) => g.query), opts.qMaxLen, opts.special),
    passages: collateSequences(groups.flatMap((g) => g.passages), opts.pMaxLen, opts.special),
  };
}

// Retrieval metrics on score matrices.

/**
 * Recall@k for one relevant passage per query: the fraction of queries whose gold passage is among the
 * k highest scores (ties broken toward the lower index). `scores` is row-major [queries, passages].
 */
export function recallAtK(scores: Float32Array, numPassages: number, gold: number[], k: number): number {
  let hits = 0;
  gold.forEach((g, q) => {
    const row = scores.subarray(q * numPassages, (q + 1) * numPassages);
    let better = 0;
    for (let j = 0; j < numPassages; j++) if (row[j] > row[g] || (row[j] === row[g] && j < g)) better++;
    if (better < k) hits++;
  });
  return hits / gold.length;
}

// A generated retrieval task for the demo, tests and benchmarks (nothing to download): passages are
// bags of "topic" words plus common filler; a query repeats a few of its passage's topic words among
// filler; hard negatives share a topic word with the positive. Learning shows as a higher recall.
import { PyRandom } from './pyrandom.ts';
import type { TrainExample } from './sample.ts';

export interface SyntheticTask {
  /** Token ids start at `firstId` (ids below it are left for special tokens). */
  vocabSize: number;
  corpus: number[][];
  train: TrainExample[];
  /** Held-out queries and the index of their gold passage in `corpus`. */
  test: { query: number[]; positive: number }[];
}

export interface SyntheticOptions {
  passages: number;
  testQueries: number;
  seed: number;
  topicWords?: number;
  fillerWords?: number;
  firstId?: number;
  negatives?: number;
}

export function syntheticTask(o: SyntheticOptions): SyntheticTask {
  const rng = new PyRandom(o.seed);
  const firstId = o.firstId ?? 5;
  const topicWords = o.topicWords ?? 600;
  const fillerWords = o.fillerWords ?? 60;
  const topic = () => firstId + fillerWords + rng.randbelow(topicWords);
  const filler = () => firstId + rng.randbelow(fillerWords);
  const keys = Array.from({ length: o.passages }, () => [topic(), topic(), topic(), topic()]);
  const corpus = keys.map((k) => rng.shuffle([...k, ...k, ...Array.from({ length: 16 }, filler)]));
  const queryOf = (i: number) => rng.shuffle([...rng.shuffle([...keys[i]]).slice(0, 2), filler(), filler(), filler()]);
  // hard negatives: passages sharing a topic word with the positive, else random ones
  const byWord = new Map<number, number[]>();
  keys.forEach((k, i) => k.forEach((w) => byWord.set(w, [...(byWord.get(w) ?? []), i])));
  const negativesOf = (i: number) => {
    const near = [...new Set(keys[i].flatMap((w) => byWord.get(w)!))].filter((j) => j !== i);
    while (near.length < (o.negatives ?? 4)) near.push((i + 1 + rng.randbelow(o.passages - 1)) % o.passages);
    return near.slice(0, o.negatives ?? 4).map((j) => corpus[j]);
  };
  const testIds = new Set(Array.from({ length: o.testQueries }, (_, t) => (t * 7919) % o.passages));
  const train: TrainExample[] = [];
  const test: SyntheticTask['test'] = [];
  for (let i = 0; i < o.passages; i++) {
    if (testIds.has(i)) test.push({ query: queryOf(i), positive: i });
    else train.push({ queryId: `q${i}`, query: queryOf(i), positives: [corpus[i]], negatives: negativesOf(i) });
  }
  return { vocabSize: firstId + fillerWords + topicWords, corpus, train, test };
}

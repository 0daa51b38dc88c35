import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dprTokens, hasAnswer, parseQrels, parseRun, rankingMetrics, recallAtK, topkAccuracy } from '../lib/metrics.ts';
import { close } from './helpers.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'metrics-'));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};

test('run and qrels formats: text and TREC runs, 2-column, 3-column and TREC qrels', () => {
  const { run: text } = parseRun(file('run.txt', 'q1\td2\t0.5\nq1\td1\t0.9\nq2\td3\t1\n'));
  assert.equal(text.get('q1'), ['d1', 'd2'], 'text runs are ordered by score');
  const { run: trec } = parseRun(file('run.trec', 'q1 Q0 d2 2 0.5 x\nq1 Q0 d1 1 0.9 x\n'));
  assert.equal(trec.get('q1'), ['d1', 'd2'], 'TREC runs are ordered by rank');
  assert.equal([...parseQrels(file('a.tsv', 'q1\td1\n')).get('q1')!], [['d1', 1]]);
  assert.equal([...parseQrels(file('b.trec', 'q1 0 d1 2\nq1 0 d2 0\n')).get('q1')!], [['d1', 2], ['d2', 0]]);
  assert.throws(() => parseRun(file('bad.txt', 'q1 d1\n')), /bad.txt:1: expected 'qid docid score'/);
});

test('recall@k, MRR@10, nDCG@10 on a hand-computed case', () => {
  // q1: relevant d1 (rank 2) and d9 (not retrieved); q2: relevant d5 at rank 1; q3: not in the run
  const run = new Map([['q1', ['d3', 'd1', 'd4']], ['q2', ['d5', 'd6']]]);
  const qrels = new Map([
    ['q1', new Map([['d1', 1], ['d9', 1]])],
    ['q2', new Map([['d5', 1]])],
    ['q3', new Map([['d7', 1]])],
  ]);
  const m = rankingMetrics(run, qrels, [1, 2]);
  assert.is(m.queries, 3);
  close(m['recall@1'], (0 + 1 + 0) / 3, 1e-12, 'R@1');
  close(m['recall@2'], (0.5 + 1 + 0) / 3, 1e-12, 'R@2');
  close(m['mrr@10'], (1 / 2 + 1 + 0) / 3, 1e-12, 'MRR@10');
  // q1: DCG = 1/log2(3), ideal = 1 + 1/log2(3); q2: 1
  close(m['ndcg@10'], ((1 / Math.log2(3)) / (1 + 1 / Math.log2(3)) + 1 + 0) / 3, 1e-12, 'nDCG@10');
  // graded: gains are the relevance
  const g = rankingMetrics(new Map([['q', ['a', 'b']]]), new Map([['q', new Map([['a', 1], ['b', 3]])]]), [1]);
  close(g['ndcg@10'], (1 + 3 / Math.log2(3)) / (3 + 1 / Math.log2(3)), 1e-12, 'graded nDCG');
});

test('a docid repeated in a ranking counts once, at its best rank; an empty run and disjoint qrels are errors', () => {
  // q1 lists d1 at ranks 1 and 3 (and, in the file, a third time): recall@5 of its two relevant d1, d2 is 2/2, not 3/2
  const { run, duplicates } = parseRun(file('dup.txt', 'q1 d1 9\nq1 d3 8\nq1 d1 7\nq1 d2 6\nq1 d1 5\n'));
  assert.equal(run.get('q1'), ['d1', 'd3', 'd2']);
  assert.is(duplicates, 2);
  const qrels = new Map([['q1', new Map([['d1', 1], ['d2', 1]])]]);
  const m = rankingMetrics(new Map([['q1', ['d1', 'd3', 'd1', 'd2', 'd1']]]), qrels, [5]);
  assert.is(m['recall@5'], 1);
  // DCG = 1 + 1/log2(4) over the ideal 1 + 1/log2(3): at most 1
  close(m['ndcg@10'], (1 + 1 / Math.log2(4)) / (1 + 1 / Math.log2(3)), 1e-12, 'nDCG@10 with the repeat dropped');
  assert.throws(() => parseRun(file('empty.txt', '\n\n')), /empty.txt: the run is empty/);
  assert.throws(() => rankingMetrics(new Map([['a', ['d1']]]), qrels, [5], { run: 'run.txt', qrels: 'q.tsv' }), /run.txt and q.tsv share no query id \(run: 'a'; qrels: 'q1'\)/);
  assert.throws(() => rankingMetrics(run, new Map([['q1', new Map([['d1', 0]])]]), [5]), /no query has a relevant passage/);
});

test('has_answer as DPR: NFD, uncased token sequences, punctuation as tokens', () => {
  assert.equal(dprTokens('Hello, World!'), ['hello', ',', 'world', '!']);
  assert.ok(hasAnswer(['Barack Obama'], 'In 2008, barack  obama was elected.'));
  assert.not.ok(hasAnswer(['Obama'], 'Obamacare was passed.'), 'whole tokens only');
  assert.ok(hasAnswer(['Café'], 'the cafe\u0301 on the corner'), 'composed and decomposed accents match after NFD');
  assert.ok(hasAnswer(['1,000'], 'about 1,000 people'));
  assert.not.ok(hasAnswer(['1,000'], 'about 1000 people'));
  assert.not.ok(hasAnswer([''], 'anything'));
  assert.equal(topkAccuracy([[false, true], [false, false], [true]], [1, 2]), { top1: 1 / 3, top2: 2 / 3 });
});

test('recall@k from a score matrix, ties toward the lower index', () => {
  const scores = Float32Array.from([0.1, 0.9, 0.5, /* q1 */ 0.7, 0.7, 0.2]);
  assert.is(recallAtK(scores, 3, [2, 1], 1), 0);
  assert.is(recallAtK(scores, 3, [2, 1], 2), 1);
  assert.is(recallAtK(scores, 3, [1, 0], 1), 1);
});

test.run();

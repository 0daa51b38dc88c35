import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { checkExamples, sampleGroup, type TrainExample } from '../lib/data/sample.ts';

// Made by CPython's own `random` module: test/fixtures/make_sampling.py
const fixture = JSON.parse(readFileSync(new URL('./fixtures/sampling.json', import.meta.url), 'utf8'));

test('PyRandom reproduces CPython: getrandbits(32), random(), shuffle, for small and >32-bit seeds', () => {
  for (const s of fixture.streams) {
    const r = new PyRandom(s.seed);
    assert.equal(Array.from({ length: 5 }, () => r.uint32()), s.uint32, `uint32, seed ${s.seed}`);
    assert.is(new PyRandom(s.seed).random(), s.random[0]);
    assert.equal(new PyRandom(s.seed).shuffle(Array.from({ length: 20 }, (_, i) => i)), s.shuffle20);
  }
});

test('PyRandom.sample reproduces CPython draw for draw: consecutive calls, both of its paths and their boundaries', () => {
  for (const { seed, calls } of fixture.samples) {
    const r = new PyRandom(seed);
    for (const c of calls) assert.equal(r.sample(Array.from({ length: c.n }, (_, i) => i), c.k), c.result, `seed ${seed}, sample(range(${c.n}), ${c.k})`);
  }
  assert.throws(() => new PyRandom(1).sample([1, 2], 3), /k must be in \[0, 2\]/);
});

test('sampleGroup reproduces Tevatron v1 groups (CPython reference) over seeds, n, epochs and flags', () => {
  const examples: TrainExample[] = fixture.examples;
  for (const c of fixture.cases) {
    const got = sampleGroup(examples[c.item], c.item, {
      nPassages: c.n,
      seed: c.seed,
      epoch: c.epoch,
      positiveNoShuffle: c.positiveNoShuffle,
      negativeNoShuffle: c.negativeNoShuffle,
    });
    assert.equal(got.passages, c.passages, JSON.stringify(c));
    assert.equal(got.query, examples[c.item].query);
  }
});

const example: TrainExample = {
  queryId: 'q7',
  query: [1],
  positives: [[10], [11]],
  negatives: Array.from({ length: 6 }, (_, i) => [100 + i]),
};

test('the negative window walks the fixed permutation without overlap until it wraps', () => {
  const negsOf = (epoch: number) => sampleGroup(example, 3, { nPassages: 3, seed: 42, epoch }).passages.slice(1).map((p) => p[0]);
  const perm = new PyRandom(3 + 42).shuffle(example.negatives.map((p) => p[0]));
  assert.equal([...negsOf(0), ...negsOf(1), ...negsOf(2)], perm, 'three epochs of 2 cover the 6 negatives once');
  assert.equal(negsOf(3), negsOf(0), 'epoch 3 wraps to epoch 0');
  assert.equal(sampleGroup(example, 3, { nPassages: 3, seed: 42, epoch: 0 }).passages[0], example.positives[(3 + 42) % 2]);
  assert.equal(sampleGroup(example, 3, { nPassages: 3, seed: 42, epoch: 1 }).passages[0], [10], 'positives cycle by epoch');
  // n−1 = 4 does not divide 6: the window crosses the end of the permutation
  const wrap = sampleGroup(example, 3, { nPassages: 5, seed: 42, epoch: 1 }).passages.slice(1).map((p) => p[0]);
  assert.equal(wrap, [...perm.slice(4), ...perm.slice(0, 2)]);
});

test('too few negatives: deterministic draws with replacement; none: a clear error; n = 1: in-batch only', () => {
  const few = { ...example, negatives: [[100], [101]] };
  const a = sampleGroup(few, 0, { nPassages: 6, seed: 1, epoch: 2 });
  assert.equal(a, sampleGroup(few, 0, { nPassages: 6, seed: 1, epoch: 2 }));
  assert.is(a.passages.length, 6);
  assert.ok(a.passages.slice(1).every((p) => p[0] === 100 || p[0] === 101));
  assert.throws(() => sampleGroup({ ...example, negatives: [] }, 0, { nPassages: 2, seed: 1, epoch: 0 }), /query_id q7 has no negative passages but --train_n_passages 2 needs 1/);
  assert.equal(sampleGroup({ ...example, negatives: [] }, 0, { nPassages: 1, seed: 1, epoch: 0 }).passages, [[11]]);
  assert.throws(() => sampleGroup({ ...example, positives: [] }, 0, { nPassages: 1, seed: 1, epoch: 0 }), /query_id q7 has no positive passage/);
  assert.throws(() => sampleGroup(example, 0, { nPassages: 0, seed: 1, epoch: 0 }), /--train_n_passages must be a positive integer/);
});

test('checkExamples fails up front on queries that sampling could not serve', () => {
  const ok = { query: [1], positives: [[2]], negatives: [[3]] };
  checkExamples([ok, { ...ok, negatives: [] }], 1);
  assert.throws(() => checkExamples([ok, { ...ok, queryId: 'a', negatives: [] }, { ...ok, negatives: [] }], 2), /2 training queries have no negative passages \(query_id a, example 2\) but --train_n_passages 2 needs 1/);
  assert.throws(() => checkExamples([{ ...ok, positives: [] }], 1), /1 training queries have no positive passage \(example 0\)/);
});

test.run();

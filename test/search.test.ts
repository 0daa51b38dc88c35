// lib/search.ts: exact top-k against an argsort of Q·Pᵀ; shards read in blocks against the whole matrix
// loaded at once; ties across block and shard boundaries; bad shard files through the script.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { formatRanking, readEncoded, search, searchFiles, writeEncoded, writeRanking, type Encoded } from '../lib/search.ts';
import './helpers.ts';

function randomEncoded(seed: number, n: number, dim: number, prefix: string): Encoded {
  const r = new PyRandom(seed);
  return { ids: Array.from({ length: n }, (_, i) => `${prefix}${i}`), data: Float32Array.from({ length: n * dim }, () => r.random() * 2 - 1), dim };
}

/** The reference: every score in float64, sorted descending (index order on ties). */
function argsortReference(q: Encoded, p: Encoded, depth: number) {
  return q.ids.map((_, i) =>
    p.ids
      .map((id, j) => {
        let s = 0;
        for (let d = 0; d < q.dim; d++) s += q.data[i * q.dim + d] * p.data[j * p.dim + d];
        return { id, s, j };
      })
      .sort((a, b) => b.s - a.s || a.j - b.j)
      .slice(0, depth),
  );
}

test('search equals an argsort of Q·Pᵀ, and sharded equals unsharded', () => {
  const q = randomEncoded(1, 13, 16, 'q');
  const p = randomEncoded(2, 200, 16, 'd');
  const ref = argsortReference(q, p, 25);
  const whole = search(q, [p], 25, 5);
  whole.forEach((hits, i) => {
    assert.is(hits.length, 25);
    hits.forEach((h, r) => {
      assert.ok(Math.abs(h.score - ref[i][r].s) < 1e-5, `score q${i} rank ${r}`);
      const gap = Math.min(...[r - 1, r + 1].filter((x) => x >= 0 && x < 25).map((x) => Math.abs(ref[i][x].s - ref[i][r].s)));
      if (gap > 1e-4) assert.is(h.docid, ref[i][r].id, `docid q${i} rank ${r}`);
    });
  });
  const shard = (a: number, b: number): Encoded => ({ ids: p.ids.slice(a, b), data: p.data.slice(a * 16, b * 16), dim: 16 });
  const sharded = search(q, [shard(0, 70), shard(70, 71), shard(71, 200)], 25, -1);
  assert.equal(sharded.map((h) => h.map((x) => x.docid)), whole.map((h) => h.map((x) => x.docid)));
  sharded.forEach((h, i) => h.forEach((x, r) => assert.ok(Math.abs(x.score - whole[i][r].score) < 1e-6)));
});

test('ties rank the earlier passage first; depth larger than the corpus returns it all', () => {
  const q: Encoded = { ids: ['q'], data: Float32Array.from([1, 0]), dim: 2 };
  const p: Encoded = { ids: ['a', 'b', 'c', 'd'], data: Float32Array.from([0, 1, 2, 0, 2, 0, 1, 0]), dim: 2 };
  const shards = [{ ids: ['a', 'b'], data: p.data.slice(0, 4), dim: 2 }, { ids: ['c', 'd'], data: p.data.slice(4), dim: 2 }];
  assert.equal(search(q, shards, 10).map((h) => h.map((x) => x.docid)), [['b', 'c', 'd', 'a']]);
  assert.is(formatRanking(['q'], search(q, [p], 2), 'text'), 'q\tb\t2\nq\tc\t2\n');
  assert.is(formatRanking(['q'], search(q, [p], 2), 'trec'), 'q Q0 b 1 2 tevatron-ts\nq Q0 c 2 2 tevatron-ts\n');
});

test('overlapping shards: each docid listed once per query, with its best score, and each repeat reported', () => {
  const q: Encoded = { ids: ['q0', 'q1'], data: Float32Array.from([1, 0, 0, 1]), dim: 2 };
  // 'b' is in both shards (scores 2 and 3 for q0), 'a' twice in the first; every other docid once
  const s1: Encoded = { ids: ['a', 'b', 'a'], data: Float32Array.from([5, 0, 2, 1, 4, 0]), dim: 2 };
  const s2: Encoded = { ids: ['b', 'c'], data: Float32Array.from([3, 0, 1, 2]), dim: 2 };
  const repeats: string[] = [];
  const hits = search(q, [s1, s2], 10, 128, { onDuplicate: (qi, docid) => void repeats.push(`${q.ids[qi]}:${docid}`) });
  assert.equal(hits[0].map((h) => [h.docid, h.score]), [['a', 5], ['b', 3], ['c', 1]]);
  assert.equal(hits[1].map((h) => [h.docid, h.score]), [['c', 2], ['b', 1], ['a', 0]]);
  assert.equal(repeats.sort(), ['q0:a', 'q0:b', 'q1:a', 'q1:b']);
  assert.equal(search(q, [s1, s2], 2)[0].map((h) => h.docid), ['a', 'b'], 'depth counts distinct docids');
  // within one block, a repeat must not take the place of the next distinct docid (top-2 of a, a, b is a, b)
  const block: Encoded = { ids: ['a', 'a', 'b', 'c'], data: Float32Array.from([5, 0, 4, 0, 3, 0, 1, 0]), dim: 2 };
  for (const blockRows of [1, 2, 4]) assert.equal(search(q, [block], 2, 128, { blockRows })[0].map((h) => [h.docid, h.score]), [['a', 5], ['b', 3]], `blocks of ${blockRows}`);
});

test('encoded files round trip; mismatched ids and dimensions are clear errors', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'enc-'));
  const file = path.join(dir, 'corpus.safetensors');
  const e = randomEncoded(3, 5, 4, 'doc');
  writeEncoded(file, e);
  const back = readEncoded(file);
  assert.equal(back.ids, e.ids);
  assert.equal(Array.from(back.data), Array.from(e.data));
  writeFileSync(`${file}.ids`, 'a\nb\n');
  assert.throws(() => readEncoded(file), /lists 2 ids for 5 rows/);
  assert.throws(() => readEncoded(path.join(dir, 'missing')), /cannot read the encoded representations/);
  assert.throws(() => search(randomEncoded(4, 1, 3, 'q'), [e], 3), /has dimension 4, the queries 3/);
});

/** Rows of small integers: every product and sum is exact in float32, so equal scores are exact ties. */
function integerEncoded(seed: number, n: number, dim: number, prefix: string, range: number): Encoded {
  const r = new PyRandom(seed);
  return { ids: Array.from({ length: n }, (_, i) => `${prefix}${i}`), data: Float32Array.from({ length: n * dim }, () => r.randbelow(2 * range + 1) - range), dim };
}

test('shards read from files in blocks equal the whole matrix loaded at once and the argsort, ties included', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'search-'));
  const dim = 6;
  const q = integerEncoded(5, 9, dim, 'q', 2);
  const p = integerEncoded(6, 200, dim, 'd', 1); // scores in [-12, 12]: ~25 values over 200 passages, ties everywhere
  const bounds = [0, 70, 71, 133, 200];
  const files = bounds.slice(1).map((end, i) => {
    const file = path.join(dir, `p${i}.st`);
    writeEncoded(file, { ids: p.ids.slice(bounds[i], end), data: p.data.slice(bounds[i] * dim, end * dim), dim });
    return file;
  });
  for (const depth of [25, 500]) {
    const ref = argsortReference(q, p, depth).map((hits) => hits.map((h) => ({ docid: h.id, score: h.s, order: h.j })));
    assert.ok(ref.some((hits) => hits.some((h, r) => r > 0 && h.score === hits[r - 1].score)), 'the data has ties');
    assert.equal(search(q, [p], depth, -1, { blockRows: 1000 }), ref, `one block, depth ${depth}`);
    for (const blockRows of [1, 7, 64]) {
      let calls = 0;
      const hits = search(q, files, depth, 4, { blockRows, onProgress: () => calls++ });
      assert.equal(hits, ref, `files, blocks of ${blockRows}, depth ${depth}`);
      assert.is(calls, bounds.slice(1).reduce((n, end, i) => n + Math.ceil((end - bounds[i]) / blockRows), 0));
      assert.equal(await searchFiles(q, files, depth, 4, { blockRows }), ref, `files read ahead, blocks of ${blockRows}, depth ${depth}`);
    }
  }
});

test('a ranking written query by query equals the formatted one; bad shard files fail the script with one line', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'search-'));
  const q = randomEncoded(7, 3, 4, 'q');
  const p = randomEncoded(8, 10, 4, 'd');
  const hits = search(q, [p], 4);
  for (const format of ['text', 'trec'] as const) {
    writeRanking(path.join(dir, 'run.txt'), q.ids, hits, format);
    assert.is(readFileSync(path.join(dir, 'run.txt'), 'utf8'), formatRanking(q.ids, hits, format));
  }
  writeEncoded(path.join(dir, 'q.st'), q);
  writeEncoded(path.join(dir, 'p0.st'), p);
  const bytes = readFileSync(path.join(dir, 'p0.st'));
  writeFileSync(path.join(dir, 'p1.st'), bytes.subarray(0, bytes.length - 8)); // the last two values missing
  writeFileSync(path.join(dir, 'p1.st.ids'), readFileSync(path.join(dir, 'p0.st.ids')));
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/search.ts', '--query_reps', path.join(dir, 'q.st'), '--passage_reps', path.join(dir, 'p*.st'), '--save_ranking_to', path.join(dir, 'out.txt')], { encoding: 'utf8' });
  assert.is(r.status, 1);
  assert.match(r.stderr, /^search: \S*p1\.st: not a valid safetensors file \(.*past the end of the data.*\n$/);
  assert.is(r.stderr.trim().split('\n').length, 1);
});

test.run();

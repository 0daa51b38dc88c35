// Hard-negative mining (lib/mine.ts, scripts/mine.ts) on a hand-made ranking: which passages may be drawn
// is worked out by hand below; the draw order is random.Random(seed).sample's (PyRandom.sample, checked
// against CPython in sample.test.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { mineHardNegatives, type MineOptions } from '../lib/mine.ts';
import { rejects } from './helpers.ts';

const root = path.resolve('.');
const dir = mkdtempSync(path.join(tmpdir(), 'mine-'));
const file = (name: string, lines: unknown[]) => {
  const p = path.join(dir, name);
  writeFileSync(p, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return p;
};

const texts: Record<string, string> = {
  d0: 'the blue whale is the largest animal', // q1's positive
  d1: 'The Blue Whale, a marine mammal', // contains q1's answer (case and punctuation aside)
  d2: 'elephants are the largest land animals',
  d3: 'water boils at one hundred degrees', // q2's positive
  d4: 'ice melts at zero degrees',
  d5: 'sharks are fish',
  d6: 'giraffes are tall',
  d7: 'paris is the capital of france', // beyond q1's depth
  d8: 'Paris hosts the louvre', // contains q3's answer
  d9: 'the seine flows through paris', // contains q3's answer
  d10: 'a blue whale can dive deep', // contains q1's answer, but ranked for q2, which has no answers
  d11: 'steam is hot',
};
const passage = (d: string) => ({ docid: d, title: `title ${d}`, text: texts[d] });
const corpusRows = Object.keys(texts).map(passage);

const q1 = { query_id: 'q1', query: 'what is the largest animal', answers: ['blue whale'], positive_passages: [passage('d0')], negative_passages: [passage('d5')] };
const q2 = { query_id: 'q2', query: 'when does water boil', positive_passages: [passage('d3')], negative_passages: [] };
const q3 = { query_id: 'q3', query: 'capital of france', answers: ['Paris'], positive_passages: [passage('d7')], negative_passages: [passage('d4')] };
const q4 = { query_id: 'q4', query: 'how tall are giraffes', answers: ['tall'], positive_passages: [passage('d6')], negative_passages: [passage('d11')] };
const train = file('train.jsonl', [q1, q2, q3, q4]);
const corpus = file('corpus.jsonl', corpusRows);

// best first; q4 is not ranked
const ranked: Record<string, string[]> = {
  q1: ['d9', 'd0', 'd1', 'd2', 'd5', 'd6', 'd7', 'd8'],
  q2: ['d4', 'd3', 'd10', 'd11'],
  q3: ['d7', 'd8', 'd9'],
};
const textRanking = Object.entries(ranked).flatMap(([q, ds]) => ds.map((d, i) => `${q}\t${d}\t${(10 - i * 0.5).toFixed(1)}`));
const ranking = file('run.txt', textRanking);

// --skip_top 1 --depth 6: ranks 2..6. q1: d0 positive, d1 answer -> [d2, d5, d6] (d7, d8 beyond depth);
// q2: d3 positive -> [d10, d11] (no answers, so d10 stays); q3: d8, d9 answers -> nothing
const candidates = { q1: ['d2', 'd5', 'd6'], q2: ['d10', 'd11'] };
const options = (o: Partial<MineOptions> = {}): MineOptions => ({
  trainFile: train, ranking, corpus: [corpus], saveTo: path.join(dir, 'out.jsonl'), depth: 6, skipTop: 1, nSample: 2, seed: 7, keepNegatives: false, ...o,
});
const rows = (p: string) => readFileSync(p, 'utf8').trim().split('\n');

function expected(seed: number, nSample: number, keep: boolean): string[] {
  const rng = new PyRandom(seed);
  const draw = (ids: string[]) => rng.sample(ids, Math.min(nSample, ids.length)).map(passage);
  const d1 = draw(candidates.q1);
  const d2 = draw(candidates.q2);
  type Row = { negative_passages: { docid: string }[] };
  const own = (q: Row, drawn: { docid: string }[]) => (keep ? q.negative_passages.filter((p) => !drawn.some((d) => d.docid === p.docid)) : []);
  const out = [
    { ...q1, negative_passages: [...d1, ...own(q1, d1)] },
    { ...q2, negative_passages: [...d2, ...own(q2, d2)] },
    ...(keep ? [{ ...q3, negative_passages: own(q3, []) }, { ...q4, negative_passages: own(q4, []) }] : []),
  ];
  return out.map((r) => JSON.stringify(r));
}

test('exact rows: positives, answer-bearing passages, skip_top and depth excluded; the draw is random.Random(seed).sample', async () => {
  const s = await mineHardNegatives(options());
  assert.equal(rows(path.join(dir, 'out.jsonl')), expected(7, 2, false));
  assert.equal(s, { questions: 4, written: 2, dropped: 2, unranked: 1, hits: 10, positives: 2, answers: 3, mined: 4, short: 2, overlap: s.overlap, kept: 0, duplicates: 0 });
  const drawnQ1 = JSON.parse(rows(path.join(dir, 'out.jsonl'))[0]).negative_passages.map((p: { docid: string }) => p.docid);
  assert.is(s.overlap, drawnQ1.includes('d5') ? 1 : 0, "q1's own negative d5 drawn again counts as overlap");
  assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temporary file left');
});

test('every candidate when n_sample exceeds them; --keep_negatives appends the own negatives not drawn and keeps rows with no candidate', async () => {
  const all = await mineHardNegatives(options({ nSample: 30, saveTo: path.join(dir, 'all.jsonl') }));
  const got = rows(path.join(dir, 'all.jsonl')).map((l) => JSON.parse(l).negative_passages.map((p: { docid: string }) => p.docid).sort());
  assert.equal(got, [candidates.q1, candidates.q2].map((c) => [...c].sort()));
  assert.is(all.overlap, 1, 'd5 is drawn for q1 and was its own negative');
  const s = await mineHardNegatives(options({ keepNegatives: true, saveTo: path.join(dir, 'keep.jsonl') }));
  assert.equal(rows(path.join(dir, 'keep.jsonl')), expected(7, 2, true));
  assert.equal([s.written, s.dropped, s.unranked], [4, 0, 1]);
});

test('deterministic for a seed; another seed draws otherwise', async () => {
  await mineHardNegatives(options({ saveTo: path.join(dir, 'a.jsonl') }));
  await mineHardNegatives(options({ saveTo: path.join(dir, 'b.jsonl') }));
  await mineHardNegatives(options({ seed: 3, saveTo: path.join(dir, 'c.jsonl') }));
  assert.equal(rows(path.join(dir, 'a.jsonl')), rows(path.join(dir, 'b.jsonl')));
  assert.equal(rows(path.join(dir, 'c.jsonl')), expected(3, 2, false));
  assert.not.equal(rows(path.join(dir, 'c.jsonl')), rows(path.join(dir, 'a.jsonl')));
});

test('a TREC ranking, and a gzipped or JSON-array corpus (read back from a spill file), give the same file', async () => {
  const trec = file('run.trec', Object.entries(ranked).flatMap(([q, ds]) => ds.map((d, i) => `${q} Q0 ${d} ${i + 1} ${10 - i} x`)));
  const gz = path.join(dir, 'corpus.jsonl.gz');
  writeFileSync(gz, gzipSync(readFileSync(corpus)));
  const array = path.join(dir, 'corpus.json');
  writeFileSync(array, JSON.stringify(corpusRows));
  const want = expected(7, 2, false);
  const cases: [string, Partial<MineOptions>][] = [['trec', { ranking: trec }], ['gz', { corpus: [gz] }], ['array', { corpus: [array] }], ['two files', { corpus: [file('c1.jsonl', corpusRows.slice(0, 5)), gz] }]];
  for (const [name, o] of cases) {
    await mineHardNegatives(options({ ...o, saveTo: path.join(dir, `${name}.jsonl`) }));
    assert.equal(rows(path.join(dir, `${name}.jsonl`)), want, name);
  }
  assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'the spill file is deleted');
});

test('bad input: one line naming file:line and the fix; nothing written', async () => {
  const saveTo = path.join(dir, 'bad.jsonl');
  const bad = async (o: Partial<MineOptions>, pattern: RegExp, what: string) => {
    await rejects(mineHardNegatives(options({ saveTo, ...o })), pattern, what);
    assert.not.ok(existsSync(saveTo), `${what}: nothing at --save_to`);
    assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp')), [], `${what}: no temporary file`);
  };
  const withLine = (i: number, line: string) => file('bad-run.txt', textRanking.map((l, j) => (j === i ? line : l)));
  await bad({ ranking: withLine(2, 'q1 d1') }, /bad-run\.txt:3: expected 'qid docid score' or TREC/, 'two fields');
  await bad({ ranking: withLine(2, 'q1\td1\thigh') }, /bad-run\.txt:3: 'high' is not a number/, 'a score that is no number');
  await bad({ ranking: withLine(2, 'q9\td1\t9.0') }, /bad-run\.txt:3: query 'q9' is not in --train_file .*train\.jsonl/, 'a query the training file lacks');
  await bad({ ranking: withLine(3, 'q1\td99\t8.5') }, /bad-run\.txt:4: passage 'd99' is not in --corpus .*corpus\.jsonl; mine with the passages that were encoded and searched/, 'a passage the corpus lacks');
  await bad({ ranking: withLine(3, 'q1\td2\t9.9') }, /bad-run\.txt:4: query 'q1' is not best first/, 'scores out of order');
  await bad({ ranking: file('bad-run.txt', [...textRanking, 'q1\td11\t0.1']) }, /bad-run\.txt:16: query 'q1' appears again after other queries/, 'a query split in two');
  await bad({ trainFile: file('bad-train.jsonl', [q1, { ...q2, positive_passages: [{ text: 'x' }] }, q3, q4]) }, /bad-train\.jsonl:2: "positive_passages"\[0\] has no "docid"/, 'a positive without docid');
  await bad({ trainFile: file('bad-train.jsonl', [q1, { query: 'x' }]) }, /bad-train\.jsonl:2: a training row needs "query_id"/, 'a row without query_id');
  await bad({ corpus: [file('bad-corpus.jsonl', [...corpusRows.slice(0, 3), '{"docid": "d3", "text": ']) ] }, /bad-corpus\.jsonl:4: not valid JSON/, 'a broken corpus line');
});

// the script as a user runs it, and the mined file fed to train.ts unchanged
const run = (script: string, args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', script), ...args], { encoding: 'utf8' });

test('mine.ts prints the summary line; train.ts trains on its output unchanged', () => {
  const out = path.join(dir, 'script.jsonl');
  const r = run('mine.ts', ['--train_file', train, '--ranking', ranking, '--corpus', corpus, '--save_to', out, '--depth', '6', '--skip_top', '1', '--n_sample', '2', '--seed', '7']);
  assert.is(r.status, 0, r.stderr);
  assert.equal(rows(out), expected(7, 2, false));
  assert.match(r.stdout, /^mined 4 negatives for 2 of 4 questions into .*script\.jsonl \(2\.0 per question; 2 had fewer candidates than --n_sample\); of 10 hits at ranks 2-6, 2 were positives and 3 \(30\.0%\) contained an answer \(has_answer: false negatives\), all excluded; [01] mined negatives \(\d+\.\d%\) were already the file's own negatives; 2 questions dropped without negatives; 1 not in the ranking\n$/);
  const model = path.join(dir, 'model');
  const t = run('train.ts', ['--output_dir', model, '--model_name_or_path', path.join(root, 'test/fixtures/tiny-bert'), '--train_dir', out,
    '--per_device_train_batch_size', '2', '--train_n_passages', '3', '--q_max_len', '8', '--p_max_len', '12', '--max_steps', '2', '--report_to', 'none']);
  assert.is(t.status, 0, t.stderr);
  assert.ok(existsSync(path.join(model, 'model.safetensors')));
});

test('mine.ts: bad flags and bad input are one line on stderr, exit code 1', () => {
  const common = ['--train_file', train, '--corpus', corpus, '--save_to', path.join(dir, 'x.jsonl')];
  for (const [args, pattern] of [
    [[...common, '--ranking', ranking, '--depth', '3', '--skip_top', '3'], /^mine: --skip_top must be >= 0 and below --depth 3, got 3\n$/],
    [[...common], /^mine: --ranking is required/],
    [[...common, '--ranking', file('bad-run.txt', ['q1\td99\t1.0'])], /^mine: .*bad-run\.txt:1: passage 'd99' is not in --corpus/],
  ] as [string[], RegExp][]) {
    const r = run('mine.ts', args);
    assert.is(r.status, 1, r.stderr);
    assert.match(`${r.stderr.trim().split('\n').at(-1)}\n`, pattern, 'the last line says why');
    assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    assert.not.ok(existsSync(path.join(dir, 'x.jsonl')));
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();

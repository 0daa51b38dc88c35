import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { listDataFiles, loadTrainExamples, readRows, toTrainExample, type ExampleOptions } from '../lib/data/load.ts';
import { testUnless } from './helpers.ts';

// A stand-in tokenizer: one id per whitespace-separated word (its length × 100 + first char code % 100).
const words = (t: string) => t.split(/\s+/).filter(Boolean);
const opts: ExampleOptions = {
  tokenize: (t, max) => words(t).map((w) => w.length * 100 + (w.charCodeAt(0) % 100)).slice(0, max),
  qMaxLen: 4,
  pMaxLen: 6,
  separator: ' ',
};
const ids = (t: string, max: number) => opts.tokenize(t, max);

test('raw rows: query and passages tokenized, title + separator + text, truncated to the max lengths', () => {
  const ex = toTrainExample(
    {
      query_id: 7,
      query: 'who wrote the iliad and the odyssey',
      positive_passages: [{ docid: 'd1', title: 'Homer', text: 'Homer is the author of the Iliad' }],
      negative_passages: [{ docid: 'd2', text: 'Virgil wrote' }, { docid: 'd3', title: '', text: 'no title' }],
    },
    'f:1',
    opts,
  );
  assert.is(ex.queryId, '7');
  assert.equal(ex.query, ids('who wrote the iliad', 4));
  assert.equal(ex.positives, [ids('Homer Homer is the author of', 6)]);
  assert.equal(ex.negatives, [ids('Virgil wrote', 6), ids(' no title', 6)]);
  const sep = toTrainExample({ query: 'q', positive_passages: [{ title: 'T', text: 'x' }] }, 'f:1', { ...opts, separator: ' [SEP] ' });
  assert.equal(sep.positives, [ids('T [SEP] x', 6)]);
});

test('pre-tokenized rows keep their ids (truncated)', () => {
  const ex = toTrainExample({ query: [5, 6, 7, 8, 9], positives: [[1, 2]], negatives: [[3], [4, 5, 6, 7, 8, 9, 10]] }, 'f:1', opts);
  assert.equal(ex, { queryId: undefined, query: [5, 6, 7, 8], positives: [[1, 2]], negatives: [[3], [4, 5, 6, 7, 8, 9]] });
});

test('bad rows name the file, the line and the field', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'load-'));
  const file = path.join(dir, 'bad.jsonl');
  writeFileSync(file, '{"query": "a", "positive_passages": [{"text": "x"}]}\n\n{"query": "b", "positive_passages": [{"title": "t"}]}\n');
  assert.throws(() => loadTrainExamples([file], opts), /bad\.jsonl:3: "positive_passages"\[0\] must be an object with a string "text"/);
  writeFileSync(file, '{"query": "a", "positive_passages": []}\n{"query": \n');
  assert.throws(() => loadTrainExamples([file], opts), /bad\.jsonl:2: not valid JSON/);
  assert.throws(() => toTrainExample({ query: 3, positive_passages: [] }, 'f:9', opts), /f:9: "query" must be a string/);
  assert.throws(() => toTrainExample({ query: 'q' }, 'f:9', opts), /f:9: "positive_passages" is missing/);
  assert.throws(() => listDataFiles(path.join(dir, 'nope')), /--train_dir .*nope: no such file or directory/);
});

test('a directory of .json (array), .jsonl and .jsonl.gz files, read in name order', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'load-'));
  const row = (q: string) => ({ query: q, positive_passages: [{ text: q }], negative_passages: [] });
  writeFileSync(path.join(dir, 'a.json'), JSON.stringify([row('one'), row('two')]));
  writeFileSync(path.join(dir, 'b.jsonl.gz'), gzipSync(JSON.stringify(row('three')) + '\n'));
  writeFileSync(path.join(dir, 'c.jsonl'), JSON.stringify(row('four')) + '\n');
  writeFileSync(path.join(dir, 'notes.txt'), 'ignored');
  const files = listDataFiles(dir);
  assert.equal(files.map((f) => path.basename(f)), ['a.json', 'b.jsonl.gz', 'c.jsonl']);
  assert.equal(loadTrainExamples(files, opts).map((e) => e.query), [ids('one', 4), ids('two', 4), ids('three', 4), ids('four', 4)]);
  assert.is(readRows(files[0])[1].where, `${files[0]}: item 2`);
});

test('readRows refuses a file over its limit (plain, or once gunzipped) with a one-line fix, before holding it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'load-'));
  const text = JSON.stringify({ query: 'q', positive_passages: [{ text: 'x'.repeat(100) }] }) + '\n';
  const plain = path.join(dir, 'rows.jsonl');
  writeFileSync(plain, text.repeat(20));
  const gz = path.join(dir, 'rows.jsonl.gz');
  writeFileSync(gz, gzipSync(text.repeat(20)));
  assert.is(readRows(plain, 4096).length, 20);
  assert.is(readRows(gz, 4096).length, 20);
  for (const f of [plain, gz]) {
    assert.throws(() => readRows(f, 1024), (e: Error) => e.message === `${f}: over 0 MB, too large to read at once; stream it (streamRows in lib/data/stream.ts), or split it into smaller files`);
  }
});

const NQ = path.resolve('../shared/data/nq/train.jsonl');
testUnless(existsSync(NQ) ? null : `${NQ} is absent`, 'the shared NQ training file loads: every query has 1 positive and up to 10 negatives', () => {
  const examples = loadTrainExamples([NQ], { ...opts, qMaxLen: 32, pMaxLen: 128 });
  assert.is(examples.length, 2106);
  assert.ok(examples.every((e) => e.positives.length === 1 && e.negatives.length <= 10));
  assert.is(examples.filter((e) => e.negatives.length < 10).length, 18);
});

test.run();

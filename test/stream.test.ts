// The streaming reader (lib/data/stream.ts) at every chunk boundary: reads of 1..n bytes split lines, CRLF
// pairs and multi-byte UTF-8 characters, and the lines must still equal a whole-file split (the reference);
// gzip gives the same lines; a bad line names file:line; a JSON array above the limit is refused with the fix;
// parquet row groups come back in order, equal to the JSON Lines rows (written by Python's json).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { blockLineRanges, openParquet, readLineBlocks, readLines, streamRows, type Line, type StreamOptions } from '../lib/data/stream.ts';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/hub-dataset');
let work: string;
test.before(() => {
  work = mkdtempSync(path.join(os.tmpdir(), 'tevatron-stream-'));
});
test.after(() => rmSync(work, { recursive: true, force: true }));

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function write(name: string, content: string | Buffer): string {
  const file = path.join(work, name);
  writeFileSync(file, content);
  return file;
}

/** The reference: the whole text split at once (what a reader without a size limit must reproduce). */
function referenceLines(text: string): Line[] {
  const parts = text.split('\n');
  if (parts.at(-1) === '') parts.pop(); // a final newline ends the last line, it does not start another
  return parts.map((t, i) => ({ text: t.endsWith('\r') ? t.slice(0, -1) : t, line: i + 1 }));
}

// 2-, 3- and 4-byte UTF-8 characters, an empty line, CRLF, a lone CR inside a line, no final newline
const TEXT = 'café au lait\r\n\nnaïve 日本語 text\n😀 emoji 😀\r\nx\ra lone CR\n\r\n{"last": "line without newline é"}';

test('lines split across reads of every size equal the whole-file split (line numbers count empty lines)', async () => {
  const file = write('mixed.txt', TEXT);
  const want = referenceLines(TEXT);
  assert.is(want.length, 7);
  assert.is(want[5].text, '', 'a CRLF-only line is an empty line');
  for (let chunkSize = 1; chunkSize <= 40; chunkSize++) {
    assert.equal(await collect(readLines(file, { chunkSize })), want, `chunkSize ${chunkSize}`);
  }
  assert.equal(await collect(readLines(file)), want, 'default chunk size');
});

test('multi-byte characters split between reads stay whole (no U+FFFD)', async () => {
  const lines = Array.from({ length: 30 }, (_, i) => '日本😀é'.repeat(1 + (i % 4)) + 'ab'.slice(0, i % 3));
  const text = lines.join('\n') + '\n';
  const file = write('utf8.txt', text);
  for (const chunkSize of [1, 2, 3, 5, 7, 11]) {
    const got = await collect(readLines(file, { chunkSize }));
    assert.equal(got.map((l) => l.text), lines, `chunkSize ${chunkSize}`);
    assert.not.ok(got.some((l) => l.text.includes('\ufffd')));
  }
});

test('blocks hold whole lines and their first line number, and cover the file byte for byte', async () => {
  const text = Array.from({ length: 50 }, (_, i) => `line ${i} ${'x'.repeat(i % 13)}`).join('\n');
  const file = write('blocks.txt', text);
  for (const chunkSize of [1, 4, 16, 100, 1 << 20]) {
    const blocks = await collect(readLineBlocks(file, { chunkSize }));
    assert.is(Buffer.concat(blocks.map((b) => b.bytes)).toString('utf8'), text);
    let line = 1;
    for (const b of blocks) {
      assert.is(b.firstLine, line);
      const s = b.bytes.toString('utf8');
      assert.ok(b === blocks.at(-1) || s.endsWith('\n'), 'only the last block may end without a newline');
      line += b.lines;
    }
    assert.is(line - 1, 50);
  }
});

test("a line's byte range, offset by its block's start, reads its text back from the file (BOM and CR left out)", async () => {
  const file = write('ranges.txt', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(TEXT)]));
  const bytes = readFileSync(file);
  const want = referenceLines(TEXT);
  for (const chunkSize of [1, 2, 3, 5, 8, 13, 64]) {
    const got: Line[] = [];
    let blockStart = 0;
    for await (const block of readLineBlocks(file, { chunkSize })) {
      for (const l of blockLineRanges(block)) {
        assert.is(bytes.toString('utf8', blockStart + l.start, blockStart + l.end), l.text, `chunkSize ${chunkSize}, line ${l.line}`);
        got.push({ text: l.text, line: l.line });
      }
      blockStart += block.bytes.length;
    }
    assert.equal(got, want, `chunkSize ${chunkSize}`);
  }
});

test('gzip: the same lines as the plain file, at small reads too', async () => {
  const file = write('mixed.txt.gz', gzipSync(TEXT));
  for (const chunkSize of [1, 3, 64, 1 << 20]) assert.equal(await collect(readLines(file, { chunkSize })), referenceLines(TEXT), `chunkSize ${chunkSize}`);
  const broken = write('broken.jsonl.gz', gzipSync('{"a": 1}\n'.repeat(1000)).subarray(0, 40));
  try {
    await collect(readLines(broken));
    assert.unreachable('a truncated gzip file must fail');
  } catch (e) {
    assert.match((e as Error).message, `${broken}: cannot read (`);
  }
});

test('JSON Lines rows: blank lines skipped, where = file:line; a bad line fails with file:line, plain and gzipped', async () => {
  const text = '{"q": "a"}\r\n\n  \n{"q": "é"}\n{"q": \n{"q": "never reached"}\n';
  for (const [name, content] of [['rows.jsonl', text], ['rows.jsonl.gz', gzipSync(text)]] as const) {
    const file = write(name, content);
    const got: { row: unknown; where: string }[] = [];
    try {
      for await (const r of streamRows(file, { chunkSize: 3 })) got.push(r);
      assert.unreachable('line 5 is not JSON');
    } catch (e) {
      assert.match((e as Error).message, `${file}:5: not valid JSON (`);
    }
    assert.equal(got, [{ row: { q: 'a' }, where: `${file}:1` }, { row: { q: 'é' }, where: `${file}:4` }]);
  }
});

test('a JSON array: rows numbered `file: item N`; above the size limit refused with the conversion to JSON Lines', async () => {
  const rows = Array.from({ length: 20 }, (_, i) => ({ query: `q${i}`, positive_passages: [{ text: 'é'.repeat(i) }] }));
  const file = write('rows.json', '\ufeff \n' + JSON.stringify(rows, null, 2));
  const o: StreamOptions = { chunkSize: 5, maxArrayBytes: 1 << 20 };
  assert.equal(await collect(streamRows(file, o)), rows.map((row, i) => ({ row, where: `${file}: item ${i + 1}` })));
  const gz = write('rows.json.gz', gzipSync(JSON.stringify(rows)));
  assert.equal((await collect(streamRows(gz, o))).map((r) => r.row), rows);
  for (const f of [file, gz]) {
    try {
      await collect(streamRows(f, { maxArrayBytes: 200 }));
      assert.unreachable('over the limit');
    } catch (e) {
      const msg = (e as Error).message;
      assert.match(msg, `${f}: a JSON array over`);
      assert.match(msg, `convert it to JSON Lines (one row per line), e.g. jq -c '.[]' ${f} > ${path.join(work, 'rows')}.jsonl`);
      assert.not.match(msg, '\n');
    }
  }
});

test('parquet, read row group by row group: the rows of the JSON Lines file, in order, numbered `file: row N`', async () => {
  const reference = (await collect(streamRows(path.join(FIX, 'nq-tiny.jsonl')))).map((r) => r.row);
  const grouped = path.join(FIX, 'nq-tiny-groups.parquet');
  const pq = await openParquet(grouped);
  try {
    assert.equal(pq.groups, [[0, 5], [5, 10], [10, 12]], 'the fixture has three row groups');
    assert.equal((await pq.read(5, 10)).map((r) => r.row), reference.slice(5, 10));
  } finally {
    await pq.close();
  }
  const rows = await collect(streamRows(grouped));
  assert.equal(rows.map((r) => r.row), reference);
  assert.is(rows[7].where, `${grouped}: row 8`);
  assert.equal((await collect(streamRows(path.join(FIX, 'nq-tiny.parquet')))).map((r) => r.row), reference, 'one row group');
  const bad = write('bad.parquet', readFileSync(grouped).subarray(100));
  try {
    await collect(streamRows(bad));
    assert.unreachable('not a parquet file');
  } catch (e) {
    assert.match((e as Error).message, `${bad}: cannot read as parquet (`);
  }
});

test.run();

// The BERT tokenizer against independent references: hand-checked ids of the real bert-base-uncased
// vocabulary, ids made by transformers' BertTokenizer (test/fixtures/tokenizer/make_fixture.py) on real
// NQ passages and queries and on tricky strings, a tokenizer.json written by transformers, and the
// files transformers writes for a saved tokenizer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonTokenizer, WordPieceTokenizer, loadTokenizer, parseVocab, saveTokenizer, wordPieceOptionsFromConfig, type Tokenizer } from '../lib/tokenizer.ts';
import { testUnless } from './helpers.ts';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const FIXTURES = path.join(ROOT, 'test/fixtures/tokenizer');
const DATA = path.resolve(ROOT, '../shared/data');
const BERT_DIR = path.join(DATA, 'bert-base-uncased');
const VOCAB = path.join(BERT_DIR, 'vocab.txt');
const CORPUS = path.join(DATA, 'nq/corpus.jsonl');
const QUERIES = path.join(DATA, 'nq/dev.queries.jsonl');

interface Fixture {
  passages: { line: number; ids: number[] }[];
  queries: { line: number; ids: number[] }[];
  tricky: string[];
  variants: { config: Record<string, unknown>; ids: number[][]; tokens: string[][] }[];
  tiny: { strings: string[]; ids: number[][] };
}
const fixture: Fixture = JSON.parse(readFileSync(path.join(FIXTURES, 'bert-base-uncased.json'), 'utf8'));

/** A test that needs the shared data; without it, says why it did not run. */
function withData(name: string, files: string[], fn: () => void | Promise<void>): void {
  const missing = files.filter((f) => !existsSync(f));
  testUnless(missing.length ? `${missing.join(', ')} absent` : null, name, fn);
}

/** Awaits a promise that must fail with a message matching `pattern`. */
async function rejects(fn: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.match((e as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected an error matching ${pattern}`);
}

const tmpDirs: string[] = [];
const tmpDir = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'tokenizer-test-'));
  tmpDirs.push(d);
  return d;
};
test.after(() => tmpDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const readJsonl = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const bertText = () => readFileSync(VOCAB, 'utf8');
let bertCache: Tokenizer | undefined;
const bert = async () => (bertCache ??= await loadTokenizer(BERT_DIR));

withData('bert-base-uncased: special ids come from the vocabulary; hand-checked words, accents, punctuation, CJK, ## pieces', [VOCAB], async () => {
  const t = await bert();
  assert.is(t.kind, 'wordpiece');
  assert.equal(t.special, { cls: 101, sep: 102, pad: 0, unk: 100, mask: 103 });
  assert.is(t.vocabSize, 30522);
  assert.is(t.tokenToId('hello'), 7592);
  assert.is(t.idToToken(7592), 'hello');
  assert.equal(t.encode('hello'), [7592]);
  assert.equal(t.encode('Hello'), [7592]); // lower-cased
  assert.equal(t.tokenize('Café'), ['cafe']); // accent stripped
  assert.equal(t.encode('Café'), t.encode('cafe'));
  assert.equal(t.tokenize('Hello, world!'), ['hello', ',', 'world', '!']);
  assert.equal(t.tokenize("don't"), ['don', "'", 't']);
  assert.equal(t.tokenize('a$b^c`d'), ['a', '$', 'b', '^', 'c', '`', 'd']); // ASCII symbols outside P* count as punctuation
  assert.equal(t.encode('😀'), [100]); // not in the vocabulary
  assert.equal(t.encode('x😀'), [100]); // one unknown piece makes the whole word [UNK]
  assert.equal(t.encode('a'.repeat(101)), [100]); // longer than max_input_chars_per_word
  assert.is(t.encode('a'.repeat(100)).includes(100), false);
  assert.equal(t.tokenize('中文'), ['中', '文']); // each CJK ideograph is a word
  assert.equal(t.tokenize('unaffable'), ['una', '##ffa', '##ble']);
  assert.equal(t.tokenize('he\u0000ll\u200bo\ufffd wo\u0007rld'), ['hello', 'world']); // control characters vanish inside a word
  assert.equal(t.encode(''), []);
  assert.equal(t.encode(' \t\n'), []);
});

withData('special tokens in the text stay whole, as transformers splits on them before tokenizing', [VOCAB], async () => {
  const t = await bert();
  const sep = t.attribute('sep_token');
  assert.is(sep, '[SEP]');
  assert.is(t.attribute('sep_token_id'), 102);
  assert.is(t.attribute('bos_token'), undefined);
  assert.is(t.attribute(' '), undefined); // Tevatron's default separator is the string itself
  assert.equal(t.encode(`title ${sep} text`), [t.tokenToId('title')!, 102, t.tokenToId('text')!]);
  assert.equal(t.tokenize('x[SEP]y [sep] [CLS][MASK]'), ['x', '[SEP]', 'y', '[', 'sep', ']', '[CLS]', '[MASK]']);
});

withData('ids equal transformers BertTokenizer on 200 NQ passages and 100 queries', [VOCAB, CORPUS, QUERIES], async () => {
  const t = await bert();
  const corpus = readJsonl(CORPUS);
  const queries = readJsonl(QUERIES);
  assert.is(fixture.passages.length, 200);
  for (const { line, ids } of fixture.passages) {
    const row = corpus[line];
    assert.equal(t.encode(`${row.title} ${row.text}`), ids, `corpus.jsonl line ${line}`);
  }
  assert.is(fixture.queries.length, 100);
  for (const { line, ids } of fixture.queries) assert.equal(t.encode(queries[line].query), ids, `dev.queries.jsonl line ${line}`);
});

withData('ids and tokens equal transformers on tricky strings, under each BertTokenizer setting', [VOCAB], () => {
  const vocab = bertText();
  assert.ok(fixture.variants.length >= 8);
  for (const { config, ids, tokens } of fixture.variants) {
    const t = WordPieceTokenizer.fromVocab(vocab, wordPieceOptionsFromConfig(config));
    fixture.tricky.forEach((s, i) => {
      const what = `${JSON.stringify(config)} on ${JSON.stringify(s.slice(0, 40))}`;
      assert.equal(t.tokenize(s), tokens[i], what);
      assert.equal(t.encode(s), ids[i], what);
    });
  }
});

test('a tokenizer.json written by transformers loads through @huggingface/tokenizers with the same ids as vocab.txt', async () => {
  const dir = path.join(FIXTURES, 'tiny-json');
  const viaJson = await loadTokenizer(dir);
  assert.is(viaJson.kind, 'tokenizer.json');
  const viaVocab = WordPieceTokenizer.fromVocab(readFileSync(path.join(FIXTURES, 'tiny-vocab.txt'), 'utf8'));
  // The tiny vocabulary puts the specials away from BERT's usual ids.
  assert.equal(viaJson.special, { cls: 7, sep: 8, pad: 0, unk: 5, mask: 9 });
  assert.equal(viaVocab.special, viaJson.special);
  assert.is(viaJson.vocabSize, 33);
  assert.is(viaVocab.vocabSize, 33);
  fixture.tiny.strings.forEach((s, i) => {
    assert.equal(viaJson.encode(s), fixture.tiny.ids[i], `tokenizer.json on ${JSON.stringify(s)}`);
    assert.equal(viaVocab.encode(s), fixture.tiny.ids[i], `vocab.txt on ${JSON.stringify(s)}`);
    assert.equal(viaJson.tokenize(s), viaVocab.tokenize(s));
  });
  assert.is(viaJson.attribute('sep_token'), '[SEP]');
  assert.is(viaJson.idToToken(8), '[SEP]');
});

test('with both vocab.txt and tokenizer.json, vocab.txt is used after checking that the two agree', async () => {
  const dir = tmpDir();
  copyFileSync(path.join(FIXTURES, 'tiny-json/tokenizer.json'), path.join(dir, 'tokenizer.json'));
  copyFileSync(path.join(FIXTURES, 'tiny-vocab.txt'), path.join(dir, 'vocab.txt'));
  assert.is((await loadTokenizer(dir)).kind, 'wordpiece');
  assert.is((await loadTokenizer(dir, { prefer: 'tokenizer.json' })).kind, 'tokenizer.json');
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ do_lower_case: false }));
  await rejects(() => loadTokenizer(dir), /tokenizer\.json: lowercase is true but do_lower_case is false .*make tokenizer_config\.json agree/);
  writeFileSync(path.join(dir, 'tokenizer_config.json'), '{}');
  writeFileSync(path.join(dir, 'vocab.txt'), readFileSync(path.join(FIXTURES, 'tiny-vocab.txt'), 'utf8').replace('hello\n', 'hi\n'));
  await rejects(() => loadTokenizer(dir), /token "hello" has id 1, but no id in .*vocab\.txt; the two vocabularies differ/);
});

withData('saveTokenizer writes what transformers writes, and loads back with the same ids', [VOCAB, CORPUS], async () => {
  const t = await bert();
  const dir = path.join(tmpDir(), 'model');
  await saveTokenizer(t, dir);
  assert.equal(readdirSync(dir).sort(), ['special_tokens_map.json', 'tokenizer_config.json', 'vocab.txt']); // no temporary files left
  assert.equal(parseVocab(readFileSync(path.join(dir, 'vocab.txt'), 'utf8')), parseVocab(bertText()));
  const config = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  assert.is(config.tokenizer_class, 'BertTokenizer');
  assert.is(config.do_lower_case, true);
  assert.is(config.strip_accents, null);
  assert.is(config.tokenize_chinese_chars, true);
  assert.is(config.sep_token, '[SEP]');
  assert.equal(config.added_tokens_decoder['102'], { content: '[SEP]', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true });
  assert.match(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'), /"model_max_length": 1000000000000000019884624838656,/);
  assert.equal(JSON.parse(readFileSync(path.join(dir, 'special_tokens_map.json'), 'utf8')), { cls_token: '[CLS]', mask_token: '[MASK]', pad_token: '[PAD]', sep_token: '[SEP]', unk_token: '[UNK]' });
  const back = await loadTokenizer(dir);
  const corpus = readJsonl(CORPUS).slice(0, 50);
  for (const row of corpus) assert.equal(back.encode(row.text), t.encode(row.text));

  // Settings survive the round trip.
  const cased = WordPieceTokenizer.fromVocab(bertText(), { doLowerCase: false, neverSplit: ['[unused1]'], modelMaxLength: 512 });
  const casedDir = path.join(tmpDir(), 'cased');
  await saveTokenizer(cased, casedDir);
  const casedBack = (await loadTokenizer(casedDir)) as WordPieceTokenizer;
  assert.is(casedBack.doLowerCase, false);
  assert.equal(casedBack.neverSplit, ['[unused1]']);
  assert.is(casedBack.modelMaxLength, 512);
  assert.equal(casedBack.encode('Café [unused1]'), cased.encode('Café [unused1]'));

  // A stale tokenizer.json would take precedence over the new vocab.txt in Python.
  writeFileSync(path.join(casedDir, 'tokenizer.json'), '{}');
  await rejects(() => saveTokenizer(cased, casedDir), /tokenizer\.json: would shadow the saved vocab\.txt .*remove it or save into another directory/);
});

test('a tokenizer.json tokenizer saves its files unchanged and loads back', async () => {
  const t = await loadTokenizer(path.join(FIXTURES, 'tiny-json'));
  const dir = path.join(tmpDir(), 'saved');
  await saveTokenizer(t, dir);
  assert.is(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'), readFileSync(path.join(FIXTURES, 'tiny-json/tokenizer.json'), 'utf8'));
  const back = await loadTokenizer(dir);
  assert.equal(back.encode('Hello, world! unaffable'), t.encode('Hello, world! unaffable'));
});

test('the word cache changes nothing: a 2-entry cache gives the ids of a large one', () => {
  const vocab = readFileSync(path.join(FIXTURES, 'tiny-vocab.txt'), 'utf8');
  const big = WordPieceTokenizer.fromVocab(vocab);
  const small = WordPieceTokenizer.fromVocab(vocab, { cacheSize: 2 });
  const text = 'hello world hello worlds the un unaffable cafe café, running well-known abc 中文 hello';
  for (let k = 0; k < 3; k++) assert.equal(small.encode(text), big.encode(text));
  assert.equal(big.encode(text), big.encode(text));
});

test('vocab.txt lines as Python reads them: \\n, \\r\\n and \\r end a line; a final newline adds no token', () => {
  assert.equal(parseVocab('a\nb\r\nc\rd'), ['a', 'b', 'c', 'd']);
  assert.equal(parseVocab('a\nb\n'), ['a', 'b']);
  assert.equal(parseVocab('a\n\nb\n'), ['a', '', 'b']);
});

test('mistakes are errors that name the file, the place and the fix', async () => {
  assert.throws(() => WordPieceTokenizer.fromVocab('[PAD]\n[UNK]\n[SEP]\n[MASK]\nhello\n', { source: 'my/vocab.txt' }), /my\/vocab\.txt: the cls_token "\[CLS\]" is not in the vocabulary \(5 tokens\); add it .* "cls_token" in tokenizer_config\.json/);
  const custom = WordPieceTokenizer.fromVocab('<pad>\n<unk>\n<s>\n</s>\n<mask>\nhello\n', { specialTokens: { pad: '<pad>', unk: '<unk>', cls: '<s>', sep: '</s>', mask: '<mask>' } });
  assert.equal(custom.special, { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 });
  assert.equal(custom.encode('hello </s> bye'), [5, 3, 1]);
  assert.throws(() => wordPieceOptionsFromConfig({ do_lower_case: 'yes' }, 'm/tokenizer_config.json'), /m\/tokenizer_config\.json: do_lower_case must be true or false, got "yes"/);
  assert.throws(() => wordPieceOptionsFromConfig({ never_split: 'x' }, 'c.json'), /c\.json: never_split must be a list of strings or null/);
  assert.throws(() => WordPieceTokenizer.fromVocab(''), /the vocabulary is empty/);
  assert.throws(() => new JsonTokenizer('{"model": ', {}, 'x/tokenizer.json'), /x\/tokenizer\.json: not valid JSON/);
  const tiny = WordPieceTokenizer.fromVocab(readFileSync(path.join(FIXTURES, 'tiny-vocab.txt'), 'utf8'));
  assert.throws(() => tiny.encode(null as unknown as string), /expected a string to tokenize, got null/);

  const missing = path.join(tmpDir(), 'nope');
  await rejects(() => loadTokenizer(missing), /nope: no such tokenizer directory; pass a directory holding vocab\.txt or tokenizer\.json/);
  const empty = tmpDir();
  await rejects(() => loadTokenizer(empty), /has neither vocab\.txt nor tokenizer\.json/);
  writeFileSync(path.join(empty, 'vocab.txt'), readFileSync(path.join(FIXTURES, 'tiny-vocab.txt')));
  writeFileSync(path.join(empty, 'tokenizer_config.json'), '{"do_lower_case": tru');
  await rejects(() => loadTokenizer(empty), /tokenizer_config\.json: not a JSON object/);
  writeFileSync(path.join(empty, 'tokenizer_config.json'), '{"cls_token": "<s>"}');
  await rejects(() => loadTokenizer(empty), /vocab\.txt: the cls_token "<s>" is not in the vocabulary/);
  // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
  writeFileSync(path.join(empty, 'special_tokens_map.json'), '{"cls_token": {"content": "[CLS]", "lstrip": false}}');
  assert.is((await loadTokenizer(empty)).special.cls, 7);
});

test.run();

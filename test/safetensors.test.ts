// safetensors (ts/train/safetensors.ts): round trips of every dtype, a file checked byte by
// byte, a cross-check against an independent Python writer/reader (struct + json, per the
// Hugging Face spec), the widened dtypes, and every kind of corrupt file.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensor } from '../ts/graph/creation.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { transpose } from '../ts/graph/ops/views.js';
import {
  encodeSafetensors, decodeSafetensors, saveSafetensors, loadSafetensors, readSafetensorsHeader, parseSafetensorsHeader,
} from '../ts/train/safetensors.js';

const PY = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const dir = mkdtempSync(join(tmpdir(), 'vlmkit-st-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function sample(): Map<string, Tensor> {
  return new Map<string, Tensor>([
    ['u8', tensor(Uint8Array.from([0, 1, 127, 255, 9, 3]), [2, 3])],
    ['f32', tensor(Float32Array.from([1.5, -0, Infinity, NaN, 1e-40, -3.25e38]), [3, 2])],
    ['f64', tensor(Float64Array.from([Math.PI, -Number.MIN_VALUE, Number.MAX_VALUE, NaN]), [2, 1, 2])],
    ['i32', tensor(Int32Array.from([-2147483648, 2147483647, 0, -1, 7]), [5])],
    ['scalar', tensor(Float64Array.from([42.5]), [])],
    ['empty', tensor(new Float32Array(0), [0, 3])],
  ]);
}

function bitsEqual(a: Tensor, b: Tensor): boolean {
  if (a.dtype !== b.dtype || a.shape.join() !== b.shape.join()) return false;
  const x = a.toArray(), y = b.toArray();
  const bx = new Uint8Array(x.buffer, x.byteOffset, x.byteLength), by = new Uint8Array(y.buffer, y.byteOffset, y.byteLength);
  return bx.length === by.length && bx.every((v, i) => v === by[i]);
}

test('round trip of every dtype, bit for bit (file and memory), with metadata', (t) => {
  const src = sample();
  const path = join(dir, 'all.safetensors');
  const w = saveSafetensors(path, src, { format: 'pt', note: 'héllo' });
  const r = loadSafetensors(path);
  t.is(w.bytes, readFileSync(path).length);
  t.is(r.sha256, w.sha256);
  t.deepEqual(r.metadata, { format: 'pt', note: 'héllo' });
  t.deepEqual([...r.tensors.keys()].sort(), [...src.keys()].sort());
  for (const [k, v] of src) t.true(bitsEqual(r.tensors.get(k)!, v), k);
  const m = decodeSafetensors(encodeSafetensors(src, { format: 'pt', note: 'héllo' }));
  for (const [k, v] of src) t.true(bitsEqual(m.tensors.get(k)!, v), k);
  t.deepEqual(Buffer.from(encodeSafetensors(src, { format: 'pt', note: 'héllo' })), readFileSync(path));
  // Non-contiguous input is written row-major.
  const tr = transpose(tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]));
  t.false(tr.isContiguous);
  const back = decodeSafetensors(encodeSafetensors({ x: tr })).tensors.get('x')!;
  t.deepEqual(back.shape, [3, 2]);
  t.deepEqual([...back.toArray()], [1, 4, 2, 5, 3, 6]);
});

test('a file checked by hand: length, padded header, little-endian data', (t) => {
  const bytes = encodeSafetensors({ a: tensor(Float32Array.from([1, 2]), [2]) });
  const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  t.is(json.length, 54);
  const n = 56;  // padded to 8 + 56 = 64
  t.deepEqual([...bytes.subarray(0, 8)], [56, 0, 0, 0, 0, 0, 0, 0]);
  t.is(new TextDecoder().decode(bytes.subarray(8, 8 + n)), json + '  ');
  t.deepEqual([...bytes.subarray(8 + n)], [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40]);
  t.is(bytes.length, 8 + n + 8);
  // Metadata first; an exact multiple of 8 gets no padding.
  const b2 = encodeSafetensors({ b: tensor(Uint8Array.from([7]), [1]) }, { k: 'vv' });
  const h2 = '{"__metadata__":{"k":"vv"},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}';
  const len2 = Number(new DataView(b2.buffer, b2.byteOffset).getBigUint64(0, true));
  t.is(len2 % 8, 0);
  t.is(new TextDecoder().decode(b2.subarray(8, 8 + len2)).trimEnd(), h2);
  t.is(b2[8 + len2], 7);
});

test('largest item size first so every tensor is aligned; header in data order', (t) => {
  const bytes = encodeSafetensors(new Map([
    ['a_u8', tensor(Uint8Array.from([1, 2, 3]), [3])],
    ['b_f32', tensor(Float32Array.from([1]), [1])],
    ['c_f64', tensor(Float64Array.from([2]), [1])],
    ['d_i32', tensor(Int32Array.from([3]), [1])],
  ]));
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  t.is((8 + n) % 8, 0);
  const h = parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n);
  t.deepEqual(h.entries.map((e) => [e.name, ...e.dataOffsets]), [['c_f64', 0, 8], ['b_f32', 8, 12], ['d_i32', 12, 16], ['a_u8', 16, 19]]);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  t.true(text.indexOf('c_f64') < text.indexOf('b_f32') && text.indexOf('d_i32') < text.indexOf('a_u8'));
});

// An independent writer and reader, from the spec, in Python (struct + json only).
const PY_SCRIPT = String.raw`
import json, struct, sys
mode, path = sys.argv[1], sys.argv[2]
if mode == 'write':
    # the sample() tensors of the test, in the TS writer's order (item size, then insertion)
    f32 = struct.pack('<6f', 1.5, -0.0, float('inf'), float('nan'), 1e-40, -3.25e38)
    f64 = struct.pack('<4d', 3.141592653589793, -5e-324, 1.7976931348623157e308, float('nan'))
    i32 = struct.pack('<5i', -2147483648, 2147483647, 0, -1, 7)
    u8 = bytes([0, 1, 127, 255, 9, 3])
    sc = struct.pack('<d', 42.5)
    items = [('f64', 'F64', [2, 1, 2], f64), ('scalar', 'F64', [], sc), ('f32', 'F32', [3, 2], f32),
             ('i32', 'I32', [5], i32), ('empty', 'F32', [0, 3], b''), ('u8', 'U8', [2, 3], u8)]
    header, data, at = {'__metadata__': {'format': 'pt', 'note': 'h\u00e9llo'}}, b'', 0
    for name, dt, shape, raw in items:
        header[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [at, at + len(raw)]}
        data += raw
        at += len(raw)
    h = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    sys.stdout.buffer.write(struct.pack('<Q', len(h)) + h + data)
elif mode == 'shuffled':
    # header keys in one order, data in another (the reference writer sorts by dtype then name)
    a = struct.pack('<3d', 1.0, 2.0, 3.0); b = struct.pack('<2i', -5, 6); c = bytes([9])
    header = {'zeta': {'dtype': 'U8', 'shape': [1], 'data_offsets': [len(a) + len(b), len(a) + len(b) + 1]},
              'alpha': {'dtype': 'I32', 'shape': [2], 'data_offsets': [len(a), len(a) + len(b)]},
              'mid': {'dtype': 'F64', 'shape': [3], 'data_offsets': [0, len(a)]}}
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + a + b + c)
else:
    raw = open(path, 'rb').read()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n].decode('utf-8'))
    buf = raw[8 + n:]
    fmt = {'F32': 'f', 'F64': 'd', 'I32': 'i', 'U8': 'B'}
    size = {'F32': 4, 'F64': 8, 'I32': 4, 'U8': 1}
    out = {'__metadata__': header.pop('__metadata__', {}), 'aligned': (8 + n) % 8 == 0}
    for k, v in header.items():
        b, e = v['data_offsets']
        cnt = (e - b) // size[v['dtype']]
        vals = struct.unpack('<%d%s' % (cnt, fmt[v['dtype']]), buf[b:e])
        out[k] = {'dtype': v['dtype'], 'shape': v['shape'], 'values': [repr(x) for x in vals]}
    print(json.dumps(out))
`;

test('cross-check with an independent Python implementation of the spec (both directions)', (t) => {
  const script = join(dir, 'st.py');
  writeFileSync(script, PY_SCRIPT);
  const path = join(dir, 'cross.safetensors');
  saveSafetensors(path, sample(), { format: 'pt', note: 'héllo' });
  // Python writes the same tensors byte for byte.
  const py = execFileSync(PY, [script, 'write', '-'], { maxBuffer: 1 << 20 });
  t.deepEqual(py, readFileSync(path));
  // Python reads what we wrote.
  const read = JSON.parse(execFileSync(PY, [script, 'read', path], { encoding: 'utf8' }));
  t.deepEqual(read.__metadata__, { format: 'pt', note: 'héllo' });
  t.true(read.aligned);
  t.deepEqual(read.i32.values, ['-2147483648', '2147483647', '0', '-1', '7']);
  t.deepEqual(read.f32.values, ['1.5', '-0.0', 'inf', 'nan', '9.99994610111476e-41', '-3.249999972151886e+38']);
  t.deepEqual(read.f64.shape, [2, 1, 2]);
  t.deepEqual(read.f64.values, ['3.141592653589793', '-5e-324', '1.7976931348623157e+308', 'nan']);
  t.deepEqual(read.u8.values, ['0', '1', '127', '255', '9', '3']);
  t.deepEqual(read.scalar, { dtype: 'F64', shape: [], values: ['42.5'] });
  t.deepEqual(read.empty, { dtype: 'F32', shape: [0, 3], values: [] });
  // We read a Python file whose header order differs from its data order.
  const shuffled = join(dir, 'shuffled.safetensors');
  execFileSync(PY, [script, 'shuffled', shuffled]);
  const r = loadSafetensors(shuffled);
  t.deepEqual([...r.tensors.keys()], ['mid', 'alpha', 'zeta']);  // data order
  t.deepEqual([...r.tensors.get('mid')!.toArray()], [1, 2, 3]);
  t.is(r.tensors.get('mid')!.dtype, 'float64');
  t.deepEqual([...r.tensors.get('alpha')!.toArray()], [-5, 6]);
  t.deepEqual([...r.tensors.get('zeta')!.toArray()], [9]);
});

/** A file from a header object and raw data (for hand-made and corrupt files). */
function file(header: unknown, data: Uint8Array, opts: { rawHeader?: string | Uint8Array; length?: bigint } = {}): Uint8Array {
  const h = opts.rawHeader instanceof Uint8Array ? opts.rawHeader : new TextEncoder().encode(opts.rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, opts.length ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

test('F16, BF16, I64 and BOOL are read into float32 / int32 / uint8', (t) => {
  const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000]).buffer);  // 1, -2, 65504, 2^-24, inf, -0
  const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0x4049]).buffer);  // 1, 3.140625
  const i64 = new Uint8Array(new BigInt64Array([-3n, 2147483647n]).buffer);
  const data = new Uint8Array([...f16, ...bf16, ...i64, 1, 0]);
  const h = {
    h: { dtype: 'F16', shape: [6], data_offsets: [0, 12] },
    b: { dtype: 'BF16', shape: [2], data_offsets: [12, 16] },
    l: { dtype: 'I64', shape: [2], data_offsets: [16, 32] },
    o: { dtype: 'BOOL', shape: [2], data_offsets: [32, 34] },
  };
  const r = decodeSafetensors(file(h, data));
  t.is(r.tensors.get('h')!.dtype, 'float32');
  t.deepEqual([...r.tensors.get('h')!.toArray()], [1, -2, 65504, 2 ** -24, Infinity, -0]);
  t.deepEqual([...r.tensors.get('b')!.toArray()], [1, 3.140625]);
  t.is(r.tensors.get('l')!.dtype, 'int32');
  t.deepEqual([...r.tensors.get('l')!.toArray()], [-3, 2147483647]);
  t.deepEqual([...r.tensors.get('o')!.toArray()], [1, 0]);
  const big = new Uint8Array(new BigInt64Array([2147483648n]).buffer);
  t.throws(() => decodeSafetensors(file({ l: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, big)),
    { instanceOf: RangeError, message: /fit in int32 but element 0 is 2147483648/ });
});

test('corrupt files are clear errors', (t) => {
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const d8 = new Uint8Array(8);
  const cases: [string, Uint8Array, RegExp, (typeof TypeError | typeof RangeError)?][] = [
    ['too short', new Uint8Array(5), /at least 8 bytes/],
    ['huge header length', file(ok, d8, { length: 1n << 40n }), /header length of at most 100000000/],
    ['header past the end', file(ok, d8, { length: 1000n }), /expected a header of 1000 bytes but only/],
    ['not JSON', file(null, d8, { rawHeader: '{"a": nope}' }), /does not parse/],
    ['not an object', file(null, d8, { rawHeader: '[1, 2]   ' }), /start with '\{'/],
    ['not UTF-8', file(null, d8, { rawHeader: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }), /UTF-8/],
    ['unknown dtype', file({ a: { dtype: 'F33', shape: [2], data_offsets: [0, 8] } }, d8), /safetensors dtype for 'a'/],
    ['unsupported dtype', file({ a: { dtype: 'I16', shape: [4], data_offsets: [0, 8] } }, d8), /dtype I16, which vlmkit does not read/, TypeError],
    ['bad shape', file({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, d8), /non-negative integers for the shape/],
    ['fractional offsets', file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 7.5] } }, d8), /\[begin, end\] byte offsets/],
    ['size mismatch', file({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, d8), /expected 12 bytes for 'a'/],
    ['begin after end', file({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, d8), /begin <= end/],
    ['overlap', file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, d8), /overlaps/],
    ['hole', file({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, d8), /bytes \[0, 4\) before 'a' belong to no tensor/],
    ['out of range', file({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, d8), /ends at 16/],
    ['trailing bytes', file(ok, new Uint8Array(12)), /fill the 12-byte data buffer but they end at 8/],
    ['truncated data', file(ok, new Uint8Array(4)), /ends at 8/],
    ['bad metadata', file({ __metadata__: { k: 1 }, ...ok }, d8), /string for __metadata__\['k'\]/],
  ];
  for (const [name, bytes, msg, kind] of cases) {
    t.throws(() => decodeSafetensors(bytes), { instanceOf: kind ?? RangeError, message: msg }, name);
    const p = join(dir, `bad-${name.replace(/\W/g, '_')}.safetensors`);
    writeFileSync(p, bytes);
    t.throws(() => loadSafetensors(p), { instanceOf: kind ?? RangeError, message: msg }, `${name} (file)`);
  }
  // readSafetensorsHeader validates without reading data.
  const p = join(dir, 'trunc.safetensors');
  writeFileSync(p, file(ok, new Uint8Array(4)));
  t.throws(() => readSafetensorsHeader(p), { message: /trunc\.safetensors: expected offsets within the 4-byte data buffer/ });
});

test('bad arguments to the writer; an atomic write that fails leaves nothing behind', (t) => {
  t.throws(() => encodeSafetensors({ a: 3 as unknown as Tensor }), { instanceOf: TypeError, message: /expected a tensor for 'a' but received the number 3/ });
  t.throws(() => encodeSafetensors({ __metadata__: tensor([1]) }), { instanceOf: TypeError, message: /other than '__metadata__'/ });
  t.throws(() => encodeSafetensors({ a: tensor([1]) }, { k: 2 as unknown as string }), { instanceOf: TypeError, message: /string for metadata\['k'\]/ });
  const dead = tensor([1, 2]);
  dead.dispose();
  t.throws(() => encodeSafetensors({ a: dead }), { instanceOf: TypeError, message: /live tensor/ });
  const sub = join(dir, 'atomic');
  t.throws(() => saveSafetensors(join(sub, 'missing-dir', 'x.safetensors'), { a: tensor([1]) }));
  t.false(existsSync(join(sub, 'missing-dir')));
  // Overwrite in place: the new content replaces the old whole, no temp file stays.
  const p = join(dir, 'over.safetensors');
  saveSafetensors(p, { a: tensor([1, 2, 3]) });
  saveSafetensors(p, { b: tensor([4]) });
  t.deepEqual([...loadSafetensors(p).tensors.keys()], ['b']);
  t.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
});

// safetensors (Hugging Face's format, https://github.com/huggingface/safetensors) read and
// written from Tensors:
//   8 bytes  N, the header length, unsigned 64-bit little-endian
//   N bytes  a UTF-8 JSON object { name: { dtype, shape, data_offsets: [begin, end] }, ...,
//            "__metadata__"?: { string: string } }, padded with spaces so 8 + N is a multiple of 8
//   rest     the byte buffer: every tensor's row-major little-endian bytes, contiguous, no gaps;
//            offsets are relative to the buffer's start.
// Written: tensors ordered by item size (largest first, stable) so every tensor starts aligned
// to its item size, as the reference writer does; the header lists them in data order.
// Read: the header is validated as strictly as the reference reader (length bound, JSON object,
// known dtypes, sizes = itemsize * prod(shape), offsets covering the buffer exactly, in range,
// without overlap or hole); F16/BF16 are widened to float32, I64 narrowed to int32 when every
// value fits, BOOL read as uint8. Files are read and written a tensor at a time.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { DType } from '../native.js';
import { Tensor, type TypedArray } from '../graph/tensor.js';
import { tensor, describe } from '../graph/creation.js';

/** The safetensors dtypes written: float32 F32, float64 F64, int32 I32, uint8 U8. */
export type SafetensorsDType = 'F32' | 'F64' | 'I32' | 'U8';

const TO_FILE: Record<DType, SafetensorsDType> = { float32: 'F32', float64: 'F64', int32: 'I32', uint8: 'U8' };
// Every dtype readable here: its item size and the tensor dtype it becomes.
const READABLE: Record<string, { size: number; dtype: DType }> = {
  F32: { size: 4, dtype: 'float32' }, F64: { size: 8, dtype: 'float64' }, I32: { size: 4, dtype: 'int32' },
  U8: { size: 1, dtype: 'uint8' }, F16: { size: 2, dtype: 'float32' }, BF16: { size: 2, dtype: 'float32' },
  I64: { size: 8, dtype: 'int32' }, BOOL: { size: 1, dtype: 'uint8' },
};
// Valid in the format, not readable here (named in the error).
const KNOWN_OTHER = new Set(['I8', 'I16', 'U16', 'U32', 'U64', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4', 'C64']);
const ITEM: Record<DType, number> = { float32: 4, float64: 8, int32: 4, uint8: 1 };

/** The reference reader's bound on the header length (100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;
const LITTLE = endianness() === 'LE';

/** One tensor's entry in the header. */
export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** [begin, end) in the byte buffer. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** Entries in data order (ascending offsets). */
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** N, the header's length in bytes (padding included). */
  headerBytes: number;
  /** Length of the byte buffer after the header. */
  dataBytes: number;
}

export interface SafetensorsContents {
  /** name -> tensor, in the file's data order. The caller owns the tensors. */
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

export interface SafetensorsLoadResult extends SafetensorsContents {
  /** File size and SHA-256 (hex) of every byte read: header and data. */
  bytes: number;
  sha256: string;
}

export interface SafetensorsSaveResult {
  path: string;
  bytes: number;
  sha256: string;
}

export type TensorMap = Record<string, Tensor> | Map<string, Tensor>;

// ---- writing --------------------------------------------------------------------------------

interface Planned {
  name: string;
  data: TypedArray;
  entry: { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] };
}

function checkMetadata(op: string, metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))
    throw new TypeError(`${op}: expected an object of strings for metadata but received ${describe(metadata)}`);
  for (const [k, v] of Object.entries(metadata))
    if (typeof v !== 'string') throw new TypeError(`${op}: expected a string for metadata['${k}'] but received ${describe(v)}`);
  return metadata as Record<string, string>;
}

/** Validates the tensors, orders them and builds the header bytes (padded). */
function plan(op: string, tensors: TensorMap, metadata: unknown): { header: Uint8Array; items: Planned[]; dataBytes: number } {
  if (tensors === null || typeof tensors !== 'object')
    throw new TypeError(`${op}: expected an object or Map of tensors for tensors but received ${describe(tensors)}`);
  const meta = checkMetadata(op, metadata);
  const pairs = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const named = pairs.map(([name, t], i) => {
    if (typeof name !== 'string' || name === '' || name === '__metadata__')
      throw new TypeError(`${op}: expected a non-empty tensor name other than '__metadata__' but received ${describe(name)}`);
    if (!(t instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for '${name}' but received ${describe(t)}`);
    if (t.disposed) throw new TypeError(`${op}: expected a live tensor for '${name}' but received a disposed tensor`);
    return { name, t, i };
  });
  // Largest item size first (stable): with 8 + N a multiple of 8, every tensor is aligned.
  named.sort((a, b) => ITEM[b.t.dtype] - ITEM[a.t.dtype] || a.i - b.i);
  let at = 0;
  const items: Planned[] = named.map(({ name, t }) => {
    const data = t.toArray();
    const entry = { dtype: TO_FILE[t.dtype], shape: [...t.shape], data_offsets: [at, at + data.byteLength] as [number, number] };
    at += data.byteLength;
    return { name, data, entry };
  });
  const json: Record<string, unknown> = {};
  if (Object.keys(meta).length) json.__metadata__ = meta;
  for (const it of items) json[it.name] = it.entry;
  let text = JSON.stringify(json);
  const raw = new TextEncoder().encode(text);
  const pad = (8 - (raw.length % 8)) % 8;
  if (pad) text += ' '.repeat(pad);
  return { header: new TextEncoder().encode(text), items, dataBytes: at };
}

function le64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** The little-endian bytes of a typed array (a view on little-endian hosts, a swapped copy otherwise). */
function leBytes(a: TypedArray): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return LITTLE || a.BYTES_PER_ELEMENT === 1 ? bytes : swapped(bytes, a.BYTES_PER_ELEMENT);
}

function swapped(bytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += size) for (let j = 0; j < size; j++) out[i + j] = bytes[i + size - 1 - j]!;
  return out;
}

/** The whole file in memory. */
export function encodeSafetensors(tensors: TensorMap, metadata?: Record<string, string>): Uint8Array {
  const { header, items, dataBytes } = plan('encodeSafetensors', tensors, metadata);
  const out = new Uint8Array(8 + header.length + dataBytes);
  out.set(le64(header.length), 0);
  out.set(header, 8);
  for (const it of items) out.set(leBytes(it.data), 8 + header.length + it.entry.data_offsets[0]);
  return out;
}

/** A temporary name beside `path` (same directory, so rename is atomic). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
}

/** Writes every chunk to a temporary file beside path, fsyncs it, renames it over path and fsyncs the directory. */
export function writeFileAtomic(path: string, chunks: Iterable<Uint8Array> | Uint8Array | string, hash?: Hash): number {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'w', 0o644);
  let bytes = 0;
  try {
    const list = typeof chunks === 'string' ? [new TextEncoder().encode(chunks)] : chunks instanceof Uint8Array ? [chunks] : chunks;
    for (const c of list) {
      for (let off = 0; off < c.length;) off += writeSync(fd, c, off, c.length - off);
      hash?.update(c);
      bytes += c.length;
    }
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  fsyncDir(dirname(path));
  return bytes;
}

/** Makes a rename or unlink in dir durable (best effort where directories cannot be opened). */
export function fsyncDir(dir: string): void {
  let fd: number;
  try { fd = openSync(dir, 'r'); } catch { return; }
  try { fsyncSync(fd); } catch { /* not supported on this file system */ } finally { closeSync(fd); }
}

/**
 * Saves tensors (and optional string metadata) to path atomically: a temporary file in the
 * same directory, fsync, rename. Returns the size and SHA-256 of what was written.
 */
export function saveSafetensors(path: string, tensors: TensorMap, metadata?: Record<string, string>): SafetensorsSaveResult {
  if (typeof path !== 'string' || path === '') throw new TypeError(`saveSafetensors: expected a file path for path but received ${describe(path)}`);
  const { header, items } = plan('saveSafetensors', tensors, metadata);
  const hash = createHash('sha256');
  const chunks = function* () {
    yield le64(header.length);
    yield header;
    for (const it of items) yield leBytes(it.data);
  };
  const bytes = writeFileAtomic(path, chunks(), hash);
  return { path, bytes, sha256: hash.digest('hex') };
}

// ---- reading --------------------------------------------------------------------------------

function corrupt(where: string, what: string): never {
  throw new RangeError(`safetensors: ${where}: ${what}`);
}

/** Reads N from the first 8 bytes and checks it against the bound and the file size. */
function headerLength(where: string, first8: Uint8Array, fileBytes: number): number {
  if (fileBytes < 8) corrupt(where, `expected at least 8 bytes (the header length) but the file has ${fileBytes}`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) corrupt(where, `expected a header length of at most ${MAX_HEADER_BYTES} bytes but the file says ${n}`);
  if (Number(n) + 8 > fileBytes) corrupt(where, `expected a header of ${n} bytes but only ${fileBytes - 8} bytes follow the length`);
  if (n < 2n) corrupt(where, `expected a header of at least 2 bytes ('{}') but the file says ${n}`);
  return Number(n);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Parses and validates the header bytes against the length of the byte buffer that follows.
 * Throws a RangeError naming the problem for anything the reference reader rejects.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, dataBytes: number, where = 'header'): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    corrupt(where, 'expected the header to be UTF-8 text but it is not');
  }
  if (!text.startsWith('{')) corrupt(where, `expected the header to start with '{' but it starts with ${JSON.stringify(text.slice(0, 8))}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    corrupt(where, `expected a JSON object but the header does not parse (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) corrupt(where, 'expected a JSON object but the header is not one');
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) corrupt(where, `expected an object of strings for __metadata__ but received ${describe(v)}`);
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') corrupt(where, `expected a string for __metadata__['${k}'] but received ${describe(s)}`);
        metadata[k] = s;
      }
      continue;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) corrupt(where, `expected { dtype, shape, data_offsets } for '${name}' but received ${describe(v)}`);
    const e = v as Record<string, unknown>;
    if (typeof e.dtype !== 'string') corrupt(where, `expected a dtype string for '${name}' but received ${describe(e.dtype)}`);
    if (!(e.dtype in READABLE)) {
      if (KNOWN_OTHER.has(e.dtype))
        throw new TypeError(`safetensors: ${where}: '${name}' has dtype ${e.dtype}, which vlmkit does not read (it reads ${Object.keys(READABLE).join(', ')})`);
      corrupt(where, `expected a safetensors dtype for '${name}' but received ${describe(e.dtype)}`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) corrupt(where, `expected an array of non-negative integers for the shape of '${name}' but received ${describe(e.shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount))
      corrupt(where, `expected [begin, end] byte offsets for '${name}' but received ${describe(off)}`);
    const [begin, end] = off as [number, number];
    if (end < begin) corrupt(where, `expected begin <= end in the offsets of '${name}' but received [${begin}, ${end}]`);
    let elements = 1;
    for (const d of e.shape as number[]) elements *= d;
    const want = elements * READABLE[e.dtype]!.size;
    if (!Number.isSafeInteger(want) || end - begin !== want)
      corrupt(where, `expected ${want} bytes for '${name}' (${e.dtype} [${(e.shape as number[]).join(', ')}]) but its offsets [${begin}, ${end}] hold ${end - begin}`);
    entries.push({ name, dtype: e.dtype, shape: [...(e.shape as number[])], dataOffsets: [begin, end] });
  }
  // Data order; the buffer must be covered exactly: no overlap, no hole, nothing past the end.
  entries.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let at = 0;
  for (const e of entries) {
    const [b, end] = e.dataOffsets;
    if (b < at) corrupt(where, `expected non-overlapping tensors but '${e.name}' [${b}, ${end}) overlaps the tensor before it (which ends at ${at})`);
    if (b > at) corrupt(where, `expected contiguous tensors but bytes [${at}, ${b}) before '${e.name}' belong to no tensor`);
    if (end > dataBytes) corrupt(where, `expected offsets within the ${dataBytes}-byte data buffer but '${e.name}' ends at ${end}`);
    at = end;
  }
  if (at !== dataBytes) corrupt(where, `expected the tensors to fill the ${dataBytes}-byte data buffer but they end at ${at} (the file is truncated or has trailing bytes)`);
  return { entries, metadata, headerBytes: headerBytes.length, dataBytes };
}

/** Builds a tensor from one entry's bytes (copied, so alignment never matters). */
function toTensor(e: SafetensorsEntry, raw: Uint8Array, where: string): Tensor {
  const size = READABLE[e.dtype]!.size;
  const bytes = new Uint8Array(raw.length);
  bytes.set(LITTLE || size === 1 ? raw : swapped(raw, size));
  const buf = bytes.buffer;
  const n = raw.length / size;
  let data: TypedArray;
  switch (e.dtype) {
    case 'F32': data = new Float32Array(buf); break;
    case 'F64': data = new Float64Array(buf); break;
    case 'I32': data = new Int32Array(buf); break;
    case 'U8': case 'BOOL': data = bytes; break;
    case 'F16': data = halfToFloat(new Uint16Array(buf)); break;
    case 'BF16': {
      const h = new Uint16Array(buf), w = new Uint32Array(n);
      for (let i = 0; i < n; i++) w[i] = h[i]! << 16;
      data = new Float32Array(w.buffer);
      break;
    }
    case 'I64': {
      const src = new BigInt64Array(buf), out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = src[i]!;
        if (v > 2147483647n || v < -2147483648n)
          throw new RangeError(`safetensors: ${where}: expected I64 values of '${e.name}' to fit in int32 but element ${i} is ${v}`);
        out[i] = Number(v);
      }
      data = out;
      break;
    }
    default: throw new TypeError(`safetensors: ${where}: unreadable dtype ${e.dtype}`);
  }
  return tensor(data, e.shape, { dtype: READABLE[e.dtype]!.dtype });
}

function halfToFloat(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) {
    const x = h[i]!, s = x & 0x8000 ? -1 : 1, e = (x >> 10) & 0x1f, m = x & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** Reads a whole file already in memory. */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsContents {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`decodeSafetensors: expected a Uint8Array for bytes but received ${describe(bytes)}`);
  const where = 'buffer';
  const n = headerLength(where, bytes, bytes.length);
  const h = parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, where);
  const base = 8 + n;
  const tensors = new Map<string, Tensor>();
  try {
    for (const e of h.entries) tensors.set(e.name, toTensor(e, bytes.subarray(base + e.dataOffsets[0], base + e.dataOffsets[1]), where));
  } catch (err) {
    for (const t of tensors.values()) t.dispose();
    throw err;
  }
  return { tensors, metadata: h.metadata };
}

function readExactly(fd: number, n: number, position: number): Uint8Array {
  const b = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = readSync(fd, b, got, n - got, position + got);
    if (r === 0) throw new RangeError(`safetensors: unexpected end of file at byte ${position + got}`);
    got += r;
  }
  return b;
}

/** Reads and validates only the header of a file (no tensor data). */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  if (typeof path !== 'string' || path === '') throw new TypeError(`readSafetensorsHeader: expected a file path for path but received ${describe(path)}`);
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const n = headerLength(path, size >= 8 ? readExactly(fd, 8, 0) : new Uint8Array(8), size);
    return parseSafetensorsHeader(readExactly(fd, n, 8), size - 8 - n, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Loads every tensor of a safetensors file (validated first). Returns the tensors in data
 * order, the metadata, and the file's size and SHA-256.
 */
export function loadSafetensors(path: string): SafetensorsLoadResult {
  if (typeof path !== 'string' || path === '') throw new TypeError(`loadSafetensors: expected a file path for path but received ${describe(path)}`);
  const fd = openSync(path, 'r');
  const tensors = new Map<string, Tensor>();
  try {
    const size = fstatSync(fd).size;
    const first = size >= 8 ? readExactly(fd, 8, 0) : new Uint8Array(8);
    const n = headerLength(path, first, size);
    const headerBytes = readExactly(fd, n, 8);
    const h = parseSafetensorsHeader(headerBytes, size - 8 - n, path);
    const hash = createHash('sha256').update(first).update(headerBytes);
    for (const e of h.entries) {
      const raw = readExactly(fd, e.dataOffsets[1] - e.dataOffsets[0], 8 + n + e.dataOffsets[0]);
      hash.update(raw);
      tensors.set(e.name, toTensor(e, raw, path));
    }
    return { tensors, metadata: h.metadata, bytes: size, sha256: hash.digest('hex') };
  } catch (err) {
    for (const t of tensors.values()) t.dispose();
    throw err;
  } finally {
    closeSync(fd);
  }
}

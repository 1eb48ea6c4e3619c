// Tensor methods: the natural ops also as methods (x.matmul(w).add(b).relu()),
// attached to the prototype here so tensor.ts does not import every op family.
import { Tensor } from './tensor.js';
import * as ew from './ops/elementwise.js';
import * as rd from './ops/reduce.js';
import * as vw from './ops/views.js';
import { matmul } from './ops/matmul.js';
import { softmax, logSoftmax } from './ops/softmax.js';
import { to } from './ops/device.js';
import type { Device } from '../native.js';

type Axis = number | readonly number[];

declare module './tensor.js' {
  interface Tensor {
    add(b: ew.Operand): Tensor;
    sub(b: ew.Operand): Tensor;
    mul(b: ew.Operand): Tensor;
    div(b: ew.Operand): Tensor;
    pow(p: ew.Operand): Tensor;
    neg(): Tensor;
    exp(): Tensor;
    log(): Tensor;
    sqrt(): Tensor;
    tanh(): Tensor;
    sigmoid(): Tensor;
    relu(): Tensor;
    abs(): Tensor;
    sum(axis?: Axis, keepdim?: boolean): Tensor;
    mean(axis?: Axis, keepdim?: boolean): Tensor;
    max(axis?: Axis, keepdim?: boolean): Tensor;
    matmul(b: Tensor): Tensor;
    softmax(axis?: number): Tensor;
    logSoftmax(axis?: number): Tensor;
    reshape(shape: readonly number[]): Tensor;
    view(shape: readonly number[]): Tensor;
    flatten(startAxis?: number, endAxis?: number): Tensor;
    permute(dims: readonly number[]): Tensor;
    transpose(axis0?: number, axis1?: number): Tensor;
    contiguous(): Tensor;
    expand(shape: readonly number[]): Tensor;
    slice(axis: number, start: number, end?: number, step?: number): Tensor;
    select(axis: number, index: number): Tensor;
    squeeze(axis?: number): Tensor;
    unsqueeze(axis: number): Tensor;
    to(device: Device): Tensor;
  }
}

const P = Tensor.prototype;
P.add = function (b) { return ew.add(this, b); };
P.sub = function (b) { return ew.sub(this, b); };
P.mul = function (b) { return ew.mul(this, b); };
P.div = function (b) { return ew.div(this, b); };
P.pow = function (p) { return ew.pow(this, p); };
P.neg = function () { return ew.neg(this); };
P.exp = function () { return ew.exp(this); };
P.log = function () { return ew.log(this); };
P.sqrt = function () { return ew.sqrt(this); };
P.tanh = function () { return ew.tanh(this); };
P.sigmoid = function () { return ew.sigmoid(this); };
P.relu = function () { return ew.relu(this); };
P.abs = function () { return ew.abs(this); };
P.sum = function (axis, keepdim) { return rd.sum(this, axis, keepdim); };
P.mean = function (axis, keepdim) { return rd.mean(this, axis, keepdim); };
P.max = function (axis, keepdim) { return rd.max(this, axis, keepdim); };
P.matmul = function (b) { return matmul(this, b); };
P.softmax = function (axis) { return softmax(this, axis); };
P.logSoftmax = function (axis) { return logSoftmax(this, axis); };
P.reshape = function (shape) { return vw.reshape(this, shape); };
P.view = function (shape) { return vw.view(this, shape); };
P.flatten = function (s, e) { return vw.flatten(this, s, e); };
P.permute = function (dims) { return vw.permute(this, dims); };
P.transpose = function (a, b) { return vw.transpose(this, a, b); };
P.contiguous = function () { return vw.contiguous(this); };
P.expand = function (shape) { return vw.expand(this, shape); };
P.slice = function (axis, start, end, step) { return vw.slice(this, axis, start, end, step); };
P.select = function (axis, index) { return vw.select(this, axis, index); };
P.squeeze = function (axis) { return vw.squeeze(this, axis); };
P.unsqueeze = function (axis) { return vw.unsqueeze(this, axis); };
P.to = function (device) { return to(this, device); };

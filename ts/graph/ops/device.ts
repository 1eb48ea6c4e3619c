// Moving tensors between devices (native/ops/device.h, native/cuda/device.cu).
import { native, type Device } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe } from '../creation.js';

/** Whether a CUDA device can be used now (false on machines without a GPU or driver). */
export function cudaAvailable(): boolean {
  return native.buildInfo().cudaDevices > 0;
}

/** A copy of x on `device` (x itself when already there); gradients flow back to x's device. */
export function to(x: Tensor, device: Device): Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`to: expected a tensor for x but received ${describe(x)}`);
  if (device !== 'cpu' && device !== 'cuda') throw new TypeError(`to: expected 'cpu' or 'cuda' for device but received ${describe(device)}`);
  if (x.device === device) return x;
  const out = wrap(native.toDevice(x.handle, device));
  return record(out, 'to', [x], (g) => [wrap(native.toDevice(g.handle, x.device))]);
}

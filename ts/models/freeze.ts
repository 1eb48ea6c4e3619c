// freeze(tower): a frozen tower (BLIP-2's image encoder and LLM) gets no gradients, so no
// optimizer state (AdamW skips parameters that do not require grad), and normalises in
// eval mode for good: BatchNorm uses its running statistics and Dropout is off even when
// a parent module is put in training mode. Inputs that require grad still receive
// gradients through a frozen tower (e.g. BLIP-2's soft prompt through the frozen LLM).
import { describe } from '../graph/creation.js';
import { Module } from '../graph/module.js';

const frozen = new WeakSet<Module>();

function checkModule(op: string, m: unknown): asserts m is Module {
  if (!(m instanceof Module)) throw new TypeError(`${op}: expected a Module for module but received ${describe(m)}`);
}

/**
 * Freezes `module` and every descendant: parameters stop requiring grad (held gradients
 * are freed) and `training` is pinned to false, so train() on any ancestor leaves them in
 * eval mode. Returns the module.
 */
export function freeze<M extends Module>(module: M): M {
  checkModule('freeze', module);
  module.freeze();
  for (const [, m] of module.namedModules()) {
    // Module.train() writes `training` on every descendant; an accessor ignores those writes.
    Object.defineProperty(m, 'training', { get: () => false, set: () => {}, configurable: true, enumerable: true });
    frozen.add(m);
  }
  return module;
}

/** Undoes freeze(): parameters require grad again and `training` is set to `mode` (default true). Returns the module. */
export function unfreeze<M extends Module>(module: M, mode = true): M {
  checkModule('unfreeze', module);
  for (const [, m] of module.namedModules()) {
    if (frozen.has(m)) {
      Object.defineProperty(m, 'training', { value: mode, writable: true, configurable: true, enumerable: true });
      frozen.delete(m);
    } else {
      m.training = mode;
    }
  }
  module.unfreeze();
  return module;
}

/** Whether freeze() pinned this module (directly or through an ancestor). */
export function isFrozen(module: Module): boolean {
  return frozen.has(module);
}

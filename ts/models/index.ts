// The towers and the training graphs (vlm.models): each built from a plain JSON config merged over its defaults
// and validated on construction (config.ts), initialised as its reference.
export * from './config.js';
export * from './init.js';
export * from './freeze.js';
export * from './vit.js';
export * from './text_transformer.js';
export * from './bert.js';
export * from './efficientnet.js';
export * from './causal_lm.js';
export * from './clip.js';
export * from './align.js';

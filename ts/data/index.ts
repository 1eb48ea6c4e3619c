// ts/data: data sets, image decoding and augmentation, tokenizers and batches.
export * from './source.js';
export { Rng, permutation, hashKey, Purpose } from './random.js';
export * from './images.js';
export * from './tokenizers.js';
export * from './emoji.js';
export * from './manifest.js';
export * from './webdataset.js';
export * from './loader.js';

// The training objectives, under the papers' names (each says which kernel family it calls).
export * from './itc.js';
export * from './lm.js';
export * from './itm.js';

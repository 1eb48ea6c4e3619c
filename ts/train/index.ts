// ts/train: the trainer loop, checkpoints (safetensors + JSON sidecar), contrastive gradient
// accumulation, progress logging and training curves.
export * from './safetensors.js';
export * from './checkpoint.js';
export * from './accumulate.js';
export * from './logger.js';
export * from './plots.js';
export * from './trainer.js';
export * from './eval.js';
export * from './report.js';

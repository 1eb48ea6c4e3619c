// placeholder: filled by the layer_norm family
export {};

// placeholder: filled by the matmul family
export {};

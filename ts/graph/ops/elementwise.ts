// placeholder: filled by the elementwise family
export {};

// placeholder: filled by the softmax family
export {};

// placeholder: filled by the dropout family
export {};

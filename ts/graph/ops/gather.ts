// placeholder: filled by the gather family
export {};

// placeholder: filled by the normalize family
export {};

"""Models and tokenizers: loading policies, and building the testbed's tiny base model and tokenizer."""

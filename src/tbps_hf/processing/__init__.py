"""Shared processing: person image processor, base processor, phrase chunker, tokenizer training."""

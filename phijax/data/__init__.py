"""Data: tokenizer, sources, grain pipeline, packing (being built)."""

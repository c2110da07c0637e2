"""Training the embedded micro-SLMs: synthetic task data, a char-level tokenizer, the loop."""

"""Other checkpoint formats (Hugging Face, Google TF1) in and out, and
`from_pretrained`. Depends on model, runtime and data (tokenizers)."""

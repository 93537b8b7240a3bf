"""Using a trained encoder: sentence embeddings (encode.py), embedding indexes on disk
(index.py: `bert-jax embed`) and exact cosine search over them (search.py: `bert-jax
search`). Depends on model, runtime, interop and finetune's features."""

"""bert_jax: BERT pretraining and fine-tuning in JAX/Flax.

    model, params, tokenizer = bert_jax.from_pretrained(workdir)
    embeddings = bert_jax.encode(model, params, tokenizer, texts, pooling="mean")
"""

__version__ = "0.1.0"

# The functions below import on use: `import bert_jax` stays light, and no module
# imports the root.
# pylint: disable=g-import-not-at-top


def from_pretrained(path: str, step: int | None = None):
  """(model, params, tokenizer) from a pretrain workdir or converted Orbax dir (latest
  or given step), a fine-tuned workdir (its encoder), a Hugging Face directory or a
  Google TF1 checkpoint directory. The tokenizer (SentencePiece or WordPiece, see
  bert_jax.data.tokenizer) is None when the directory holds none."""
  from bert_jax.interop import pretrained
  return pretrained.from_pretrained(path, step)


def encode(model, params, tokenizer, texts, pooling: str = "cls", max_length: int = 128,
           batch_size: int = 64, progress: bool | None = None):
  """L2-normalised float32 embeddings [len(texts), hidden] of `texts` ("cls" or
  "mean" pooling); see bert_jax.inference.encode."""
  from bert_jax.inference import encode as encode_lib
  return encode_lib.encode(model, params, tokenizer, texts, pooling=pooling,
                           max_length=max_length, batch_size=batch_size,
                           progress=progress)

"""bert_jax: BERT pretraining and fine-tuning in JAX/Flax.

    model, params, tokenizer = bert_jax.from_pretrained(workdir)
"""

__version__ = "0.1.0"


def from_pretrained(path: str, step: int | None = None):
  """(model, params, tokenizer) from a pretrain workdir or converted Orbax dir (latest
  or given step), a Hugging Face directory or a Google TF1 checkpoint directory. The
  tokenizer (SentencePiece or WordPiece, see bert_jax.data.tokenizer) is None when the
  directory holds none."""
  # Imported on use: `import bert_jax` stays light, and no module imports the root.
  from bert_jax.interop import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.from_pretrained(path, step)

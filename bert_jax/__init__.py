"""bert_jax: BERT pretraining and fine-tuning in JAX/Flax.

    model, params = bert_jax.from_pretrained(workdir)
"""

__version__ = "0.1.0"


def from_pretrained(path: str, step: int | None = None):
  """(model, params) from the latest (or given) checkpoint of a pretrain workdir."""
  from bert_jax import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.from_pretrained(path, step)

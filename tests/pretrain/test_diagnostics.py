"""Out of device memory is one message with the plan command and the knobs; other
runtime errors of one process keep their traceback."""

import jax
import jax.numpy as jnp
import pytest

from bert_jax.errors import TrainingStopped
from bert_jax.pretrain import diagnostics
from bert_jax.runtime import liveness


def _runtime_error(fn) -> Exception:
  with pytest.raises(jax.errors.JaxRuntimeError) as info:
    jax.block_until_ready(jax.jit(fn)())
  return info.value


def test_out_of_memory_names_plan_and_the_knobs(tiny_config):
  # A real XLA allocation failure: 4 TiB on this CPU.
  error = _runtime_error(lambda: jnp.ones((2**40,), jnp.float32))
  explained = diagnostics.explain(error, tiny_config, liveness.Liveness(1.0))
  assert isinstance(explained, TrainingStopped)
  message = str(explained)
  assert message.startswith("out of device memory (RESOURCE_EXHAUSTED")
  for knob in ("bert-jax plan", "--hbm_gib", "--config.train.microbatches (now 1",
               "--config.model.remat=full (now 'none')", "--config.mesh.shape (now (-1, 1, 1)",
               "model.dtype=bfloat16"):
    assert knob in message, knob
  assert "\n" not in message


def test_other_errors_of_one_process_are_kept(tiny_config):
  error = jax.errors.JaxRuntimeError("INTERNAL: something else")
  assert diagnostics.explain(error, tiny_config, liveness.Liveness(1.0)) is None

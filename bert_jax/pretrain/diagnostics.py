"""One message for the runtime errors a user can act on: the device memory running
out (at compile or run time), and a collective that failed because another process
stopped. Anything else keeps its traceback."""

import jax

from bert_jax.errors import TrainingStopped


def _first_line(e: Exception, limit: int = 300) -> str:
  line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  return line if len(line) <= limit else line[:limit] + " ..."


def is_out_of_memory(e: Exception) -> bool:
  text = str(e)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def out_of_memory(e: Exception, config) -> TrainingStopped:
  t, m = config.train, config.model
  return TrainingStopped(
      f"out of device memory ({_first_line(e)}). Size the job first with `bert-jax "
      f"plan` and the same --config flags plus --hbm_gib=<GiB per device>; then "
      f"turn, in this order: --config.train.microbatches (now {t.microbatches}; "
      f"gradient accumulation, same update, activations / k), "
      f"--config.model.remat=full (now {m.remat!r}), more fsdp in "
      f"--config.mesh.shape (now {tuple(config.mesh.shape)}; parameters and optimizer "
      f"state split further), --config.model.dtype=bfloat16 (now {m.dtype!r}); a "
      f"smaller train.global_batch_size (now {t.global_batch_size}) changes the recipe")


def explain(e: Exception, config, liveness) -> Exception | None:
  """The error to raise instead of `e`, or None to keep it."""
  if is_out_of_memory(e):
    return out_of_memory(e, config)
  if jax.process_count() > 1:
    return TrainingStopped(f"the train step failed on process {jax.process_index()}: "
                           f"{_first_line(e)}; {liveness.behind()}")
  return None

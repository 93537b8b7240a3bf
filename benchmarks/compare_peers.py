"""Our pretrain step next to transformers' BertForPreTraining (Flax, and PyTorch when
torch is installed), same model config, batch and data, in one process.

    python benchmarks/compare_peers.py --size small --batch 32 [--seq 128]
        [--rounds 3] [--steps 3] [--peer_dtype D] [--config.K=V ...]

The peers compute in our `config.model.dtype` unless `--peer_dtype` says otherwise
(HF Flax through its `dtype`, PyTorch under CPU autocast); params are float32 in all.
The host allocator is tuned as `bert-jax` tunes it (host_memory.py) for all runners
alike, unless `--host_malloc=default`.

The runners take turns (`rounds` x `steps` timed steps each, after warm-up), so
load from elsewhere on the machine hits all of them alike. Prints one JSON line
per runner and one with the ratios: of tokens/s (median step times) and of process
CPU time per step (steadier when other jobs share the cores). The peers keep their own default behaviour:
MLM logits over the full vocabulary at every position, AdamW (ours: logits only at
the masked positions, LAMB).
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bert_jax.runtime import host_memory  # noqa: E402

# As `bert-jax` does, before any thread starts; process-wide, so the peers get it too
# (--host_malloc=default measures everyone with glibc's defaults).
_MALLOC_FLAG = argparse.ArgumentParser(add_help=False)
_MALLOC_FLAG.add_argument("--host_malloc", choices=("tuned", "default"), default="tuned",
                          help="tuned: glibc keeps freed memory (bert_jax/host_memory.py), "
                          "for all runners; default: glibc as it comes, for all")
HOST_MALLOC = _MALLOC_FLAG.parse_known_args()[0].host_malloc
if HOST_MALLOC == "tuned" and not host_memory.keep_freed_memory():
  HOST_MALLOC = "default"  # not glibc

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bert_jax.tools import benchmark  # noqa: E402
from bert_jax.configs import pretrain as pretrain_configs  # noqa: E402
import config_overrides  # noqa: E402  (benchmarks/, the script's own directory)

PEER_NOTE = ("peers (transformers BertForPreTraining) compute MLM logits over the full "
             "vocabulary at every position, their default; ours only at the masked "
             "positions")


def _hf_config(config):
  import transformers  # pylint: disable=g-import-not-at-top
  m = config.model
  return transformers.BertConfig(
      vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
      num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
      max_position_embeddings=m.max_position_embeddings, type_vocab_size=m.type_vocab_size,
      hidden_act="gelu", hidden_dropout_prob=m.hidden_dropout,
      attention_probs_dropout_prob=m.attention_dropout, layer_norm_eps=m.layer_norm_eps)


def _mlm_labels(batch, seq_len: int) -> np.ndarray:
  """[B, S] labels, -100 where nothing is predicted (HF's convention)."""
  labels = np.full((len(batch["input_ids"]), seq_len), -100, np.int64)
  np.put_along_axis(labels, batch["masked_positions"], batch["masked_ids"], 1)
  return labels


class HFFlaxTimer:
  """FlaxBertForPreTraining + optax.adamw, jitted with the state donated; computes
  in `dtype` (float32 params either way)."""

  name = "hf_flax"

  def __init__(self, config, batch, dtype: str):
    import transformers  # pylint: disable=g-import-not-at-top
    model = transformers.FlaxBertForPreTraining(
        _hf_config(config), seed=0, dtype=jax.numpy.dtype(dtype))
    tx = optax.adamw(1e-4, weight_decay=0.01)

    def loss_fn(params, batch, rng):
      out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch["token_type_ids"], params=params,
                  dropout_rng=rng, train=True)
      labels = batch["labels"]
      weights = labels >= 0
      xent = optax.softmax_cross_entropy_with_integer_labels(
          out.prediction_logits, jax.numpy.maximum(labels, 0))
      mlm = (xent * weights).sum() / weights.sum()
      nsp = optax.softmax_cross_entropy_with_integer_labels(
          out.seq_relationship_logits, batch["next_sentence_label"]).mean()
      return mlm + nsp

    def step(params, opt_state, batch, rng):
      loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    self._step = jax.jit(step, donate_argnums=(0, 1))
    self._params = model.params
    self._opt_state = tx.init(model.params)
    self._rng, self._calls = jax.random.key(1), 0
    self._batch = jax.device_put(
        {**batch, "labels": _mlm_labels(batch, config.data.max_seq_length).astype(np.int32)})

  def step(self):
    self._calls += 1
    self._params, self._opt_state, loss = self._step(
        self._params, self._opt_state, self._batch,
        jax.random.fold_in(self._rng, self._calls))
    return loss

  def time(self, n: int) -> list[float]:
    return benchmark.time_steps(self.step, n)


class TorchTimer:
  """BertForPreTraining (PyTorch, eager) + torch.optim.AdamW; bfloat16 `dtype` runs
  the forward pass under CPU autocast (float32 params either way)."""

  name = "torch"

  def __init__(self, config, batch, dtype: str):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    self._model = transformers.BertForPreTraining(_hf_config(config)).train()
    self._autocast = torch.autocast(
        "cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    self._opt = torch.optim.AdamW(self._model.parameters(), lr=1e-4, weight_decay=0.01)
    as_long = lambda x: torch.from_numpy(np.asarray(x, np.int64))
    self._inputs = dict(
        input_ids=as_long(batch["input_ids"]), attention_mask=as_long(batch["attention_mask"]),
        token_type_ids=as_long(batch["token_type_ids"]),
        labels=as_long(_mlm_labels(batch, config.data.max_seq_length)),
        next_sentence_label=as_long(batch["next_sentence_label"]))

  def step(self) -> None:  # eager: done when it returns
    self._opt.zero_grad(set_to_none=True)
    with self._autocast:
      loss = self._model(**self._inputs).loss
    loss.backward()
    self._opt.step()

  def time(self, n: int) -> list[float]:
    return benchmark.time_steps(self.step, n)


def _torch_available() -> bool:
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   parents=[_MALLOC_FLAG])
  parser.add_argument("--size", default="small")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--peers", default="hf_flax,torch",
                      help="comma-separated subset of hf_flax,torch")
  parser.add_argument("--peer_dtype", default=None,
                      help="the peers' compute dtype; default: ours (config.model.dtype)")
  args, rest = parser.parse_known_args()

  config = pretrain_configs.get_config(args.size)
  config.train.global_batch_size = args.batch
  config.data.max_seq_length = args.seq
  config_overrides.apply(config, rest)
  ours = benchmark.StepTimer(config)
  batch = benchmark.synthetic_batch(
      args.batch, args.seq, config.data.max_predictions_per_seq, config.model.vocab_size)
  # The peers take one NSP label per row (ours: one per packed example slot).
  batch["next_sentence_label"] = batch["next_sentence_label"][:, 0]
  runners = [ours]
  peer_dtype = args.peer_dtype or config.model.dtype
  wanted = args.peers.split(",")
  if "hf_flax" in wanted:
    runners.append(HFFlaxTimer(config, batch, peer_dtype))
  if "torch" in wanted and _torch_available():
    runners.append(TorchTimer(config, batch, peer_dtype))

  times = {r.name: [] for r in runners}
  cpu = {r.name: 0.0 for r in runners}  # process CPU seconds: steadier under load
  for r in runners:
    r.time(2)  # compile, warm up
  for _ in range(args.rounds):
    for r in runners:
      start = time.process_time()
      times[r.name] += r.time(args.steps)
      cpu[r.name] += time.process_time() - start

  tokens = args.batch * args.seq
  tps = {}
  for name, ts in times.items():
    step_s = statistics.median(ts)
    tps[name] = tokens / step_s
    print(json.dumps({"runner": name, "size": args.size, "batch": args.batch,
                      "seq": args.seq,
                      "dtype": config.model.dtype if name == "bert_jax" else peer_dtype,
                      "step_ms": round(step_s * 1e3, 1),
                      "step_ms_min": round(min(ts) * 1e3, 1),
                      "tokens_per_sec": round(tps[name], 1), "steps": len(ts),
                      "cpu_ms_per_step": round(cpu[name] / len(ts) * 1e3, 1)}))
  print(json.dumps({
      "size": args.size, "batch": args.batch, "seq": args.seq,
      "device_kind": jax.devices()[0].device_kind,
      **{f"ours_vs_{name}": round(tps["bert_jax"] / t, 2)
         for name, t in tps.items() if name != "bert_jax"},
      **{f"ours_vs_{name}_cpu_time": round(c / cpu["bert_jax"], 2)
         for name, c in cpu.items() if name != "bert_jax"},
      "load_average": [round(x, 2) for x in os.getloadavg()],
      "torch": "torch" in tps or "not installed",
      "host_malloc": HOST_MALLOC,
      "note": PEER_NOTE}))


if __name__ == "__main__":
  main()

"""`bert-jax benchmark --what inference`: sentence classification at serving time.

Times the fine-tuning task model (`task_model.BertWithHead`, two classes, random
weights of the config's size) in `model.dtype`: sentences/s in batches of
`--inference_batch` (default 32) and the latency of one sentence, at
`data.max_seq_length` (128). Beside it, taking turns so that load from elsewhere
hits all alike, the same config and dtype in transformers' Flax
(`FlaxBertForSequenceClassification`, jitted) and PyTorch
(`BertForSequenceClassification`, eval mode, inference_mode; bfloat16 under CPU
autocast) when they are installed. One JSON line: `sentences_per_sec`,
`latency_ms_batch1`, and `peers` (name -> sentences/s), with their latencies and the
ratios. Peers are optional: a missing one is named in `missing_peers`.
"""

import json
import logging
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.model import bert as model_lib, task_model
from bert_jax.tools import benchmark

log = logging.getLogger(__name__)

NUM_LABELS = 2


def inputs(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict:
  """Full-length rows of random ids: what a batch of long sentences looks like."""
  rng = np.random.default_rng(seed)
  return {"input_ids": rng.integers(5, vocab_size, (batch, seq_len)).astype(np.int32),
          "token_type_ids": np.zeros((batch, seq_len), np.int32),
          "attention_mask": np.ones((batch, seq_len), np.int32)}


class Ours:
  name = "bert_jax"

  def __init__(self, cfg: model_lib.BertConfig, seed: int = 0):
    self.model = task_model.BertWithHead(cfg, num_outputs=NUM_LABELS)
    ids = jnp.zeros((1, 8), jnp.int32)
    self.params = nn.meta.unbox(
        jax.jit(self.model.init)(jax.random.key(seed), ids)["params"])
    self._forward = jax.jit(lambda p, b: self.model.apply(
        {"params": p}, b["input_ids"], b["token_type_ids"], b["attention_mask"]))

  def prepare(self, batch: dict):
    batch = jax.device_put(batch)
    return lambda: self._forward(self.params, batch)


class HFFlax:
  name = "hf_flax"

  def __init__(self, cfg: model_lib.BertConfig, seed: int = 0):
    import transformers  # pylint: disable=g-import-not-at-top
    self.model = transformers.FlaxBertForSequenceClassification(
        _hf_config(cfg), seed=seed, dtype=jnp.dtype(cfg.dtype))
    self._forward = jax.jit(lambda p, b: self.model(
        b["input_ids"], attention_mask=b["attention_mask"],
        token_type_ids=b["token_type_ids"], params=p, train=False).logits)

  def prepare(self, batch: dict):
    batch = jax.device_put(batch)
    return lambda: self._forward(self.model.params, batch)


class Torch:
  name = "torch"

  def __init__(self, cfg: model_lib.BertConfig, seed: int = 0):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(seed)
    self.model = transformers.BertForSequenceClassification(_hf_config(cfg)).eval()
    self.bf16 = cfg.dtype == "bfloat16"

  def prepare(self, batch: dict):
    torch = self.torch
    batch = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}

    def run() -> None:  # eager: done when it returns
      with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                  enabled=self.bf16):
        self.model(**batch)
    return run


def _hf_config(cfg: model_lib.BertConfig):
  """transformers' BertConfig of `cfg` (the one our HF export writes), two labels."""
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  return transformers.BertConfig(**convert.config_to_hf(cfg), num_labels=NUM_LABELS)


def _runners(cfg: model_lib.BertConfig, peers: tuple[str, ...]):
  runners, missing = [Ours(cfg)], []
  for name, cls in (("hf_flax", HFFlax), ("torch", Torch)):
    if name not in peers:
      continue
    try:
      runners.append(cls(cfg))
    except ImportError as e:
      missing.append(f"{name} ({e.name} not installed)")
  return runners, missing


def run(config, rounds: int = 3, calls: int = 5, batch: int = 32,
        peers: tuple[str, ...] = ("hf_flax", "torch")) -> dict:
  """Times every runner at `batch` and at 1, `rounds` x `calls` timed calls each
  (after a warm-up that compiles), taking turns; prints and returns one JSON line."""
  cfg = model_lib.BertConfig.from_dict(config.model)
  seq_len = config.data.max_seq_length
  runners, missing = _runners(cfg, peers)
  sizes = (batch, 1)
  calls_of = {(r.name, b): r.prepare(inputs(b, seq_len, cfg.vocab_size))
              for r in runners for b in sizes}
  times = {key: [] for key in calls_of}
  for key, call in calls_of.items():
    benchmark.time_steps(call, 2)  # compile, warm up
  for _ in range(rounds):
    for key, call in calls_of.items():
      times[key] += benchmark.time_steps(call, calls)
  per_sec = {r.name: batch / statistics.median(times[r.name, batch]) for r in runners}
  latency = {r.name: statistics.median(times[r.name, 1]) * 1e3 for r in runners}
  result = {
      "what": "inference", "size": config.model.size, "dtype": cfg.dtype,
      "seq_len": seq_len, "batch": batch, "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "sentences_per_sec": round(per_sec["bert_jax"], 1),
      "latency_ms_batch1": round(latency["bert_jax"], 2),
      "peers": {n: round(v, 1) for n, v in per_sec.items() if n != "bert_jax"},
      "peer_latency_ms_batch1": {n: round(v, 2) for n, v in latency.items()
                                 if n != "bert_jax"},
      "throughput_ratio": {n: round(per_sec["bert_jax"] / v, 2)
                           for n, v in per_sec.items() if n != "bert_jax"},
      "latency_ratio": {n: round(v / latency["bert_jax"], 2)
                        for n, v in latency.items() if n != "bert_jax"},
      "missing_peers": missing,
      "timed_calls": rounds * calls,
  }
  log.info("inference %s %s: %.1f sentences/s, %.2f ms at batch 1", config.model.size,
           cfg.dtype, result["sentences_per_sec"], result["latency_ms_batch1"])
  print(json.dumps(result), flush=True)
  return result

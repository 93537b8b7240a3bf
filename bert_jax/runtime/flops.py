"""Model FLOPs of a pretraining step, and the peak FLOP/s MFU divides them by.

MFU = model FLOPs per second / peak FLOP/s of the devices. Model FLOPs are the
useful ones (PaLM's definition): rematerialisation, padding tricks and the
bookkeeping of the optimizer are not counted, so MFU compares implementations.
"""

import time

import jax
import jax.numpy as jnp

from bert_jax.model.bert import BertConfig

# Dense bf16 matmul peak per JAX device, by `device.device_kind` (the first key that
# is a substring wins, so longer names come first). TPU v2/v3 devices are single
# TensorCores (half a chip); v4 onwards a device is a whole chip. float32 runs are
# measured against the same peak (TPUs and recent GPUs run f32 matmuls on the bf16
# units with extra passes, or as TF32).
PEAK_FLOPS = {
    "TPU v2": 22.5e12,
    "TPU v3": 61.5e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L4": 121e12,
}


def train_flops_per_token(cfg: BertConfig, seq_len: int, predictions: int) -> float:
  """Useful FLOPs of one train step (forward + backward) per input position.

  A matmul with a [n, m] weight costs 2nm FLOPs per row forward and twice that
  backward (gradients of input and weight): 6nm in all.
  - Encoder: every position passes each layer's Q, K, V, output (4 d^2) and
    feed-forward (2 d f) kernels: 6 N with N the non-embedding kernel entries.
  - Attention: scores QK^T and the weighted sum of V take 2 * seq_len * d
    multiply-adds per position and layer: 12 L d seq_len with the backward pass.
  - MLM head only at the `predictions` masked positions of each sequence: the
    transform (d^2) and the tied vocabulary projection (V d).
  - Pooler and NSP classifier (d^2 + 2d) once per sequence.
  Embedding lookups are gathers; biases, LayerNorm, softmax and GELU are O(d) per
  position and not counted.
  """
  d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  encoder = 6 * layers * (4 * d * d + 2 * d * f)
  attention = 12 * layers * d * seq_len
  mlm_head = 6 * (d * d + cfg.vocab_size * d) * predictions / seq_len
  nsp_head = 6 * (d * d + 2 * d) / seq_len
  return encoder + attention + mlm_head + nsp_head


def measure_matmul_flops(dtype: str = "float32", n: int = 2048, reps: int = 5,
                         device=None) -> float:
  """Best FLOP/s of a jitted n x n matmul on `device`: the CPU's practical peak (all
  of the host's cores work on one matmul). Products are summed in float32, as the
  model's matmuls do (for bfloat16 that is also XLA:CPU's fastest kernel)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def peak_flops(devices, dtype: str = "float32") -> tuple[float | None, str]:
  """(peak FLOP/s of `devices` together, where the number comes from).

  Accelerators: PEAK_FLOPS by device kind (None for a kind not in the table). CPU:
  a measured matmul per process, since a process's emulated CPU devices share its
  cores.
  """
  devices = list(devices)
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    processes = len({d.process_index for d in devices})
    local = [d for d in devices if d.process_index == jax.process_index()]
    return (processes * measure_matmul_flops(dtype, device=local[0]),
            f"measured {dtype} 2048x2048 matmul")
  for name, peak in PEAK_FLOPS.items():
    if name in kind:
      return len(devices) * peak, f"table: {name} bf16 dense"
  return None, f"unknown device kind {kind!r}"

"""The CLI keeps freed host memory: a jitted call's large buffers are reused, not
faulted in afresh each call (see bert_jax/host_memory.py)."""

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
if sys.argv[1] == "cli":
  import bert_jax.main  # what `bert-jax` runs first
import jax, jax.numpy as jnp
n = 32 * 2**20  # a 128 MiB output per call
f = jax.jit(lambda a: a * 2 + 1)
a = jnp.ones((n,), jnp.float32)
for _ in range(16):  # the heap grows over the first calls (8 here), until freed blocks fit
  jax.block_until_ready(f(a))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
jax.block_until_ready(f(a))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (n * 4 / 4096))
"""


def _faults_per_page(mode: str) -> float:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True,
                       capture_output=True, text=True).stdout
  return float(out.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_cli_reuses_large_buffers_instead_of_faulting_them_in():
  if _faults_per_page("plain") < 0.5:
    pytest.skip("this C library keeps freed memory by itself")
  assert _faults_per_page("cli") < 0.05

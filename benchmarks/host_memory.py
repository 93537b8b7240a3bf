"""Page faults per page of a jitted call's 128 MiB output, with glibc's malloc
defaults and with the settings `bert-jax` applies first thing (host_memory.py).
Prints one JSON line. With the defaults every call faults its output's pages in
afresh (about 1.0 per page); with the CLI's settings, after the heap has grown over
the first calls, none.

    python benchmarks/host_memory.py [--calls 16]
"""

import argparse
import json
import subprocess
import sys

_PROBE = """
import resource, sys
if sys.argv[1] == "cli":
  import bert_jax.main
import jax, jax.numpy as jnp
n = 32 * 2**20  # a 128 MiB output per call
f = jax.jit(lambda a: a * 2 + 1)
a = jnp.ones((n,), jnp.float32)
for _ in range(int(sys.argv[2])):  # the heap grows over the first calls
  jax.block_until_ready(f(a))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
jax.block_until_ready(f(a))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (n * 4 / 4096))
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--calls", type=int, default=16, help="warm-up calls first")
  args = parser.parse_args()
  result = {}
  for mode in ("default", "cli"):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode, str(args.calls)],
                         check=True, capture_output=True, text=True).stdout
    result[f"faults_per_page_{mode}"] = round(float(out.split()[-1]), 3)
  print(json.dumps({"what": "host_memory", "warmup_calls": args.calls, **result}))


if __name__ == "__main__":
  main()

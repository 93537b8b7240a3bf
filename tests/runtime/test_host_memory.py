"""The CLI keeps freed host memory (bert_jax/runtime/host_memory.py): after
`bert_jax.main` is imported, glibc serves a 128 MiB block from the heap, not from a
fresh mmap, and keeps it in the heap once freed, so the next step's buffers reuse
those pages instead of faulting new ones in.

The test reads the allocator's own accounting (mallinfo2), which its settings decide
exactly whatever the machine's load or memory; how many page faults that saves is a
measurement, made by benchmarks/host_memory.py."""

import ctypes
import subprocess
import sys

import pytest

_PROBE = """
import ctypes, sys
if sys.argv[1] == "cli":
  import bert_jax.main  # what `bert-jax` runs first

class MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
      "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
n = 128 << 20
block = libc.malloc(n)
mapped = libc.mallinfo2().hblkhd  # bytes in mmapped blocks: ours, if mmapped
libc.free(block)
kept = libc.mallinfo2().fordblks  # free bytes the heap keeps after the free
print(int(mapped >= n), int(kept >= n))
"""


def _probe(mode: str) -> tuple[int, int]:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True,
                       capture_output=True, text=True).stdout
  mapped, kept = out.split()[-2:]
  return int(mapped), int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc >= 2.33")
def test_cli_keeps_large_freed_blocks_in_the_heap():
  # glibc's defaults: a 128 MiB block is its own mmap, unmapped when freed.
  assert _probe("plain") == (1, 0)
  # After the CLI's settings: from the heap, and still there once freed.
  assert _probe("cli") == (0, 1)

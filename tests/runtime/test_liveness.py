"""A hung process is named: two real processes joined by jax.distributed (gloo, the
runtime's key-value store), one of which stops before a check-in; and the
single-process check costs nothing."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from bert_jax.runtime import liveness

pytestmark = pytest.mark.serial  # timeouts of seconds against sleeps

_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    index = int(sys.argv[2])
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=index)
    from bert_jax.errors import TrainingStopped
    from bert_jax.runtime import liveness
    check = liveness.Liveness(timeout_s=3)
    try:
      check.check(1)
      check.check(2)  # both are here: no error
      if index == 1:
        time.sleep(12)  # stuck before the next step's collectives
      check.check(3)
      print("NO ERROR", flush=True)
    except TrainingStopped as e:
      print("STOPPED:", e, flush=True)
    os._exit(0)  # no shutdown barrier with a process that is gone
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_process_that_stops_is_named_by_the_others(tmp_path):
  script = tmp_path / "job.py"
  script.write_text(_SCRIPT)
  address = f"127.0.0.1:{_free_port()}"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  procs = [subprocess.Popen([sys.executable, str(script), address, str(i)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    out0, _ = procs[0].communicate(timeout=120)
  finally:
    for p in procs:
      p.kill()
  stopped = [line for line in out0.splitlines() if line.startswith("STOPPED:")]
  assert stopped, out0[-2000:]
  assert "process 1 of 2 did not reach step 3 within 3 s" in stopped[0]
  assert "last step reached: process 0 3, process 1 2" in stopped[0]


def test_one_process_needs_no_runtime():
  liveness.Liveness(timeout_s=1).check(1)  # no distributed client, returns
  assert liveness.Liveness(timeout_s=1).behind() == ""

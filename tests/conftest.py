"""8 emulated CPU devices for every test; must run before jax is imported.

Compiled programs go to a persistent compilation cache made fresh for this session
(and inherited by the CLI subprocesses the tests start): the suite compiles the same
tiny train step in dozens of processes, and a hit changes only how long a test
takes, never what it computes. Each process removes its cache when it exits (a
test session's cache is hundreds of MB, and /tmp is not always cleaned)."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bert_jax-test-xla-")
_CACHE_DIR = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402


def pytest_unconfigure():  # pluggy passes only the arguments a hook names
  shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (still run in CI)")
  config.addinivalue_line(
      "markers", "serial: waits on wall-clock limits (gloo's 30 s, liveness timeouts, "
      "kill timing, time budgets), so `make test` runs it alone after the others, "
      "which run two at a time")


@pytest.fixture(scope="session")
def tiny_config():
  from bert_jax.configs import pretrain  # pylint: disable=g-import-not-at-top
  return pretrain.get_config("tiny")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, tiny_config):
  """Shards of 200 embedded-corpus documents (4 shards, 4 streams) shared by the
  pretraining tests that need data but not their own; the tokenizer stays in `prep`."""
  from bert_jax.data import prepare  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("tiny_data")
  config = tiny_config.copy_and_resolve_references()
  config.data.update(max_documents=200, num_shards=4, num_streams=4, prepared_dir=str(out))
  prepare.run(config, str(out.parent / "prep"))
  return str(out)

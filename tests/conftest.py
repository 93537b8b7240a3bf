"""8 emulated CPU devices for every test; must run before jax is imported."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (still run in CI)")


@pytest.fixture(scope="session")
def tiny_config():
  from bert_jax.configs import pretrain  # pylint: disable=g-import-not-at-top
  return pretrain.get_config("tiny")

"""The package's import structure: every module imports; the import graph (function-
level imports included) has no cycle; no module imports the package root; each
subpackage depends only on the ones before it; and the model, runtime, pretraining
step, checkpoints, `plan` and `benchmark --what step` import and run with TensorFlow
blocked from import (an accelerator image may not have it)."""

import ast
import importlib
import os
import pathlib
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import bert_jax

PACKAGE = pathlib.Path(bert_jax.__file__).parent
# Subpackages in dependency order: each may import only those at or before its rank.
ORDER = ("errors", "configs", "model", "runtime", "data", "interop", "pretrain",
         "distill", "finetune", "inference", "tools", "main", "__main__")


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(("bert_jax",) + parts)] = path
  return out


def _imports(path: pathlib.Path, modules) -> set[str]:
  """The bert_jax modules a file imports, anywhere in it."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("bert_jax"))
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bert_jax"):
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        found.add(sub if sub in modules else node.module)
  return found


def _graph():
  modules = _modules()
  return {name: _imports(path, modules) for name, path in modules.items()}


def _rank(module: str) -> int:
  return ORDER.index(module.split(".")[1])


def test_every_module_imports():
  for info in pkgutil.walk_packages(bert_jax.__path__, "bert_jax."):
    if not info.name.endswith("__main__"):  # runs the CLI
      importlib.import_module(info.name)


def test_import_graph_is_acyclic_layered_and_never_imports_the_root():
  graph = _graph()
  roots = sorted(m for m, deps in graph.items() if "bert_jax" in deps and m != "bert_jax")
  assert not roots, f"modules importing the package root: {roots}"
  upward = sorted(f"{m} -> {d}" for m, deps in graph.items() if m != "bert_jax"
                  for d in deps if d != "bert_jax" and _rank(d) > _rank(m))
  assert not upward, f"imports against the dependency order {ORDER}: {upward}"
  # Depth-first search for a back edge.
  state, path = {}, []

  def visit(m):
    state[m] = "open"
    path.append(m)
    for d in sorted(graph.get(m, ())):
      if state.get(d) == "open":
        raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
      if d not in state:
        visit(d)
    path.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_the_checker_finds_a_cycle_and_an_upward_import(monkeypatch):
  """The structure test above can fail: fed a graph with a cycle, it does."""
  fake = {"bert_jax.model.a": {"bert_jax.runtime.b"}, "bert_jax.runtime.b": {"bert_jax.model.a"}}
  monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: fake)
  try:
    test_import_graph_is_acyclic_layered_and_never_imports_the_root()
  except AssertionError as e:
    assert "model.a -> bert_jax.runtime.b" in str(e)
  else:
    raise AssertionError("an upward import went unnoticed")
  fake = {"bert_jax.model.a": {"bert_jax.model.b"}, "bert_jax.model.b": {"bert_jax.model.a"}}
  try:
    test_import_graph_is_acyclic_layered_and_never_imports_the_root()
  except AssertionError as e:
    assert "import cycle" in str(e)
  else:
    raise AssertionError("a cycle went unnoticed")


# Runs with site-packages replaced by a view of it without TensorFlow: as if it were
# not installed (importlib finds no spec for it, as etils and orbax probe).
_WITHOUT_TF = r"""
import importlib.util, site, sys, tempfile
sys.path = [p for p in sys.path if not p.endswith("site-packages")]
site.addsitedir(sys.argv[1])
assert importlib.util.find_spec("tensorflow") is None

import jax
from bert_jax.configs import pretrain as configs
from bert_jax.model import attention, bert, dropout, matmul, task_model
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import (checkpoints, flops, nonfinite, optimizer, preemption,
                              profiler, setup, sharding, state, step, writers)
from bert_jax.tools import benchmark, plan

config = configs.get_config("tiny")
config.train.global_batch_size = 8
config.data.max_seq_length = 32
config.data.max_predictions_per_seq = 4
result = benchmark.run(config, steps=1, warmup=1)
assert result["step_ms"] > 0
assert plan.run(config)["peak_bytes_per_device"] > 0
timer = benchmark.StepTimer(config)
with tempfile.TemporaryDirectory() as workdir:
  writers.Logger(workdir, 1, tokens_per_step=1).close()  # metrics.jsonl + TensorBoard
  mngr = checkpoints.manager(workdir, async_save=False)
  checkpoints.save(mngr, timer.state)
  restored, _ = checkpoints.restore(mngr, 0, timer.setup.restore_target())
  mngr.close()
assert not [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
print("ok without tensorflow")
"""


@pytest.mark.slow
def test_runtime_plan_and_step_benchmark_run_without_tensorflow(tmp_path):
  site_packages = pathlib.Path(np.__file__).parents[1]
  view = tmp_path / "site-packages"
  view.mkdir()
  for entry in site_packages.iterdir():
    if not entry.name.lower().startswith(("tensorflow", "tf_keras")):
      (view / entry.name).symlink_to(entry)
  out = subprocess.run([sys.executable, "-c", _WITHOUT_TF, str(view)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0 and "ok without tensorflow" in out.stdout, out.stderr[-3000:]

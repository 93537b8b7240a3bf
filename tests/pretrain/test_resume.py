"""pretrain/resume.py: which config changes a workdir's run accepts."""

import json
import os

import pytest

from bert_jax.configs import pretrain as configs
from bert_jax.errors import InputError
from bert_jax.pretrain import resume
from bert_jax.runtime import checkpoints


@pytest.fixture
def workdir(tmp_path):
  """A workdir whose run has a checkpoint (an empty step directory is enough to count)."""
  checkpoints.write_config(str(tmp_path), configs.get_config("tiny"))
  os.makedirs(tmp_path / "checkpoints" / "100")
  return str(tmp_path)


def _check(config, workdir):
  resume.check(config, workdir, os.path.join(workdir, "data"))


def test_resumable_changes_pass(workdir):
  c = configs.get_config("tiny")
  c.train.num_steps, c.train.time_budget, c.train.eval_every = 5000, 600.0, 7
  c.mesh.shape, c.model.remat, c.data.eval_mask_prob = (2, 2, 2), "full", 0.15
  _check(c, workdir)


@pytest.mark.parametrize("group,field,value", [
    ("model", "hidden_size", 256), ("data", "mask_prob", 0.4),
    ("optimizer", "learning_rate", 1e-3), ("train", "global_batch_size", 64),
    ("data", "input", "other.txt"), ("model", "scan_layers", True)])
def test_other_changes_are_refused_by_name(workdir, group, field, value):
  c = configs.get_config("tiny")
  c[group][field] = value
  with pytest.raises(InputError, match=rf"holds a run with {group}\.{field}="):
    _check(c, workdir)


def test_fields_an_older_version_lacks_are_not_compared(workdir):
  path = os.path.join(workdir, checkpoints.CONFIG_FILE)
  old = json.load(open(path))
  del old["data"]["whole_word_masking"]
  json.dump(old, open(path, "w"))
  c = configs.get_config("tiny")
  c.data.whole_word_masking = True
  _check(c, workdir)


def test_a_workdir_without_a_run_accepts_anything(tmp_path):
  checkpoints.write_config(str(tmp_path), configs.get_config("tiny"))  # no checkpoint, no data
  _check(configs.get_config("mini"), str(tmp_path))

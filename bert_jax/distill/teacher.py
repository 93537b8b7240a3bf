"""The teacher: loaded once, checked against the student, cast and sharded like it.

The teacher is frozen: its params are an input of the jitted step (runtime/step.py's
`frozen`), never in the train state, the optimizer or the checkpoints. A resumed
run loads it again from the same directory.
"""

import dataclasses
import logging

from etils import epath
import jax
import jax.numpy as jnp

from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import InputError
from bert_jax.model import bert as model_lib
from bert_jax.runtime import sharding

log = logging.getLogger(__name__)


def check_vocabulary(teacher_cfg, teacher_tok, student_vocab: int,
                     student_tokenizer_dir: str | None, teacher_dir: str) -> None:
  """A student must read the teacher's tokens: KL over the vocabulary (or a tagger's
  sub-word labels) compares the same ids. One line when it cannot."""
  if student_vocab != teacher_cfg.vocab_size:
    raise InputError(
        f"teacher={teacher_dir} has a vocabulary of {teacher_cfg.vocab_size} tokens, the "
        f"student {student_vocab}: a student must share its teacher's vocabulary")
  found = student_tokenizer_dir and tokenizer_lib.find(student_tokenizer_dir)
  if found and teacher_tok is not None and not _same_files(found, teacher_tok.files):
    raise InputError(
        f"{found} is another vocabulary than teacher={teacher_dir}'s "
        f"({teacher_tok.files[0]}): a student must share its teacher's tokenizer")


def _same_files(path: str, teacher_files) -> bool:
  name = epath.Path(path).name
  match = [f for f in teacher_files if epath.Path(f).name == name]
  return bool(match) and epath.Path(path).read_bytes() == epath.Path(match[0]).read_bytes()


def frozen_model(model, dtype: str):
  """The teacher module computing and storing its params in `dtype` (a frozen model
  needs no float32 master copy), dropout off (it always runs deterministic)."""
  cfg = dataclasses.replace(model.cfg, dtype=dtype, param_dtype=dtype, remat="none")
  return model.clone(cfg=cfg)


def shardings(model, seq_len: int):
  """frozen_shardings for setup.build: the teacher's params split by their logical
  axes over the student's mesh and rules, as the student's are."""
  boxed = model_lib.abstract_params(model, seq_len, boxed=True)
  return lambda mesh, rules: sharding.logical_shardings(boxed, mesh, rules)


def place(params, model, s, seq_len: int):
  """`params` cast to the frozen model's param dtype and put on the setup's mesh."""
  dtype = jnp.dtype(model.cfg.param_dtype)
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
  return jax.device_put(params, shardings(model, seq_len)(s.mesh, s.rules))

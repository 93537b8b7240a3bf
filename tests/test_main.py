"""Bad input through the CLI: every case ends with exit code 2 and one line naming its
cause (our warnings may come before it), and a workdir that existed is byte for byte what it was (a workdir that did
not exist is not made). The commands run in this process (bert_jax.main, as the
console script calls it), so the table costs no interpreter start-ups."""

import hashlib
import json
import os
import re
import shutil
import sys

from absl import flags
import numpy as np
import pytest

from bert_jax import main as cli
from tests import synthetic_tasks as st

PRETRAIN = "configs/pretrain.py:tiny"


def run_cli(*args: str, capsys, with_stdout: bool = False) -> tuple:
  """(exit code, stderr) of `bert-jax ARGS` run in this process; with_stdout adds
  what it printed: (exit code, stderr, stdout)."""
  argv = ["bert-jax", *args]
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # --config.K overrides are defined anew by each parse
  saved, sys.argv = sys.argv, argv  # config_flags reads its overrides from sys.argv
  capsys.readouterr()
  try:
    cli.main(cli._parse_flags(argv))  # pylint: disable=protected-access
    code = 0
  except SystemExit as e:
    code = e.code
  finally:
    sys.argv = saved
    flags.FLAGS.unparse_flags()
  captured = capsys.readouterr()
  return (code, captured.err, captured.out) if with_stdout else (code, captured.err)


def checksums(root: str) -> dict:
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """The inputs of the table: a pretrain workdir (config.json, tokenizer, checkpoint),
  one that also holds prepared data, a fine-tuning workdir's config.json, bad corpora
  and data files, a corrupt safetensors checkpoint."""
  root = tmp_path_factory.mktemp("bad_inputs")
  run = root / "run"
  st.pretrained_tiny(str(run))
  with_data = root / "with_data"
  shutil.copytree(run, with_data)
  (with_data / "data").mkdir()
  (with_data / "data" / "stats.json").write_text(json.dumps({"vocab_size": 128}))
  from bert_jax.configs import finetune  # pylint: disable=g-import-not-at-top
  tuned = root / "tuned"
  tuned.mkdir()
  (tuned / "config.json").write_text(finetune.get_config("classification").to_json())
  (root / "empty.txt").write_text("")
  (root / "binary.txt").write_bytes(bytes(range(256)) * 64)
  (root / "empty_label.csv").write_text("text,label\n红色的车,red\n一辆车,\n")
  (root / "train.csv").write_text("text,label\n红色的车,red\n蓝色的车,blue\n")
  bad_hf = root / "bad_hf"
  bad_hf.mkdir()
  (bad_hf / "config.json").write_text(json.dumps({
      "model_type": "bert", "vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
      "type_vocab_size": 2}))
  (bad_hf / "model.safetensors").write_bytes(b"\x10\x00\x00\x00not safetensors")
  (root / "a_file").write_text("x")
  no_checkpoint = root / "no_checkpoint"
  shutil.copytree(run, no_checkpoint)
  shutil.rmtree(no_checkpoint / "checkpoints")
  (no_checkpoint / "checkpoints").mkdir()
  damaged = root / "damaged"  # a checkpoint whose array files were lost
  shutil.copytree(run, damaged)
  for d, _, names in os.walk(damaged / "checkpoints"):
    for name in names:
      if "_METADATA" not in name and "_CHECKPOINT_METADATA" not in name:
        os.remove(os.path.join(d, name))
  (root / "tokenizer_only" / "tokenizer").mkdir(parents=True)
  shutil.copy(run / "tokenizer" / "spm.model", root / "tokenizer_only" / "tokenizer")
  from bert_jax.inference import index  # pylint: disable=g-import-not-at-top
  (root / "two.txt").write_text("w1 red\nw2 blue\n")
  three = ["w1 red", "w2 blue", "w3 green"]
  (root / "three.txt").write_text("\n".join(three) + "\n")
  # An index of three.txt made by some model that is not `run`.
  index.write(str(root / "other.npy"), np.eye(3, 32, dtype=np.float32), {
      "model": {"workdir": "/elsewhere", "step": 7, "fingerprint": "0" * 16},
      "pooling": "cls", "max_length": 16, "count": 3, "dim": 32,
      "texts": {"path": str(root / "three.txt"), "sha256": index.texts_hash(three)}})
  return root


def _tiny(*overrides):
  return ("--config", PRETRAIN, *(f"--config.{o}" for o in overrides))


def _search(texts: str) -> tuple[str, ...]:
  """`search` of run's model in {root}/other.npy with {root}/TEXTS."""
  return ("search", "--workdir", "{root}/run", "--index", "{root}/other.npy", "--texts",
          f"{{root}}/{texts}", "--query", "w1 red")


def _classify(init_from="run", train="train.csv", workdir="new"):
  """`finetune` of a classifier from {root}/INIT_FROM on {root}/TRAIN."""
  return ("finetune", "--config", "configs/finetune.py:classification",
          f"--config.init_from={{root}}/{init_from}", f"--config.train_file={{root}}/{train}",
          "--config.eval_file={root}/train.csv", "--workdir", f"{{root}}/{workdir}")


# (id, argv with {root} for the files fixture's directory, message fragment, the
# existing workdir to checksum or None; "{root}/new" must not exist afterwards).
CASES = [
    ("resume_other_size", ("pretrain", "--config", "configs/pretrain.py:mini",
                           "--workdir", "{root}/run"), "holds a run with model.size='tiny'", "run"),
    ("resume_other_vocab", ("pretrain", "--config", PRETRAIN, "--workdir", "{root}/run",
                            "--config.model.vocab_size=1000"),
     "holds a run with model.vocab_size=128, this config says 1000", "run"),
    ("prepare_over_data", ("prepare", *_tiny(), "--workdir", "{root}/with_data"),
     "already holds prepared data; pass --overwrite", "with_data"),
    ("prepare_overwrite_under_checkpoints",
     ("prepare", *_tiny(), "--workdir", "{root}/with_data", "--overwrite"),
     "--overwrite would orphan them", "with_data"),
    ("seq_over_positions", ("pretrain", *_tiny("data.max_seq_length=1024"),
                            "--workdir", "{root}/new"),
     "data.max_seq_length=1024 is longer than the model's model.max_position_embeddings=512",
     None),
    ("negative_steps", ("pretrain", *_tiny("train.num_steps=-3"), "--workdir", "{root}/new"),
     "train.num_steps=-3 must be at least 1", None),
    ("negative_budget", ("pretrain", *_tiny("train.time_budget=-1"),
                         "--workdir", "{root}/new"), "train.time_budget=-1", None),
    ("microbatches_do_not_divide", ("pretrain", *_tiny("train.microbatches=3"),
                                    "--workdir", "{root}/new"),
     "train.microbatches=3 must be at least 1 and divide", None),
    ("target_accuracy_out_of_range", ("pretrain", *_tiny("train.target_mlm_accuracy=1.5"),
                                      "--workdir", "{root}/new"),
     "train.target_mlm_accuracy=1.5 must be in [0, 1)", None),
    ("zero_liveness_timeout", ("pretrain", *_tiny("train.liveness_timeout=0"),
                               "--workdir", "{root}/new"),
     "train.liveness_timeout=0", None),
    ("empty_corpus", ("prepare", *_tiny("data.input={root}/empty.txt"),
                      "--workdir", "{root}/new"), "no text", None),
    ("binary_corpus", ("prepare", *_tiny("data.input={root}/binary.txt"),
                       "--workdir", "{root}/new"), "binary.txt", None),
    ("vocab_below_specials", ("prepare", *_tiny("model.vocab_size=4"),
                              "--workdir", "{root}/new"),
     "model.vocab_size=4 leaves no room beside the 5 special tokens", None),
    ("vocab_too_small_for_corpus", ("prepare", *_tiny("model.vocab_size=40",
                                                      "data.max_documents=120"),
                                    "--workdir", "{root}/new"),
     "SentencePiece cannot train a 40-piece vocabulary", None),
    # Fails after the tokenizer and the shards were written: both are removed again.
    ("too_few_rows", ("prepare", *_tiny("data.max_documents=101"), "--workdir", "{root}/new"),
     "rows for 8 shards", None),
    ("everything_held_out", ("prepare", *_tiny("data.max_documents=100"),
                             "--workdir", "{root}/new"),
     "data.max_documents=100 leaves nothing to train on", None),
    ("heads_do_not_divide", ("pretrain", *_tiny("model.num_heads=3"),
                             "--workdir", "{root}/new"),
     "model.num_heads=3 does not divide model.hidden_size=128", None),
    ("eval_mask_rate_out_of_range", ("pretrain", *_tiny("data.eval_mask_prob=1.5"),
                                     "--workdir", "{root}/new"),
     "data.eval_mask_prob=1.5 must be in (0, 1)", None),
    ("unknown_dtype", ("pretrain", *_tiny("model.dtype=float8"), "--workdir", "{root}/new"),
     "model.dtype='float8'; choose one of", None),
    ("unknown_objective", ("prepare", *_tiny("data.objective=nsp2"),
                           "--workdir", "{root}/new"), "data.objective='nsp2'", None),
    ("unknown_optimizer", ("pretrain", *_tiny("optimizer.name=sgd"),
                           "--workdir", "{root}/new"), "optimizer.name='sgd'", None),
    ("batch_not_multiple_of_streams", ("pretrain", *_tiny("train.global_batch_size=12"),
                                       "--workdir", "{root}/new"),
     "train.global_batch_size=12 is not a multiple of data.num_streams=8", None),
    ("batch_not_divisible_by_data_parallel", (
        "pretrain", *_tiny("train.global_batch_size=4", "data.num_streams=4",
                           "data.num_shards=4", "mesh.shape=(8,1,1)"),
        "--workdir", "{root}/new"),
     "train.global_batch_size=4 is not divisible by the data-parallel size 8", None),
    ("missing_config_file", ("pretrain", "--config", "configs/nothere.py",
                             "--workdir", "{root}/new"), "No such file", None),
    ("unknown_size", ("pretrain", "--config", "configs/pretrain.py:huge",
                      "--workdir", "{root}/new"), "unknown model size or preset 'huge'", None),
    ("misspelled_key", ("pretrain", *_tiny("train.num_step=3"), "--workdir", "{root}/new"),
     "unknown config key", None),
    ("workdir_is_a_file", ("prepare", *_tiny(), "--workdir", "{root}/a_file"),
     "is a file, not a directory", None),
    ("empty_label", _classify(train="empty_label.csv"),
     "empty_label.csv:3: missing field(s) ['label']", None),
    ("finetune_into_pretrain_workdir", _classify(workdir="run"),
     "holds a pretraining run", "run"),
    ("init_from_without_checkpoint", _classify(init_from="tokenizer_only"),
     "not a pretrain workdir", "tokenizer_only"),
    ("init_from_empty_checkpoints", _classify(init_from="no_checkpoint"),
     "no checkpoint in", "no_checkpoint"),
    ("init_from_damaged_checkpoint", _classify(init_from="damaged"),
     "cannot read the checkpoint at step 0", "damaged"),
    ("pretrain_workdir_is_a_file", ("pretrain", *_tiny(), "--workdir", "{root}/a_file"),
     "is a file, not a directory", None),
    ("train_file_missing", _classify(train="nothere.csv"),
     "nothere.csv does not exist", "run"),
    ("corpus_glob_matches_nothing", ("prepare", *_tiny("data.input={root}/nothing*.txt"),
                                     "--workdir", "{root}/new"), "nothing*.txt", None),
    ("finetune_bad_warmup", ("finetune", "--config", "configs/finetune.py:classification",
                             "--config.optimizer.warmup_fraction=1.5",
                             "--workdir", "{root}/new"),
     "optimizer.warmup_fraction=1.5 must be in [0, 1)", None),
    ("tagging_crf_not_a_boolean", ("finetune", "--config", "configs/finetune.py:tagging",
                                   "--config.tagging.crf=maybe", "--workdir", "{root}/new"),
     "Non-boolean argument to boolean flag", None),
    ("crf_on_a_classifier", ("finetune", "--config", "configs/finetune.py:classification",
                             "--config.tagging.crf=True", "--workdir", "{root}/new"),
     "unknown config key 'tagging'", None),
    ("distill_a_crf_student", ("distill", "--config", "configs/distill.py:tagging",
                               "--config.tagging.crf=True", "--workdir", "{root}/new"),
     "tagging.crf: task distillation matches", None),
    ("predict_output_dir_missing", ("predict", "--workdir", "{root}/run", "--input",
                                    "{root}/train.csv", "--output", "{root}/no/such/out.jsonl"),
     "does not exist", "run"),
    ("predict_output_is_a_dir", ("predict", "--workdir", "{root}/run", "--input",
                                 "{root}/train.csv", "--output", "{root}/tuned"),
     "is a directory; name a file", "run"),
    ("predict_not_finetuned", ("predict", "--workdir", "{root}/run", "--input",
                               "{root}/train.csv", "--output", "{root}/new.jsonl"),
     "holds no fine-tuned model", "run"),
    ("convert_corrupt_safetensors", ("convert", "--from", "hf", "{root}/bad_hf", "--to",
                                     "orbax", "{root}/new"),
     "not a readable safetensors file", "bad_hf"),
    ("convert_onto_a_file", ("convert", "--from", "orbax", "{root}/run", "--to", "hf",
                             "{root}/a_file"), "is a file, not a directory", "run"),
    ("convert_finetune_workdir", ("convert", "--from", "orbax", "{root}/tuned", "--to", "hf",
                                  "{root}/new"), "has no model section", "tuned"),
    ("convert_missing_source", ("convert", "--from", "hf", "{root}/nothing", "--to", "orbax",
                                "{root}/new"), "is not a directory", None),
    ("embed_empty_text_file", ("embed", "--workdir", "{root}/run", "--input",
                               "{root}/empty.txt", "--output", "{root}/new.npy"),
     "empty.txt holds no text", "run"),
    ("embed_unknown_pooling", ("embed", "--workdir", "{root}/run", "--input",
                               "{root}/three.txt", "--output", "{root}/new.npy",
                               "--pooling", "max"), "--pooling=max", "run"),
    ("embed_max_length_below_3", ("embed", "--workdir", "{root}/run", "--input",
                                  "{root}/three.txt", "--output", "{root}/new.npy",
                                  "--max_length", "2"), "max_length=2 must be in [3,", "run"),
    ("search_rows_not_texts", _search("two.txt"), "two.txt has 2 texts, --index", "run"),
    ("search_k_zero", (*_search("three.txt"), "--k", "0"), "-k 0 must be at least 1", "run"),
    ("search_empty_query", (*_search("three.txt")[:-1], " "), "--query is empty", "run"),
    ("export_not_a_workdir", ("export", "--workdir", "{root}/nothing", "--output",
                              "{root}/new"), "does not exist or is not a directory", None),
    ("export_into_a_full_directory", ("export", "--workdir", "{root}/run", "--output",
                                      "{root}/tuned"), "exists and is not empty", "tuned"),
    ("export_negative_batch", ("export", "--workdir", "{root}/run", "--output", "{root}/new",
                               "--export_batch", "-1"), "--export_batch", "run"),
    ("export_max_length_below_3", ("export", "--workdir", "{root}/run", "--output",
                                   "{root}/new", "--max_length", "2"),
     "max_length=2 must be in [3,", "run"),
    ("negative_tokenizer_threads", ("prepare", *_tiny("data.tokenizer_threads=-1"),
                                    "--workdir", "{root}/new"),
     "data.tokenizer_threads=-1", None),
    ("search_index_of_another_model", _search("three.txt"),
     "was made by another model (/elsewhere step 7", "run"),
    ("unknown_position_init", ("pretrain", *_tiny("model.position_init=rope"),
                               "--workdir", "{root}/new"), "model.position_init='rope'", None),
    ("similarity_zero_temperature", ("finetune", "--config",
                                     "configs/finetune.py:similarity",
                                     "--config.similarity.temperature=0",
                                     "--workdir", "{root}/new"),
     "similarity.temperature=0.0 must be above 0", None),
    ("similarity_eval_without_pairs",
     ("finetune", "--config", "configs/finetune.py:similarity",
      "--config.init_from={root}/run", "--config.train_file={root}/train.csv",
      "--config.eval_file={root}/train.csv", "--workdir", "{root}/new"),
     "train.csv:2: an eval row needs a text_pair", "run"),
    ("distill_teacher_of_another_vocabulary",
     ("distill", "--config", "configs/distill.py:tiny", "--config.teacher={root}/run",
      "--workdir", "{root}/new"),
     "has a vocabulary of 128 tokens, the student 8000", "run"),
    ("distill_layers_that_do_not_map",
     ("distill", "--config", "configs/distill.py:tiny", "--config.teacher={root}/run",
      "--config.model.num_layers=3", "--config.distill.hidden_weight=1",
      "--workdir", "{root}/new"),
     "a student of 3 layers does not map evenly onto a teacher of 2", "run"),
    ("distill_without_teacher", ("distill", "--config", "configs/distill.py:tiny",
                                 "--workdir", "{root}/new"), "teacher is required", None),
    ("distill_zero_temperature", ("distill", "--config", "configs/distill.py:tiny",
                                  "--config.distill.temperature=0", "--workdir", "{root}/new"),
     "distill.temperature=0.0 must be above 0", None),
    ("distill_with_a_pretrain_config", ("distill", *_tiny(), "--workdir", "{root}/new"),
     "distill needs --config configs/distill.py", None),
    ("distill_task_qa", ("distill", "--config", "configs/distill.py:classification",
                         "--config.task=qa", "--workdir", "{root}/new"),
     "task='qa': task distillation runs classification, tagging", None),
    ("distill_task_teacher_not_fine_tuned",
     ("distill", "--config", "configs/distill.py:classification",
      "--config.init_from={root}/run", "--config.teacher={root}/run",
      "--config.train_file={root}/train.csv", "--config.eval_file={root}/train.csv",
      "--workdir", "{root}/new"), "holds no fine-tuned model", "run"),
    ("benchmark_zero_steps", ("benchmark", *_tiny(), "--steps", "0"), "--steps", None),
    ("benchmark_prepare_without_workdir", ("benchmark", *_tiny(), "--what", "prepare"),
     "benchmark --what prepare needs --workdir", None),
    ("benchmark_prepare_empty_corpus", ("benchmark", *_tiny(), "--what", "prepare",
                                        "--corpus_mb", "0", "--workdir", "{root}/new"),
     "--corpus_mb", None),
]


@pytest.mark.parametrize("argv,fragment,kept", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(files, capsys, argv, fragment, kept):
  argv = [a.replace("{root}", str(files)) for a in argv]
  before = checksums(files / kept) if kept else None
  code, err = run_cli(*argv, capsys=capsys)
  errors = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2, err
  # One error line, the last; before it only our timestamped log lines (a warning).
  assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
  assert all(re.match(r"\d\d:\d\d:\d\d ", l) for l in err.strip().splitlines()[:-1]), err
  assert fragment in errors[0], errors[0]
  assert "Traceback" not in err
  if kept:
    assert checksums(files / kept) == before
  assert not (files / "new").exists()
  assert not (files / "new.jsonl").exists()
  assert not (files / "new.npy").exists()


def test_verbose_shows_the_traceback(files, capsys):
  code, err = run_cli("pretrain", *_tiny("train.num_steps=0"), "--workdir",
                      str(files / "new"), "--verbose", capsys=capsys)
  assert code == 2
  assert "Traceback" in err and "error: train.num_steps=0" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_workdir(files, capsys, tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  code, err = run_cli("prepare", *_tiny(), "--workdir", str(ro / "w"), capsys=capsys)
  assert code == 2 and "permission denied" in err

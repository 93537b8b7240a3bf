"""SentencePiece tokenizer with BERT's special tokens at fixed ids.

[PAD]=0 and [UNK]=1 are SentencePiece's own pad/unk pieces; [CLS], [SEP] and [MASK]
are control symbols (never produced from text) at ids 2, 3 and 4.
"""

import io
import os
import random
from typing import Iterable

import sentencepiece as spm
import tensorflow as tf

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
# Ids below this are special; random MLM replacements are drawn from [NUM_SPECIAL, vocab).
NUM_SPECIAL = 5
MODEL_FILE = "tokenizer/spm.model"


def train(sentences: Iterable[str], vocab_size: int, max_sentences: int = 300_000,
          seed: int = 0) -> bytes:
  """Trains a unigram SentencePiece model; returns the serialized model."""
  sentences = [s for s in sentences if s.strip()]
  if len(sentences) > max_sentences:
    sentences = random.Random(seed).sample(sentences, max_sentences)
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=out,
      vocab_size=vocab_size, model_type="unigram",
      # 0.9995 keeps rare CJK characters as pieces instead of [UNK].
      character_coverage=0.9995,
      pad_id=PAD_ID, pad_piece="[PAD]", unk_id=UNK_ID, unk_piece="[UNK]",
      bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"],
      # Paragraphs of news text run to a few thousand characters.
      max_sentence_length=16384,
      # A small corpus may support fewer pieces than asked; take what it has rather
      # than fail. `load` reports the real size, and the model checks it fits.
      hard_vocab_limit=False,
      num_threads=os.cpu_count() or 1, minloglevel=2)
  return out.getvalue()


def load(path: str) -> spm.SentencePieceProcessor:
  with tf.io.gfile.GFile(path, "rb") as f:
    sp = spm.SentencePieceProcessor(model_proto=f.read())
  for piece, want in (("[PAD]", PAD_ID), ("[UNK]", UNK_ID), ("[CLS]", CLS_ID),
                      ("[SEP]", SEP_ID), ("[MASK]", MASK_ID)):
    if sp.piece_to_id(piece) != want:
      raise ValueError(f"{path}: {piece} has id {sp.piece_to_id(piece)}, expected {want}")
  return sp


def get_or_train(workdir: str, sentences_fn, vocab_size: int,
                 max_sentences: int, seed: int = 0) -> spm.SentencePieceProcessor:
  """Loads WORKDIR/tokenizer/spm.model, training it from `sentences_fn()` if absent."""
  path = os.path.join(workdir, MODEL_FILE)
  if not tf.io.gfile.exists(path):
    proto = train(sentences_fn(), vocab_size, max_sentences, seed)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
      f.write(proto)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
  sp = load(path)
  if sp.get_piece_size() > vocab_size:
    raise ValueError(f"{path} has {sp.get_piece_size()} pieces but the model's "
                     f"vocab_size is {vocab_size}")
  return sp

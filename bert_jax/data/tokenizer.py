"""Tokenizers behind one small interface: SentencePiece and WordPiece.

- SentencePiece (unigram) is what `prepare` trains for a new corpus: [PAD]=0 and
  [UNK]=1 are its own pad/unk pieces; [CLS], [SEP] and [MASK] are control symbols
  (never produced from text) at ids 2, 3 and 4.
- WordPiece reads the `vocab.txt` of an imported Google or Hugging Face BERT, with
  BERT's basic tokenization (text cleaning, optional lower-casing and accent
  stripping, punctuation split, every CJK character its own word) and greedy
  longest-match `##` continuations, [UNK] for a word over 100 characters or with no
  match. It is Hugging Face's `tokenizers` (Rust) implementation, not ours.

Both give ids *without* special tokens (callers add [CLS]/[SEP]) and, for span tasks,
the character span in the input text of every id. Special ids live in `SpecialIds`,
so masking and pair building work with either vocabulary.
"""

import abc
import dataclasses
import io
import json
import os
import random
from typing import Iterable

from etils import epath
import sentencepiece as spm

from bert_jax.errors import InputError

MODEL_FILE = "tokenizer/spm.model"     # in a pretrain workdir
VOCAB_FILE = "tokenizer/vocab.txt"     # an adopted WordPiece vocab, same place
# Where a directory may keep its tokenizer, in order of preference.
_CANDIDATES = (MODEL_FILE, VOCAB_FILE, "spm.model", "vocab.txt")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Ids of BERT's special tokens in a vocabulary. Defaults: our SentencePiece."""
  pad: int = 0
  unk: int = 1
  cls: int = 2
  sep: int = 3
  mask: int = 4

  @property
  def first_normal(self) -> int:
    """Random MLM replacements are drawn from [first_normal, vocab): above every
    special id (Google's vocabs keep [unused*] slots below [MASK]=103)."""
    return max(dataclasses.astuple(self)) + 1


SENTENCEPIECE_IDS = SpecialIds()
# Kept as module constants: the SentencePiece layout is fixed by `train` below.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = dataclasses.astuple(SENTENCEPIECE_IDS)
NUM_SPECIAL = SENTENCEPIECE_IDS.first_normal


class Tokenizer(abc.ABC):
  """Text -> ids (no special tokens added). Subclasses set `special`, `vocab_size`."""
  special: SpecialIds
  vocab_size: int
  files: tuple[str, ...]  # what to copy to carry this tokenizer elsewhere

  pad_id = property(lambda self: self.special.pad)
  unk_id = property(lambda self: self.special.unk)
  cls_id = property(lambda self: self.special.cls)
  sep_id = property(lambda self: self.special.sep)
  mask_id = property(lambda self: self.special.mask)

  def encode(self, text: str) -> list[int]:
    return self.encode_offsets(text)[0]

  def encode_batch(self, texts: list[str], threads: int = 0) -> list[list[int]]:
    """`encode` of each text; `threads` > 0 caps the threads it may use."""
    return [self.encode(t) for t in texts]

  @abc.abstractmethod
  def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and the [start, end) character span of each in `text`."""

  @abc.abstractmethod
  def id_to_token(self, i: int) -> str:
    """The vocabulary entry of id `i`."""


class SentencePieceTokenizer(Tokenizer):

  def __init__(self, sp: spm.SentencePieceProcessor, path: str = ""):
    self.sp = sp
    self.special = SENTENCEPIECE_IDS
    self.vocab_size = sp.get_piece_size()
    self.files = (path,) if path else ()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text, out_type=int)

  def encode_batch(self, texts: list[str], threads: int = 0) -> list[list[int]]:
    threads = threads or len(os.sched_getaffinity(0))
    return self.sp.encode(texts, out_type=int, num_threads=threads)

  def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = self.sp.encode(text, return_type="offset_mapping")  # character offsets
    return enc["ids"], [tuple(o) for o in enc["offsets"]]

  def id_to_token(self, i: int) -> str:
    return self.sp.id_to_piece(i)


class WordPieceTokenizer(Tokenizer):
  """BERT's WordPiece over a vocab.txt (one token per line, id = line number)."""

  def __init__(self, vocab_file: str, lowercase: bool | None = None,
               strip_accents: bool | None = None):
    # pylint: disable-next=g-import-not-at-top
    from tokenizers.implementations import BertWordPieceTokenizer
    with epath.Path(vocab_file).open() as f:
      vocab = [line.rstrip("\n") for line in f]
    if lowercase is None:
      lowercase = _is_uncased(vocab)
    index = {t: i for i, t in enumerate(vocab)}
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in index]
    if missing:
      raise ValueError(f"{vocab_file} lacks the special tokens {missing}")
    self.special = SpecialIds(index["[PAD]"], index["[UNK]"], index["[CLS]"],
                              index["[SEP]"], index["[MASK]"])
    self.vocab_size = len(vocab)
    self.lowercase = lowercase
    self.files = (vocab_file,)
    self._vocab = vocab
    # strip_accents=None follows lowercase, as in BERT and transformers.
    self._tok = BertWordPieceTokenizer(
        {t: i for i, t in enumerate(vocab)}, lowercase=lowercase,
        strip_accents=strip_accents, clean_text=True, handle_chinese_chars=True)

  def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = self._tok.encode(text, add_special_tokens=False)
    return enc.ids, [tuple(o) for o in enc.offsets]

  def encode_batch(self, texts: list[str], threads: int = 0) -> list[list[int]]:
    # HF tokenizers' own pool (RAYON_NUM_THREADS), shared by the process.
    return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

  def id_to_token(self, i: int) -> str:
    return self._vocab[i]


def _is_uncased(vocab: list[str]) -> bool:
  """Google's uncased vocabularies hold no upper-case token; cased ones hold many."""
  return not any(t.lower() != t for t in vocab if not (t.startswith("[") and t.endswith("]")))


def _hf_casing(directory: str) -> dict:
  """do_lower_case / strip_accents from an HF tokenizer_config.json beside the vocab
  (Google's releases have none: casing is then read off the vocab)."""
  path = os.path.join(directory, "tokenizer_config.json")
  if not epath.Path(path).exists():
    return {}
  with epath.Path(path).open() as f:
    hf = json.load(f)
  return {k: hf[h] for k, h in (("lowercase", "do_lower_case"),
                                ("strip_accents", "strip_accents")) if h in hf}


def load(path: str) -> Tokenizer:
  """A tokenizer from its file: a SentencePiece `.model` or a WordPiece vocab.txt."""
  if path.endswith(".txt"):
    return WordPieceTokenizer(path, **_hf_casing(os.path.dirname(path)))
  with epath.Path(path).open("rb") as f:
    sp = spm.SentencePieceProcessor(model_proto=f.read())
  for piece, want in (("[PAD]", PAD_ID), ("[UNK]", UNK_ID), ("[CLS]", CLS_ID),
                      ("[SEP]", SEP_ID), ("[MASK]", MASK_ID)):
    if sp.piece_to_id(piece) != want:
      raise ValueError(f"{path}: {piece} has id {sp.piece_to_id(piece)}, expected {want}")
  return SentencePieceTokenizer(sp, path)


def find(directory: str) -> str | None:
  """Path of the tokenizer file in a pretrain workdir, converted or HF/Google dir."""
  for name in _CANDIDATES:
    path = os.path.join(directory, name)
    if epath.Path(path).exists():
      return path
  return None


def from_dir(directory: str) -> Tokenizer | None:
  """The tokenizer kept in `directory` (see `find`), or None when there is none."""
  path = find(directory)
  return load(path) if path else None


def train(sentences: Iterable[str], vocab_size: int, max_sentences: int = 300_000,
          seed: int = 0, model_type: str = "unigram") -> bytes:
  """Trains a SentencePiece model of `model_type` (unigram, bpe or char); returns the
  serialized model."""
  sentences = [s for s in sentences if s.strip()]
  if not sentences:
    raise InputError("no text to train the tokenizer on: the corpus is empty or is not "
                     "text")
  if len(sentences) > max_sentences:
    sentences = random.Random(seed).sample(sentences, max_sentences)
  out = io.BytesIO()
  try:
    _train_spm(sentences, out, vocab_size, model_type)
  except RuntimeError as e:  # SentencePiece's own checks, e.g. too few pieces asked
    # "INTERNAL: src/trainer_interface.cc(638) [check] Vocabulary size is ...": the words.
    cause = str(e).strip().splitlines()[-1].split("] ")[-1] if str(e).strip() else repr(e)
    raise InputError(f"SentencePiece cannot train a {vocab_size}-piece vocabulary "
                     f"(model.vocab_size) on this corpus: {cause}") from e
  return out.getvalue()


def _train_spm(sentences: list[str], out, vocab_size: int, model_type: str) -> None:
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=out,
      vocab_size=vocab_size, model_type=model_type,
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


def get_or_train(workdir: str, sentences_fn, vocab_size: int,
                 max_sentences: int, seed: int = 0, model_type: str = "unigram") -> Tokenizer:
  """The workdir's tokenizer (SentencePiece model, or a WordPiece vocab adopted from
  an imported checkpoint); trains WORKDIR/tokenizer/spm.model from `sentences_fn()`
  when there is none (`model_type` applies only then)."""
  path = next((p for p in (os.path.join(workdir, MODEL_FILE),
                            os.path.join(workdir, VOCAB_FILE)) if epath.Path(p).exists()),
              None)
  if path is None:
    path = os.path.join(workdir, MODEL_FILE)
    proto = train(sentences_fn(), vocab_size, max_sentences, seed, model_type)
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(path + ".tmp")
    tmp.write_bytes(proto)
    tmp.replace(path)
  tok = load(path)
  if tok.vocab_size > vocab_size:
    raise ValueError(f"{path} has {tok.vocab_size} tokens but the model's "
                     f"vocab_size is {vocab_size}")
  return tok


def copy_into(path: str, workdir: str) -> str:
  """Carries the tokenizer file `path` (a SentencePiece model, or a WordPiece
  vocab.txt with the HF tokenizer_config.json beside it that holds its casing) into
  WORKDIR/tokenizer/, where `find` looks first; returns the new path. Continued
  pretraining and fine-tuning must tokenize as the source model did."""
  dst = epath.Path(workdir) / (VOCAB_FILE if path.endswith(".txt") else MODEL_FILE)
  dst.parent.mkdir(parents=True, exist_ok=True)
  epath.Path(path).copy(dst, overwrite=True)
  casing = epath.Path(path).parent / "tokenizer_config.json"
  if path.endswith(".txt") and casing.exists():
    casing.copy(dst.parent / casing.name, overwrite=True)
  return str(dst)

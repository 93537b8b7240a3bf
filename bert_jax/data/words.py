"""Which tokens begin a word: the unit of whole-word masking.

Two sources of word boundaries:
  - the pieces themselves: a SentencePiece piece starting with ▁ or a WordPiece token
    without `##` begins a word; so does a piece that starts with, or follows one that
    ends with, a CJK character or punctuation (BERT's basic tokenizer makes each of
    those its own word; SentencePiece on unsegmented Chinese marks no word with ▁);
  - a segmented corpus (People's Daily): a piece begins a word when it starts where a
    word of the corpus starts. A piece straddling two words joins them into one unit,
    so a word's pieces are still never split between units.

Pair building moves tokens around as single ints: a token that continues a word
travels as ~id (negative), so cutting and truncating keep its flag with it, and plain
ids mean "every token is a word" (per-token masking).
"""

import dataclasses
import unicodedata

import numpy as np

from bert_jax.data import tokenizer


def is_cjk(ch: str) -> bool:
  """A CJK ideograph, CJK punctuation or full-width form: text written without
  spaces between words."""
  cp = ord(ch)
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2FA1F
          or 0xF900 <= cp <= 0xFAFF or 0x3000 <= cp <= 0x303F or 0xFF00 <= cp <= 0xFFEF)


def _breaks_words(ch: str) -> bool:
  """CJK characters and punctuation are words of their own (as in BERT)."""
  return is_cjk(ch) or unicodedata.category(ch)[0] == "P"


def piece_tables(tok: tokenizer.Tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(opens, closes) over the vocabulary: token i begins a word whatever precedes it /
  the token after i begins a word. Special tokens do both."""
  opens = np.zeros(tok.vocab_size, bool)
  closes = np.zeros(tok.vocab_size, bool)
  for i in range(tok.vocab_size):
    piece = tok.id_to_token(i)
    if isinstance(tok, tokenizer.WordPieceTokenizer):
      opens[i] = not piece.startswith("##")
      piece = piece[2:] if piece.startswith("##") else piece
    else:
      opens[i] = piece.startswith("\u2581")
      piece = piece.lstrip("\u2581")
    if piece:
      opens[i] |= _breaks_words(piece[0])
      closes[i] = _breaks_words(piece[-1])
  for i in set(dataclasses.astuple(tok.special)):
    opens[i] = closes[i] = True
  return opens, closes


def piece_starts(ids: list[int], opens: np.ndarray, closes: np.ndarray) -> list[bool]:
  """Word starts of a tokenized sentence read off its pieces."""
  if not ids:
    return []
  a = np.asarray(ids)
  starts = opens[a]
  starts[1:] |= closes[a[:-1]]
  starts[0] = True
  return starts.tolist()


def segmented_starts(offsets: list[tuple[int, int]], words: tuple[str, ...]
                     ) -> list[bool]:
  """Word starts of the pieces of "".join(words), from the pieces' character spans:
  the first piece at a word's first character begins it (a zero-width piece such as
  a lone ▁ there takes that role, and the real piece continues it)."""
  boundaries, pos = set(), 0
  for w in words:
    boundaries.add(pos)
    pos += len(w)
  starts = []
  for begin, _ in offsets:
    starts.append(begin in boundaries)
    boundaries.discard(begin)
  if starts:
    starts[0] = True
  return starts


def mark(ids: list[int], starts: list[bool]) -> list[int]:
  """Tokens for pair building: id where a word begins, ~id where it continues."""
  return [i if s else ~i for i, s in zip(ids, starts)]


def unmark(tokens: list[int]) -> tuple[list[int], list[int]]:
  """(ids, word_start flags) of marked tokens."""
  return [t if t >= 0 else ~t for t in tokens], [int(t >= 0) for t in tokens]

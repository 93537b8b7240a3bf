"""Pretraining examples from tokenized documents: BERT's next-sentence (NSP) pairs,
ALBERT's sentence-order (SOP) pairs, or RoBERTa's full sentences (objective "none").

The pairing decisions are Python over sentences, with tokens only as index ranges
into the chunk's tokens laid end to end (an id, or ~id for a token that continues a
word: see words.py); the examples' tokens are then gathered in one numpy pass
(`Examples`), so no Python runs per token. Randomness only through the `rng` passed
in. Labels as in BERT, ALBERT and transformers: NSP 0 = B follows A, 1 = B is random;
SOP 0 = A and B in document order, 1 = swapped; "none" always 0 (one segment, no
sentence-level task).
"""

import itertools
import random
from typing import NamedTuple

import numpy as np

from bert_jax.data import tokenizer

OBJECTIVES = ("nsp", "sop", "none")


class Example(NamedTuple):
  input_ids: list[int]     # [CLS] A [SEP] B [SEP] (or [CLS] text [SEP]), unpadded
  segment_ids: list[int]   # 0 for [CLS] A [SEP], 1 for B [SEP]
  next_sentence_label: int
  word_start: list[int]    # 1 where a word (or a special token) begins


class Examples:
  """Examples end to end, as numpy columns: per token (ids, segments, word starts)
  and per example (length, label). Iterating or indexing gives `Example`s."""

  def __init__(self, input_ids, segment_ids, word_start, lengths, labels):
    self.input_ids = np.asarray(input_ids, np.int64)
    self.segment_ids = np.asarray(segment_ids, np.int64)
    self.word_start = np.asarray(word_start, np.int64)
    self.lengths = np.asarray(lengths, np.int64)
    self.labels = np.asarray(labels, np.int64)
    self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])

  @classmethod
  def from_list(cls, examples: list[Example]) -> "Examples":
    chain = itertools.chain.from_iterable
    return cls(list(chain(e.input_ids for e in examples)),
               list(chain(e.segment_ids for e in examples)),
               list(chain(e.word_start for e in examples)),
               [len(e.input_ids) for e in examples],
               [e.next_sentence_label for e in examples])

  def __len__(self) -> int:
    return len(self.lengths)

  def __getitem__(self, i: int) -> Example:
    a, b = self.offsets[i], self.offsets[i + 1]
    return Example(self.input_ids[a:b].tolist(), self.segment_ids[a:b].tolist(),
                   int(self.labels[i]), self.word_start[a:b].tolist())

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def take(self, indices) -> "Examples":
    """These examples, in this order."""
    indices = np.asarray(indices, np.int64)
    at = ranges(self.offsets[indices], self.lengths[indices])
    return Examples(self.input_ids[at], self.segment_ids[at], self.word_start[at],
                    self.lengths[indices], self.labels[indices])


def ranges(starts, lengths) -> np.ndarray:
  """The indices of [start, start + length) for each pair, end to end."""
  starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
  ends = np.cumsum(lengths)
  total = int(ends[-1]) if len(ends) else 0
  return np.repeat(starts - (ends - lengths), lengths) + np.arange(total)


# An example before its tokens are gathered, as pieces (start, length, segment,
# word) into the chunk's tokens; word=1 makes the piece's first token a word start
# (truncation from the front may leave a word's tail first: it is all that is left of
# that word, so it is a word of its own). A pair is (label, a_start, a_length,
# b_start, b_length); full sentences are (label, pieces).
PairSpec = tuple[int, int, int, int, int]
Spec = tuple[int, tuple[tuple[int, int, int, int], ...]]


def _assemble(tokens: np.ndarray, labels, pieces: np.ndarray, counts) -> Examples:
  """Examples of `counts[i]` consecutive `pieces` [P, 4] each, over `tokens` (marked
  ids end to end)."""
  start, length, segment, word = pieces.reshape(-1, 4).T
  marked = tokens[ranges(start, length)]
  word_start = (marked >= 0).astype(np.int64)
  word_start[(np.cumsum(length) - length)[(word > 0) & (length > 0)]] = 1
  first_piece = np.cumsum(counts) - counts
  lengths = np.add.reduceat(length, first_piece) if len(first_piece) else []
  return Examples(np.where(marked >= 0, marked, ~marked), np.repeat(segment, length),
                  word_start, lengths, labels)


def _assemble_pairs(tokens: np.ndarray, specs: list[PairSpec], cls: int, sep: int
                    ) -> Examples:
  """[CLS] A [SEP] B [SEP] with segments 0/1 for each (label, A, B) of `specs`, with
  [CLS] and [SEP] at tokens[cls] and tokens[sep]."""
  spec = np.array(specs, np.int64).reshape(-1, 5)
  pieces = np.zeros((len(spec), 5, 4), np.int64)
  pieces[:, :, 0] = (cls, 0, sep, 0, sep)
  pieces[:, 1, 0], pieces[:, 3, 0] = spec[:, 1], spec[:, 3]
  pieces[:, :, 1] = 1
  pieces[:, 1, 1], pieces[:, 3, 1] = spec[:, 2], spec[:, 4]
  pieces[:, :, 2] = (0, 0, 0, 1, 1)
  pieces[:, :, 3] = (0, 1, 0, 1, 0)
  return _assemble(tokens, spec[:, 0], pieces, np.full(len(spec), 5))


def _with_specials(tokens, special: tokenizer.SpecialIds):
  """`tokens` with [CLS] and [SEP] appended, and where they are."""
  n = len(tokens)
  return np.concatenate([np.asarray(tokens, np.int64), [special.cls, special.sep]]), n, n + 1


def pair_example(a: list[int], b: list[int], label: int,
                 special: tokenizer.SpecialIds) -> Example:
  """[CLS] A [SEP] B [SEP] with segments 0/1 (token lists as `words.mark`s them)."""
  tokens, cls, sep = _with_specials(list(a) + list(b), special)
  return _assemble_pairs(tokens, [(label, 0, len(a), len(a), len(b))], cls, sep)[0]


def _below(rng: random.Random, n: int) -> int:
  """A uniform int in [0, n): one float draw, several times cheaper than
  rng.randrange (its bias, under n / 2**53, is far below anything data shows)."""
  return int(rng.random() * n)


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random):
  """Trims the longer side of the [start, length] ranges (B on a tie) a token at a
  time, each from the front or back at random, until both fit: BERT's loop, drawn
  per side rather than per token. Which side loses each token follows from the
  lengths alone (the longer one until they are equal, then B and A in turn), and the
  tokens a side loses from its front are Binomial(lost, 1/2): the 1-bits of as many
  random bits."""
  excess = a[1] + b[1] - max_tokens
  if excess <= 0:
    return
  lead = a[1] - b[1]
  first = min(excess, abs(lead))
  rest = excess - first
  lost_a = (first if lead > 0 else 0) + rest // 2
  lost_b = excess - lost_a
  for side, lost in ((a, lost_a), (b, lost_b)):
    side[0] += rng.getrandbits(lost).bit_count()
    side[1] -= lost


def split_long(sentence: list[int], max_tokens: int) -> list[list[int]]:
  """Pieces of at most `max_tokens`, cut before a word start where one lies in the
  second half of the window (a paragraph longer than an example is not lost)."""
  out = []
  while len(sentence) > max_tokens:
    cut = next((j for j in range(max_tokens, max_tokens // 2, -1) if sentence[j] >= 0),
               max_tokens)
    out.append(sentence[:cut])
    sentence = sentence[cut:]
  out.append(sentence)
  return out


def document_examples(docs: list[list[tuple[int, int]]], index: int, max_seq_length: int,
                      short_seq_prob: float, rng: random.Random,
                      objective: str = "nsp") -> list[PairSpec]:
  """NSP or SOP examples from document `index`; `docs` are lists of sentences as
  (start, length) in the chunk's tokens.

  Sentences are gathered into a chunk up to the target length, split at a random
  sentence boundary into A and B (a lone sentence is cut in two). NSP: half of the
  time B is replaced by a random span of another document and the unused sentences
  go back to be used next. SOP: half of the time A and B swap places.
  """
  doc = docs[index]
  max_tokens = max_seq_length - 3
  target = max_tokens
  if rng.random() < short_seq_prob:
    target = 2 + _below(rng, max_tokens - 1)
  # chunk: its sentences' starts, and their lengths summed up to each.
  examples, starts, ends, length, i = [], [], [], 0, 0
  while i < len(doc):
    start, n = doc[i]
    starts.append(start)
    length += n
    ends.append(length)
    if i == len(doc) - 1 or length >= target:
      if len(starts) == 1 and length >= 2:
        # BERT forces a single-sentence chunk to a random B, which skews labels
        # (~58 % random on People's Daily). Splitting the sentence keeps them 50/50.
        cut = 1 + _below(rng, length - 1)
        starts, ends = [start, start + cut], [cut, length]
        consumed = 1
      else:
        consumed = len(starts)
      a_end = 1 + _below(rng, len(starts) - 1) if len(starts) >= 2 else 1
      a = [starts[0], ends[a_end - 1]]
      if objective == "nsp" and rng.random() < 0.5 and len(docs) > 1:
        label = 1
        other = _below(rng, len(docs) - 1)
        other = other + 1 if other >= index else other  # never the same document
        rand_doc = docs[other]
        k = _below(rng, len(rand_doc))
        b = [rand_doc[k][0], 0]
        while k < len(rand_doc):
          b[1] += rand_doc[k][1]
          if b[1] >= target - a[1]:
            break
          k += 1
        i -= max(consumed - a_end, 0)  # give the unused sentences back
      else:
        label = 0
        b = ([starts[a_end], length - a[1]] if a_end < len(starts) else [0, 0])
        if objective == "sop" and rng.random() < 0.5:
          a, b, label = b, a, 1
      if a[1] and b[1]:
        _truncate_pair(a, b, max_tokens, rng)
        examples.append((label, a[0], a[1], b[0], b[1]))
      starts, ends, length = [], [], 0
    i += 1
  return examples


def full_sentences(docs: list[list[tuple[int, int]]], max_seq_length: int,
                   short_seq_prob: float, rng: random.Random, cls: int, sep: int
                   ) -> list[Spec]:
  """RoBERTa's FULL-SENTENCES: consecutive sentences packed into [CLS] ... [SEP] up to
  the target length, crossing documents with a [SEP] between them."""
  max_tokens = max_seq_length - 2

  def new_target():
    return 2 + _below(rng, max_tokens - 1) if rng.random() < short_seq_prob else max_tokens

  def example(pieces):
    return 0, ((cls, 1, 0, 0), *pieces, (sep, 1, 0, 0))

  examples, pieces, length, target = [], [], 0, new_target()
  for doc in docs:
    for k, (start, n) in enumerate(doc):
      sep_here = bool(pieces) and k == 0
      if pieces and length + sep_here + n > target:
        examples.append(example(pieces))
        pieces, length, sep_here, target = [], 0, False, new_target()
      if sep_here:
        pieces.append((sep, 1, 0, 0))
      pieces.append((start, n, 0, 0))
      length += sep_here + n
  if pieces:
    examples.append(example(pieces))
  return examples


def create_examples(docs: list[list[list[int]]], max_seq_length: int,
                    short_seq_prob: float, dupe_factor: int, seed: int | str,
                    special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS,
                    objective: str = "nsp") -> Examples:
  """All examples of all documents, shuffled: `dupe_factor` passes of NSP or SOP
  pairs (each pass splits differently), or one pass of full sentences (passes would
  only repeat them; masks differ every epoch anyway). Sentences longer than an
  example are split first."""
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
  rng = random.Random(seed)
  max_tokens = max_seq_length - (2 if objective == "none" else 3)
  docs = [[p for s in d if s for p in split_long(s, max_tokens)] for d in docs]
  docs = [d for d in docs if d]
  # The sentences as (start, length) in all of them end to end.
  lengths = [len(s) for d in docs for s in d]
  starts = list(itertools.accumulate(lengths, initial=0))
  spans, k = [], 0  # k: the document's first sentence
  for d in docs:
    spans.append(list(zip(starts[k:k + len(d)], lengths[k:k + len(d)])))
    k += len(d)
  flat = np.fromiter(itertools.chain.from_iterable(s for d in docs for s in d), np.int64,
                     sum(lengths))
  tokens, cls, sep = _with_specials(flat, special)
  if objective == "none":
    specs = full_sentences(spans, max_seq_length, short_seq_prob, rng, cls, sep)
  else:
    specs = []
    for _ in range(dupe_factor):
      for index in range(len(spans)):
        specs.extend(document_examples(spans, index, max_seq_length, short_seq_prob,
                                       rng, objective))
  order = np.random.default_rng(rng.getrandbits(64)).permutation(len(specs)).tolist()
  specs = [specs[i] for i in order]
  if objective != "none":
    return _assemble_pairs(tokens, specs, cls, sep)
  pieces = [p for _, ps in specs for p in ps]
  return _assemble(tokens, [label for label, _ in specs], np.array(pieces, np.int64),
                   [len(ps) for _, ps in specs])

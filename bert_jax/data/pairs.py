"""Pretraining examples from tokenized documents: BERT's next-sentence (NSP) pairs,
ALBERT's sentence-order (SOP) pairs, or RoBERTa's full sentences (objective "none").

Pure Python over lists of tokens (an id, or ~id for a token that continues a word:
see words.py); randomness only through the `rng` passed in. Labels as in BERT, ALBERT
and transformers: NSP 0 = B follows A, 1 = B is random; SOP 0 = A and B in document
order, 1 = swapped; "none" always 0 (one segment, no sentence-level task).
"""

import random
from typing import NamedTuple

from bert_jax.data import tokenizer
from bert_jax.data import words

OBJECTIVES = ("nsp", "sop", "none")


class Example(NamedTuple):
  input_ids: list[int]     # [CLS] A [SEP] B [SEP] (or [CLS] text [SEP]), unpadded
  segment_ids: list[int]   # 0 for [CLS] A [SEP], 1 for B [SEP]
  next_sentence_label: int
  word_start: list[int]    # 1 where a word (or a special token) begins


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random):
  """Trims the longer side, from the front or back at random, until both fit."""
  while len(a) + len(b) > max_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def pair_example(a: list[int], b: list[int], label: int,
                 special: tokenizer.SpecialIds) -> Example:
  """[CLS] A [SEP] B [SEP] with segments 0/1 (token lists as `words.mark`s them)."""
  ids_a, start_a = words.unmark(a)
  ids_b, start_b = words.unmark(b)
  ids = [special.cls] + ids_a + [special.sep] + ids_b + [special.sep]
  seg = [0] * (len(a) + 2) + [1] * (len(b) + 1)
  start = [1] + start_a + [1] + start_b + [1]
  # Truncation from the front may leave a word's tail first: it is all that is left
  # of that word, so it is a word of its own.
  start[1] = start[len(a) + 2] = 1
  return Example(ids, seg, label, start)


def single_example(tokens: list[int], special: tokenizer.SpecialIds) -> Example:
  """[CLS] tokens [SEP], one segment (objective "none")."""
  ids, start = words.unmark(tokens)
  return Example([special.cls] + ids + [special.sep], [0] * (len(ids) + 2), 0,
                 [1] + start + [1])


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


def document_examples(docs: list[list[list[int]]], index: int, max_seq_length: int,
                      short_seq_prob: float, rng: random.Random,
                      special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS,
                      objective: str = "nsp") -> list[Example]:
  """NSP or SOP examples from document `index`; `docs` are lists of tokenized
  sentences.

  Sentences are gathered into a chunk up to the target length, split at a random
  sentence boundary into A and B (a lone sentence is cut in two). NSP: half of the
  time B is replaced by a random span of another document and the unused sentences
  go back to be used next. SOP: half of the time A and B swap places.
  """
  doc = docs[index]
  max_tokens = max_seq_length - 3
  target = max_tokens
  if rng.random() < short_seq_prob:
    target = rng.randint(2, max_tokens)
  examples, chunk, length, i = [], [], 0, 0
  while i < len(doc):
    chunk.append(doc[i])
    length += len(doc[i])
    if i == len(doc) - 1 or length >= target:
      if len(chunk) == 1 and len(chunk[0]) >= 2:
        # BERT forces a single-sentence chunk to a random B, which skews labels
        # (~58 % random on People's Daily). Splitting the sentence keeps them 50/50.
        cut = rng.randint(1, len(chunk[0]) - 1)
        chunk = [chunk[0][:cut], chunk[0][cut:]]
        consumed = 1
      else:
        consumed = len(chunk)
      if chunk:
        a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
        a = [t for s in chunk[:a_end] for t in s]
        if objective == "nsp" and rng.random() < 0.5 and len(docs) > 1:
          label = 1
          other = rng.randrange(len(docs) - 1)
          other = other + 1 if other >= index else other  # never the same document
          rand_doc = docs[other]
          start = rng.randrange(len(rand_doc))
          b = []
          for s in rand_doc[start:]:
            b.extend(s)
            if len(b) >= target - len(a):
              break
          i -= max(consumed - a_end, 0)  # give the unused sentences back
        else:
          label = 0
          b = [t for s in chunk[a_end:] for t in s]
          if objective == "sop" and rng.random() < 0.5:
            a, b, label = b, a, 1
        if a and b:
          _truncate_pair(a, b, max_tokens, rng)
          examples.append(pair_example(a, b, label, special))
      chunk, length = [], 0
    i += 1
  return examples


def full_sentences(docs: list[list[list[int]]], max_seq_length: int,
                   short_seq_prob: float, rng: random.Random,
                   special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS
                   ) -> list[Example]:
  """RoBERTa's FULL-SENTENCES: consecutive sentences packed into [CLS] ... [SEP] up to
  the target length, crossing documents with a [SEP] between them."""
  max_tokens = max_seq_length - 2

  def new_target():
    return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens

  examples, tokens, target = [], [], new_target()
  for doc in docs:
    for k, sentence in enumerate(doc):
      sep = [special.sep] if tokens and k == 0 else []
      if tokens and len(tokens) + len(sep) + len(sentence) > target:
        examples.append(single_example(tokens, special))
        tokens, sep, target = [], [], new_target()
      tokens += sep + sentence
  if tokens:
    examples.append(single_example(tokens, special))
  return examples


def create_examples(docs: list[list[list[int]]], max_seq_length: int,
                    short_seq_prob: float, dupe_factor: int, seed: int | str,
                    special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS,
                    objective: str = "nsp") -> list[Example]:
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
  if objective == "none":
    examples = full_sentences(docs, max_seq_length, short_seq_prob, rng, special)
  else:
    examples = []
    for _ in range(dupe_factor):
      for index in range(len(docs)):
        examples.extend(document_examples(docs, index, max_seq_length, short_seq_prob,
                                          rng, special, objective))
  rng.shuffle(examples)
  return examples

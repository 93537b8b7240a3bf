"""Next-sentence-prediction pairs from tokenized documents (BERT's recipe).

Pure Python over lists of token ids; randomness only through the `rng` passed in.
Label convention as in BERT and transformers: 0 = B follows A, 1 = B is random.
"""

import random
from typing import NamedTuple

from bert_jax import tokenizer


class Example(NamedTuple):
  input_ids: list[int]     # [CLS] A [SEP] B [SEP], unpadded
  segment_ids: list[int]   # 0 for [CLS] A [SEP], 1 for B [SEP]
  next_sentence_label: int


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random):
  """Trims the longer side, from the front or back at random, until both fit."""
  while len(a) + len(b) > max_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def _pack(a: list[int], b: list[int], label: int,
          special: tokenizer.SpecialIds) -> Example:
  ids = [special.cls] + a + [special.sep] + b + [special.sep]
  seg = [0] * (len(a) + 2) + [1] * (len(b) + 1)
  return Example(ids, seg, label)


def document_examples(docs: list[list[list[int]]], index: int, max_seq_length: int,
                      short_seq_prob: float, rng: random.Random,
                      special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS
                      ) -> list[Example]:
  """Examples from document `index`; `docs` are lists of tokenized sentences.

  Sentences are gathered into a chunk up to the target length, split at a random
  sentence boundary into A and B (a lone sentence is cut in two); half of the time B
  is replaced by a random span of another document and the unused sentences go back
  to be used next.
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
        if rng.random() < 0.5 and len(docs) > 1:
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
        if a and b:
          _truncate_pair(a, b, max_tokens, rng)
          examples.append(_pack(a, b, label, special))
      chunk, length = [], 0
    i += 1
  return examples


def create_examples(docs: list[list[list[int]]], max_seq_length: int,
                    short_seq_prob: float, dupe_factor: int, seed: int,
                    special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS
                    ) -> list[Example]:
  """All examples of all documents, `dupe_factor` passes, shuffled."""
  rng = random.Random(seed)
  docs = [[s for s in d if s] for d in docs]
  docs = [d for d in docs if d]
  examples = []
  for _ in range(dupe_factor):
    for index in range(len(docs)):
      examples.extend(document_examples(docs, index, max_seq_length, short_seq_prob, rng,
                                          special))
  rng.shuffle(examples)
  return examples

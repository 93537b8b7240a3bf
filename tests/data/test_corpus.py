"""Text sources: globs, JSONL, TFDS, the segmented embedded corpus, and bad input."""

import json
import logging

import pytest
import tensorflow_datasets as tfds

from bert_jax.data import corpus
from bert_jax.errors import InputError
from tests.data import helpers


def test_jsonl_records_are_documents(tmp_path):
  lines = [{"text": "First para. Second sentence.\nNext para", "id": 1},
           {"text": ""}, {"text": "Other doc"}]
  (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
  counts = corpus.ReadCounts()
  docs = list(corpus.read_documents(str(tmp_path / "*.jsonl"), counts))
  assert docs == [["First para.", "Second sentence.", "Next para"], ["Other doc"]]
  assert counts.empty_documents == 1


def test_jsonl_without_the_field_names_file_and_line(tmp_path):
  (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
  with pytest.raises(InputError, match=r"a.jsonl:2 has no field 'text'"):
    list(corpus.read_documents(str(tmp_path / "a.jsonl")))
  (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
  assert list(corpus.read_documents(str(tmp_path / "b.jsonl"), text_field="body")) == [
      ["x"]]


def test_bad_bytes_are_replaced_and_counted_binary_files_skipped(tmp_path, caplog):
  (tmp_path / "a.txt").write_bytes("好的\n".encode() + b"bad \xff\xfe bytes.\n\n"
                                   + "第二篇。\n".encode())
  (tmp_path / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
  counts = corpus.ReadCounts()
  with caplog.at_level(logging.WARNING):
    docs = list(corpus.read_documents(str(tmp_path / "*.txt"), counts))
  assert docs == [["好的", "bad \ufffd\ufffd bytes."], ["第二篇。"]]
  assert counts.replaced_characters == 2
  assert counts.skipped_files == [str(tmp_path / "b.txt")]
  assert str(tmp_path / "b.txt") in caplog.text


def test_tfds_source_reads_the_text_feature():
  with tfds.testing.mock_data(num_examples=7):
    docs = list(corpus.read_documents("tfds:wikipedia/20230601.en"))
  assert len(docs) == 7 and all(isinstance(s, str) for d in docs for s in d)


def test_missing_tfds_dataset_is_an_error_naming_it(tmp_path):
  with pytest.raises(InputError, match="'no_such_corpus' is not there"):
    list(corpus.read_documents("tfds:no_such_corpus"))
  with pytest.raises(InputError, match="'wikipedia/20230601.en' is not built in"):
    list(corpus.read_documents("tfds:wikipedia/20230601.en",
                               tfds_data_dir=str(tmp_path)))


def test_embedded_corpus_keeps_its_words():
  plain = helpers.documents("", max_documents=20)
  segmented = helpers.documents("", max_documents=20, words=True)
  assert [[corpus.text(s) for s in d] for d in segmented] == plain
  sentence = segmented[0][0]
  assert isinstance(sentence, tuple) and len(sentence) > 1
  assert corpus.untag_words("迈向/v  [中央/n  电视台/n]nt") == ["迈向", "中央", "电视台"]


def test_the_embedded_corpus_mixes_with_domain_text(tmp_path):
  """`embedded,FILE`: the embedded corpus's documents first (so the held-out ones stay
  its first articles), then the file's."""
  (tmp_path / "reviews.txt").write_text("好用。\n\n太差了！\n")
  embedded = list(corpus.peoples_daily_documents())
  mixed = list(corpus.iter_documents(f"{corpus.EMBEDDED},{tmp_path}/reviews.txt"))
  assert mixed[:len(embedded)] == embedded
  assert mixed[len(embedded):] == [["好用。"], ["太差了！"]]
  segmented = list(corpus.iter_documents(f"{corpus.EMBEDDED}", 3, words=True))
  assert isinstance(segmented[0][0], tuple)

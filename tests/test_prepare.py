import json
import os
import random

import pytest
import tensorflow as tf

from bert_jax import corpus, pairs, prepare, tokenizer
from bert_jax.errors import InputError


def test_untag_and_embedded_corpus():
  assert corpus.untag("迈向/v  充满/v  希望/n  的/u  [中央/n  电视台/n]nt") == "迈向充满希望的中央电视台"
  docs = corpus.documents("", max_documents=50)
  assert len(docs) == 50
  text = "".join(s for d in docs for s in d)
  assert "/v" not in text and "/n" not in text
  assert "中国" in text


def test_split_sentences_keeps_decimal_points():
  assert corpus.split_sentences("增长3.5%。明年更好！Is it? Yes.") == [
      "增长3.5%。", "明年更好！", "Is it?", "Yes."]


def test_read_documents_blank_line_separates(tmp_path):
  (tmp_path / "a.txt").write_text("p1 s1. p1 s2.\np2\n\nd2 p1\n", encoding="utf-8")
  docs = list(corpus.read_documents(str(tmp_path / "*.txt")))
  assert docs == [["p1 s1.", "p1 s2.", "p2"], ["d2 p1"]]


def test_no_matching_files_is_an_input_error(tmp_path):
  with pytest.raises(InputError, match="no files match"):
    corpus.documents(str(tmp_path / "missing-*.txt"))


def _synthetic_docs(n_docs=40, seed=0):
  rng = random.Random(seed)
  # Document d's tokens all lie in [100 d, 100 d + 100): the source of B is checkable.
  return [[[100 * d + rng.randrange(100) for _ in range(rng.randint(3, 20))]
           for _ in range(rng.randint(2, 12))] for d in range(n_docs)]


def test_nsp_examples_layout_and_labels():
  docs = _synthetic_docs()
  examples = pairs.create_examples(docs, max_seq_length=64, short_seq_prob=0.1,
                                   dupe_factor=3, seed=0)
  assert len(examples) > 100
  for ex in examples:
    ids, seg = ex.input_ids, ex.segment_ids
    assert len(ids) == len(seg) <= 64
    assert ids[0] == tokenizer.CLS_ID and ids[-1] == tokenizer.SEP_ID
    first_sep = ids.index(tokenizer.SEP_ID)
    assert ids.count(tokenizer.SEP_ID) == 2
    assert seg == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    a_docs = {t // 100 for t in ids[1:first_sep]}
    b_docs = {t // 100 for t in ids[first_sep + 1:-1]}
    assert len(a_docs) == 1
    if ex.next_sentence_label == 0:
      assert b_docs == a_docs
    else:
      assert not b_docs & a_docs
  random_fraction = sum(e.next_sentence_label for e in examples) / len(examples)
  assert 0.45 < random_fraction < 0.55, random_fraction


def test_prepare_writes_balanced_shards_and_stats(tmp_path, tiny_config):
  text = "\n\n".join("\n".join(f"第{d}篇文章第{p}段。这里有一些中文句子，用来测试。" * 3
                               for p in range(6)) for d in range(30))
  (tmp_path / "in.txt").write_text(text, encoding="utf-8")
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.input = str(tmp_path / "in.txt")
  config.model.vocab_size = 200
  config.data.num_shards = 4
  stats = prepare.run(config, str(tmp_path / "work"))
  files = prepare.shard_files(str(tmp_path / "work" / "data"))
  assert len(files) == 4
  counts = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files]
  assert sum(counts) == stats["examples"] and max(counts) - min(counts) <= 1
  on_disk = json.loads((tmp_path / "work" / "data" / "stats.json").read_text())
  assert on_disk == stats and stats["documents"] == 30
  assert os.path.exists(tmp_path / "work" / tokenizer.MODEL_FILE)
  tok = tokenizer.load(str(tmp_path / "work" / tokenizer.MODEL_FILE))
  assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert stats["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_tokenizer_is_reused_when_present(tmp_path):
  sentences = ["今天天气很好。", "我们一起去公园散步。", "人民日报的新闻。"] * 50
  first = tokenizer.get_or_train(str(tmp_path), lambda: sentences, 60, 1000)

  def must_not_train():
    raise AssertionError("tokenizer retrained although the workdir has one")
  again = tokenizer.get_or_train(str(tmp_path), must_not_train, 60, 1000)
  assert again.sp.serialized_model_proto() == first.sp.serialized_model_proto()

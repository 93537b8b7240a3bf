"""The benchmark scripts' splits keep test text out of training: retrieval's pool is
the articles held out of pretraining, its dev pairs stay out of the inverse-cloze
rows; NER's test sentences are the held-out articles' and no training sentence
comes from them. Headline recognition, inverse-cloze pairs and passages by hand; both
scripts' bad flags refused before anything is written."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import ner as ner_benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position
import retrieval  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_headlines_by_hand():
  assert retrieval.is_headline("江泽民发表新年讲话", 5)
  assert not retrieval.is_headline("新年好", 5)              # shorter than 5
  assert not retrieval.is_headline("新华社记者王某摄", 5)     # a photo credit
  assert not retrieval.is_headline("（附图片）北京迎新年", 5)  # a caption
  assert not retrieval.is_headline("今天北京下雪了。", 5)     # a sentence
  assert not retrieval.is_headline("长" * 41, 5)


def test_inverse_cloze_pairs_and_passages_by_hand():
  first, second, third = "甲" * 12 + "。", "乙" * 40 + "。", "丙" * 40 + "！"
  body = first + second + third
  # A sentence of 10-120 characters queries the rest, if that has >= 50 characters.
  assert retrieval.ict_pairs([body], leads=0) == [
      (first, second + third), (second, first + third), (third, first + second)]
  assert retrieval.ict_pairs([body], leads=1) == [(first, second + third)]
  # A 6-character sentence is too short a query, and 6 characters too short a rest.
  assert retrieval.ict_pairs(["甲" * 5 + "。" + "乙" * 60 + "。"], leads=0) == []
  assert retrieval.passages(body, 60) == [first + second, third]
  assert retrieval.passages(body, 10) == [first, second, third]


def test_retrieval_pool_is_held_out_and_dev_stays_out_of_training():
  texts = retrieval.first_lines_and_bodies()
  pool, train, dev, ict_bodies = retrieval.split(texts, 500, 200, 5, 50)
  # The figures BUILD.md's retrieval tables were measured on.
  assert (len(pool), len(train) + len(dev), len(dev)) == (279, 1525, 200)
  held_out_bodies = {b for _, b in texts[:500]}
  assert {b for _, b in pool} <= held_out_bodies
  assert len({h for h, _ in pool}) == len(pool)
  for rows in (train, dev, [(None, b) for b in ict_bodies]):
    assert not {b for _, b in rows} & held_out_bodies
  assert not {b for _, b in dev} & ({b for _, b in train} | set(ict_bodies))


@pytest.mark.parametrize("train_on", ["pretraining", "held_out"])
def test_ner_test_sentences_come_from_the_held_out_articles(tmp_path, train_on):
  pretrained = tmp_path / "pretrained"
  pretrained.mkdir()
  (pretrained / "config.json").write_text(json.dumps({"data": {"eval_documents": 6}}))
  files, train, test, held_out = ner_benchmark.split_files(
      str(pretrained), str(tmp_path / "ner"), max_train=300, max_test=100,
      train_on=train_on)
  assert held_out == 6
  text = lambda sentence: "".join(c for c, _ in sentence)
  articles = list(ner_benchmark.ner.documents(0, 40))
  held_out_text = {text(s) for d in articles[:6] for s in d}
  test_articles = articles[:6] if train_on == "pretraining" else articles[4:6]
  assert [text(s) for s in test] == [
      text(s) for d in test_articles for s in d if len(s) > 1][:100]
  assert (len(train) == 300) if train_on == "pretraining" else (0 < len(train) < 300)
  train_text = {text(s) for s in train}
  assert not train_text & {text(s) for s in test}
  if train_on == "pretraining":  # the articles after the held-out ones
    assert not train_text & held_out_text
  with open(files["test"], encoding="utf-8") as f:
    assert f.read().count("\n\n") == len(test)


@pytest.mark.parametrize("script,flags", [
    (ner_benchmark, ["--systems", "crf,bert"]),
    (ner_benchmark, ["--finetune", "train.epoch=10"]),
    (ner_benchmark, ["--finetune", "train.epochs=ten"]),
    (retrieval, ["--bm25_chars", "60,sixty"]),
    (retrieval, ["--bm25_chars", "0"]),
    (retrieval, ["--systems", "bm25"]),
    (retrieval, ["--systems", "none,simcse"]),
    (retrieval, ["--passage_chars", "-1"])])
def test_bad_flags_are_refused_before_writing(tmp_path, monkeypatch, capsys, script, flags):
  workdir = tmp_path / "out"
  monkeypatch.setattr(sys, "argv", ["script.py", "--pretrained", str(tmp_path),
                                    "--workdir", str(workdir), *flags])
  with pytest.raises(SystemExit) as e:
    script.main()
  assert e.value.code == 2
  assert "error: --" in capsys.readouterr().err
  assert not workdir.exists()

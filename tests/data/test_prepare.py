import concurrent.futures
import json
import os
import pathlib
import random

import pytest
import tensorflow as tf

from bert_jax.data import corpus
from bert_jax.data import pairs
from bert_jax.data import prepare
from bert_jax.data import shuffle
from bert_jax.data import tokenizer
from bert_jax.data import words
from bert_jax.errors import InputError
from tests.data import helpers


def test_untag_and_embedded_corpus():
  assert helpers.untag("迈向/v  充满/v  希望/n  的/u  [中央/n  电视台/n]nt") == "迈向充满希望的中央电视台"
  docs = helpers.documents("", max_documents=50)
  assert len(docs) == 50
  text = "".join(s for d in docs for s in d)
  assert "/v" not in text and "/n" not in text
  assert "中国" in text


def test_split_sentences_keeps_decimal_points():
  assert corpus.split_sentences("增长3.5%。明年更好！Is it? Yes.") == [
      "增长3.5%。", "明年更好！", "Is it?", "Yes."]


def test_split_sentences_keeps_runs_of_stops_and_closing_quotes():
  # A split after every stop made a lone "”" of 1 % of the corpus's sentences.
  assert corpus.split_sentences("他说：“要努力。”他走了。真的吗？！『是。』好") == [
      "他说：“要努力。”", "他走了。", "真的吗？！", "『是。』", "好"]
  assert corpus.split_sentences('He said "Go." Then left.') == [
      'He said "Go."', "Then left."]
  # The same ends for a segmented paragraph; a quote opened mid-sentence is no end.
  words = ["说", "：", "“", "好", "。", "”", "“", "对", "”", "吗", "？", "！", "是"]
  assert corpus.split_word_sentences(words) == [
      ("说", "：", "“", "好", "。", "”"), ("“", "对", "”", "吗", "？", "！"), ("是",)]


def test_read_documents_blank_line_separates(tmp_path):
  (tmp_path / "a.txt").write_text("p1 s1. p1 s2.\np2\n\nd2 p1\n", encoding="utf-8")
  docs = list(corpus.read_documents(str(tmp_path / "*.txt")))
  assert docs == [["p1 s1.", "p1 s2.", "p2"], ["d2 p1"]]


def test_no_matching_files_is_an_input_error(tmp_path):
  with pytest.raises(InputError, match="no files match"):
    helpers.documents(str(tmp_path / "missing-*.txt"))


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
  config.data.update(input=str(tmp_path / "in.txt"), num_shards=4, eval_documents=0,
                     max_examples_per_row=1)
  config.model.vocab_size = 200
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


def test_a_character_tokenizer_gives_one_token_per_character(tmp_path, tiny_config):
  text = "\n\n".join(f"第{d}篇文章。人民日报的新闻，今天天气很好。" for d in range(20))
  (tmp_path / "in.txt").write_text(text, encoding="utf-8")
  config = tiny_config.copy_and_resolve_references()
  config.data.update(input=str(tmp_path / "in.txt"), num_shards=4, num_streams=4,
                     eval_documents=0, tokenizer_model_type="char")
  stats = prepare.run(config, str(tmp_path / "work"))
  tok = tokenizer.load(str(tmp_path / "work" / tokenizer.MODEL_FILE))
  pieces = [tok.id_to_token(i) for i in range(tok.vocab_size)][5:]
  assert all(len(p) == 1 for p in pieces), pieces
  assert "人" in pieces and "人民" not in pieces
  # Every character of a sentence is a token: 今天天气很好 -> 今 天 天 气 很 好.
  assert [tok.id_to_token(i) for i in tok.encode("今天天气很好")][-6:] == list("今天天气很好")
  assert stats["documents"] == 20


def test_tokenizer_is_reused_when_present(tmp_path):
  sentences = ["今天天气很好。", "我们一起去公园散步。", "人民日报的新闻。"] * 50
  first = tokenizer.get_or_train(str(tmp_path), lambda: sentences, 60, 1000)

  def must_not_train():
    raise AssertionError("tokenizer retrained although the workdir has one")
  again = tokenizer.get_or_train(str(tmp_path), must_not_train, 60, 1000)
  assert again.sp.serialized_model_proto() == first.sp.serialized_model_proto()


def _ordered_docs(n_docs=40, seed=0):
  """Token = 1000 * document + position in it: order and source are checkable."""
  rng = random.Random(seed)
  docs = []
  for d in range(n_docs):
    pos, doc = 0, []
    for _ in range(rng.randint(2, 12)):
      n = rng.randint(3, 20)
      doc.append([1000 * d + 10 + pos + k for k in range(n)])
      pos += n
    docs.append(doc)
  return docs


def test_sop_pairs_are_in_order_or_swapped():
  examples = pairs.create_examples(_ordered_docs(300), max_seq_length=64,
                                   short_seq_prob=0.1, dupe_factor=3, seed=0,
                                   objective="sop")
  assert len(examples) > 1000
  for ex in examples:
    ids, seg = ex.input_ids, ex.segment_ids
    sep = ids.index(tokenizer.SEP_ID)
    a, b = ids[1:sep], ids[sep + 1:-1]
    assert seg == [0] * (sep + 1) + [1] * (len(b) + 1) and ids[-1] == tokenizer.SEP_ID
    assert len({t // 1000 for t in a + b}) == 1  # one document, never a random B
    if ex.next_sentence_label == 0:
      assert max(a) < min(b) and a == sorted(a) and b == sorted(b)
    else:
      assert max(b) < min(a)
  swapped = sum(e.next_sentence_label for e in examples) / len(examples)
  assert 0.45 < swapped < 0.55, swapped


def test_full_sentences_pack_every_token_once_in_order():
  docs = _ordered_docs()
  docs[3].append(list(range(3010, 3010 + 150)))  # longer than an example: split
  examples = pairs.create_examples(docs, max_seq_length=64, short_seq_prob=0.1,
                                   dupe_factor=2, seed=0, objective="none")
  tokens = []
  for ex in examples:
    assert len(ex.input_ids) <= 64 and ex.next_sentence_label == 0
    assert ex.segment_ids == [0] * len(ex.input_ids)
    assert ex.input_ids[0] == tokenizer.CLS_ID and ex.input_ids[-1] == tokenizer.SEP_ID
    inner = ex.input_ids[1:-1]
    # Documents are joined by a [SEP]; inside a document tokens run in order.
    parts = " ".join(map(str, inner)).split(f" {tokenizer.SEP_ID} ")
    for part in parts:
      run = [int(t) for t in part.split()]
      assert run == sorted(run) and len({t // 1000 for t in run}) == 1
    tokens += [t for t in inner if t != tokenizer.SEP_ID]
  assert sorted(tokens) == sorted(t for d in docs for s in d for t in s)
  lengths = [len(e.input_ids) for e in examples]
  assert sum(lengths) / (len(lengths) * 64) > 0.75


def test_long_sentences_split_at_word_starts():
  marked = words.mark(list(range(10, 110)), [i % 3 == 0 for i in range(100)])
  pieces = pairs.split_long(marked, 20)
  assert [t for p in pieces for t in p] == marked
  assert all(len(p) <= 20 and p[0] >= 0 for p in pieces)


def test_truncation_trims_as_berts_token_by_token_loop():
  """Each side loses what BERT's loop (the longer side, B on a tie, a token at a
  time) takes from it; about half from the front."""
  rng, fronts, lost = random.Random(0), 0, 0
  for _ in range(2000):
    a, b = [0, rng.randint(1, 200)], [1000, rng.randint(1, 200)]
    max_tokens = rng.randint(2, 250)
    want = [a[1], b[1]]
    while sum(want) > max_tokens:
      want[0 if want[0] > want[1] else 1] -= 1
    lost += a[1] + b[1] - sum(want)
    before = a[0] + b[0]
    pairs._truncate_pair(a, b, max_tokens, rng)
    assert [a[1], b[1]] == want
    fronts += a[0] + b[0] - before
  assert lost > 50_000 and abs(fronts / lost - 0.5) < 0.01, (fronts, lost)


def test_pairs_carry_word_starts():
  docs = [[words.mark(list(range(100 * d + 10, 100 * d + 40)),
                      [i % 2 == 0 for i in range(30)]) for _ in range(4)]
          for d in range(5)]
  for objective in pairs.OBJECTIVES:
    for ex in pairs.create_examples(docs, 48, 0.1, 1, 0, objective=objective):
      assert len(ex.word_start) == len(ex.input_ids) and min(ex.input_ids) >= 0
      for i, (t, s) in enumerate(zip(ex.input_ids, ex.word_start)):
        after_special = ex.input_ids[i - 1] in (tokenizer.CLS_ID, tokenizer.SEP_ID)
        if t >= 10 and not after_special:
          assert s == (t % 2 == 0), (objective, ex)


def _config(tiny_config, **data):
  """Counting tests see every document and one example per row."""
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.update({"eval_documents": 0, "max_examples_per_row": 1, **data})
  return config


def _records(files):
  out = []
  for f in files:
    for r in tf.data.TFRecordDataset(f).as_numpy_iterator():
      feats = tf.train.Example.FromString(r).features.feature
      out.append({k: list(v.int64_list.value) for k, v in feats.items()})
  return out


def test_stats_match_a_hand_count(tmp_path, tiny_config):
  src = tmp_path / "src"
  src.mkdir()
  (src / "a.txt").write_bytes(b"ab ab. ab x.\nab.\n\n\nab ab ab ab.\nab \xff.\n")
  (src / "b.txt").write_bytes(b"\x00\x01binary")
  (src / "c.jsonl").write_text('{"text": ""}\n{"text": "ab x"}\n')
  work = tmp_path / "work"
  (work / "tokenizer").mkdir(parents=True)
  (work / tokenizer.VOCAB_FILE).write_text(
      "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ab", "."]) + "\n")
  config = _config(tiny_config, input=f"{src}/*.txt,{src}/*.jsonl", objective="none",
                   max_seq_length=16, short_seq_prob=0.0, num_shards=2)
  stats = prepare.run(config, str(work))
  # Documents: a.txt's two and c.jsonl's non-empty one. Sentences and tokens
  # ([UNK] for x; U+FFFD is cleaned away by BERT's tokenizer):
  #   "ab ab." 3, "ab x." 3 (1 unk), "ab." 2 | "ab ab ab ab." 5, "ab \ufffd." 2 | "ab x" 2 (1 unk)
  # Full sentences, 14 tokens a row: 3+3+2 +[SEP]+ 5 = 14 | 2 +[SEP]+ 2 = 5.
  assert {k: stats[k] for k in ("documents", "sentences", "tokens", "examples")} == {
      "documents": 3, "sentences": 6, "tokens": 17, "examples": 2}
  assert stats["unk_rate"] == 2 / 17
  assert stats["padding_fraction"] == 1 - (16 + 7) / 32
  assert stats["replaced_characters"] == 1 and stats["empty_documents"] == 1
  assert stats["skipped_files"] == [f"{src}/b.txt"]
  assert stats["shard_sizes"] == [1, 1] and stats["label_fraction"] == 0
  rows = sorted(_records(prepare.shard_files(str(work / "data"))),
                key=lambda r: -len(r["input_ids"]))
  assert [len(r["input_ids"]) for r in rows] == [16, 7]
  assert rows[1]["input_ids"] == [2, 5, 6, 3, 5, 1, 3]  # [CLS] ab . [SEP] ab x [SEP]


def test_whole_word_shards_and_worker_count_do_not_change_output(tmp_path, tiny_config):
  out = {}
  for workers in (1, 2):
    config = _config(tiny_config, max_documents=40, num_shards=4, objective="sop",
                     whole_word_masking=True, prepare_workers=workers,
                     chunk_documents=7)
    work = tmp_path / f"w{workers}"
    if workers == 2:  # same tokenizer, so only the worker count differs
      (work / "tokenizer").mkdir(parents=True)
      (work / tokenizer.MODEL_FILE).write_bytes(
          (tmp_path / "w1" / tokenizer.MODEL_FILE).read_bytes())
    stats = prepare.run(config, str(work))
    out[workers] = _records(prepare.shard_files(str(work / "data")))
    assert stats["whole_word_masking"] and 1.05 < stats["tokens_per_word"] < 2
  assert out[1] == out[2]
  for r in out[1]:
    assert len(r["word_start"]) == len(r["input_ids"])
  tok = tokenizer.load(str(tmp_path / "w1" / tokenizer.MODEL_FILE))
  # A People's Daily word is never split between masking units.
  segmented = helpers.documents("", 1, words=True)[0][0]
  ids, offsets = tok.encode_offsets(corpus.text(segmented))
  starts = words.segmented_starts(offsets, segmented)
  for (begin, _), s in zip(offsets, starts):
    pos = 0
    for w in segmented:
      if pos < begin < pos + len(w):
        assert not s, (segmented, begin)
      pos += len(w)


def test_a_file_that_is_all_held_out_says_so(tmp_path, tiny_config):
  # One review a line and no blank line: one document, which evaluation takes.
  (tmp_path / "in.txt").write_text("这个很好用。\n质量太差了。\n" * 20, encoding="utf-8")
  config = tiny_config.copy_and_resolve_references()
  config.data.update(input=str(tmp_path / "in.txt"), num_shards=1, num_streams=1)
  config.model.vocab_size = 100
  with pytest.raises(InputError, match=r"in.txt has 1 document\(s\), all held out for "
                                       r"evaluation \(data.eval_documents=100\).*blank lines"):
    prepare.run(config, str(tmp_path / "work"))


def test_unknown_objective_is_an_error(tmp_path, tiny_config):
  with pytest.raises(InputError, match="data.objective='mlm'"):
    prepare.run(_config(tiny_config, objective="mlm"), str(tmp_path))


def test_rows_serialize_as_the_protos_they_encode():
  rng = random.Random(0)
  rows = [[pairs.pair_example([rng.randrange(1 << rng.randint(1, 40)) for _ in range(n)],
                              [rng.randrange(9000)], rng.randint(0, 1),
                              tokenizer.SENTENCEPIECE_IDS) for n in (1, 30)[:k]]
          for k in (1, 2, 1, 2)]
  masks = [{"input_ids": [7] * sum(len(e.input_ids) for e in row),
            "masked_positions": list(range(k)), "masked_ids": [9000 + k] * k}
           for k, row in enumerate(rows)]  # the first row has no prediction
  # The examples held in reverse, so the rows' indices gather them out of order.
  flat = [e for row in rows for e in row]
  examples = pairs.Examples.from_list(flat[::-1])
  at = iter(range(len(flat) - 1, -1, -1))
  indices = [[next(at) for _ in row] for row in rows]
  for whole_words in (False, True):
    for row_masks in (None, masks):
      got = prepare.serialize_rows(examples, indices, whole_words, row_masks)
      for row, record, m in zip(rows, got, row_masks or [{}] * len(rows)):
        values = {"input_ids": [t for e in row for t in e.input_ids],
                  "segment_ids": [t for e in row for t in e.segment_ids],
                  "next_sentence_label": [e.next_sentence_label for e in row],
                  "example_lengths": [len(e.input_ids) for e in row], **m}
        if whole_words:
          values["word_start"] = [t for e in row for t in e.word_start]
        want = tf.train.Example(features=tf.train.Features(feature={
            k: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
            for k, v in values.items()}))
        assert tf.train.Example.FromString(record) == want


def _prepare_by(processes: int, config, workdir, **patches) -> list:
  """prepare.run as `processes` processes of one job (threads on one key-value
  store); each one's stats, or the exception it raised."""
  store = prepare.LocalStore()
  with concurrent.futures.ThreadPoolExecutor(processes) as pool:
    runs = [pool.submit(prepare.run, config, str(workdir),
                        job=prepare.Job(i, processes, store)) for i in range(processes)]
    return [r.exception() or r.result() for r in runs]


def _outputs(workdir) -> dict:
  """Every file of a prepare, stats.json without its timing."""
  out = {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  stats = json.loads(out.pop(pathlib.Path("data", prepare.STATS_FILE)))
  return {**out, "stats": {k: v for k, v in stats.items() if k != "seconds"}}


def test_two_processes_prepare_what_one_does(tmp_path, tiny_config, monkeypatch):
  config = _config(tiny_config, max_documents=60, eval_documents=5, num_shards=4,
                   chunk_documents=7, masking="static")
  one = _prepare_by(1, config, tmp_path / "one")
  # Two processes, and buckets small enough to be split before they are sorted.
  monkeypatch.setattr(shuffle, "SORT_BYTES", 1000)
  two = _prepare_by(2, config, tmp_path / "two")
  sizes = one[0]["shard_sizes"]
  assert sum(sizes) == one[0]["rows"] and max(sizes) - min(sizes) <= 1
  assert two[0] == two[1] and two[0]["documents"] == 60 - 5
  assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two")
  assert not list((tmp_path / "two" / "data").glob("tmp-*"))


def test_a_failure_on_one_process_fails_all_and_a_rerun_succeeds(tmp_path, tiny_config,
                                                                 monkeypatch):
  config = _config(tiny_config, max_documents=30, num_shards=2, chunk_documents=5)
  records = prepare.chunk_records

  def broken(index, *args):
    if index == 1:  # process 1's first chunk
      raise InputError("disk full")
    return records(index, *args)
  monkeypatch.setattr(prepare, "chunk_records", broken)
  failed = _prepare_by(2, config, tmp_path)
  assert "disk full" in str(failed[1])
  assert str(failed[0]) == "process 1 could not prepare the data: disk full"
  assert not (tmp_path / "data" / prepare.STATS_FILE).exists()

  # A prepare killed midway leaves files behind: the next one starts clean.
  monkeypatch.setattr(prepare, "chunk_records", records)
  (tmp_path / "data").mkdir(exist_ok=True)
  for stale in ("tmp-bucket-007-00003", "shard-00000-of-00005.tfrecord"):
    (tmp_path / "data" / stale).write_bytes(b"stale")
  stats = prepare.run(config, str(tmp_path))
  assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
      "shard-00000-of-00002.tfrecord", "shard-00001-of-00002.tfrecord", prepare.STATS_FILE]
  assert sum(stats["shard_sizes"]) == stats["rows"]

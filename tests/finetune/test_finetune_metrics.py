"""Fine-tuning metrics against hand-computed values; data reading, features and bad
input of the three tasks (no model involved)."""

import itertools
import json

import numpy as np
import pytest

from bert_jax.finetune.tasks import classification
from bert_jax.finetune.tasks import qa as squad
from bert_jax.finetune.tasks import tagging
from bert_jax.finetune import features as task_data
from bert_jax.configs import finetune as configs
from bert_jax.errors import InputError


def test_accuracy_and_macro_f1_by_hand():
  gold = [0, 0, 0, 1, 1, 2]
  pred = [0, 0, 1, 1, 2, 2]
  m = classification.metrics(gold, pred)
  # class 0: P 2/2 R 2/3 F1 0.8; class 1: P 1/2 R 1/2 F1 0.5; class 2: P 1/2 R 1 F1 2/3
  assert m["accuracy"] == pytest.approx(4 / 6)
  assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
  # A class predicted but never gold counts with F1 0 (as scikit-learn's macro F1).
  assert classification.metrics([0, 0], [0, 1])["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


@pytest.mark.parametrize("tags,expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    # I- after O starts an entity (IOB1-style leniency, as conlleval and seqeval).
    (["O", "I-PER", "I-PER", "O"], {("PER", 1, 2)}),
    # A type change inside a chunk ends it and starts a new one.
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 2)}),
    # B- right after B- of the same type: two entities.
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 0), ("PER", 1, 2)}),
    # An entity running to the end of the sentence.
    (["O", "B-ORG", "I-ORG"], {("ORG", 1, 2)}),
    (["O", "O"], set()),
])
def test_entities_of_tricky_bio_sequences(tags, expected):
  assert tagging.entities(tags) == expected


def test_entity_f1_by_hand():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
  pred = [["B-PER", "I-PER", "O", "O"],      # PER right, LOC missed
          ["O", "B-ORG", "O", "I-ORG"]]      # ORG(1,1) and ORG(3,3): both wrong
  m = tagging.entity_metrics(gold, pred)
  # gold 3 entities, predicted 3, correct 1
  assert m["precision"] == pytest.approx(1 / 3)
  assert m["recall"] == pytest.approx(1 / 3)
  assert m["f1"] == pytest.approx(1 / 3)
  assert m["token_accuracy"] == pytest.approx(5 / 8)
  # Entities do not run across sentence boundaries.
  assert tagging.entity_metrics([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])["f1"] == 1.0


def test_squad_normalisation_and_scores():
  assert squad.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
  assert squad.normalize_answer("a cat, an owl and THE dog.") == "cat owl and dog"
  assert squad.normalize_answer("theater") == "theater"  # articles only as words
  assert squad.exact_match("the Eiffel Tower", "Eiffel tower.") == 1.0
  # pred tokens [eiffel, tower, paris], gold [eiffel, tower]: P 2/3, R 1, F1 0.8
  assert squad.f1("Eiffel Tower, Paris", "the Eiffel Tower") == pytest.approx(0.8)
  assert squad.f1("London", "Paris") == 0.0
  assert squad.f1("", "") == 1.0 and squad.f1("x", "") == 0.0  # v2.0 no-answer


def _example(qid, answers, context="w0 w1 w2"):
  return squad.Example(qid, "q", context, tuple(answers), "test")


def test_squad_metrics_max_over_golds_and_no_answer_split():
  examples = [_example("a", [("Paris", 0), ("the city of Paris", 0)]),
              _example("b", [("red apple", 0)]),
              _example("c", []), _example("d", [])]
  answers = ["city of Paris", "apple", "", "w1"]
  m = squad.squad_metrics(examples, answers)
  # a: EM 1 (second gold), F1 1; b: EM 0, F1 2/3; c: 1, 1; d: 0, 0
  assert m["exact_match"] == pytest.approx(100 * 2 / 4)
  assert m["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
  assert m["has_answer_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
  assert m["no_answer_exact_match"] == pytest.approx(50.0)


class CharTokenizer:
  """Every non-space character is a token (id = 10 + its code % 50); 'ß' maps to
  two tokens so a word can have several sub-tokens."""
  pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4
  vocab_size = 60

  def encode_offsets(self, text):
    ids, spans = [], []
    for i, ch in enumerate(text):
      if ch.isspace():
        continue
      for _ in range(2 if ch == "ß" else 1):
        ids.append(10 + ord(ch) % 50)
        spans.append((i, i + 1))
    return ids, spans

  def encode(self, text):
    return self.encode_offsets(text)[0]

  def encode_batch(self, texts):
    return [self.encode(t) for t in texts]


def _data(task, **overrides):
  data = configs.get_config(task).data
  data.update(overrides)
  return data


def test_tagging_labels_on_first_sub_token_and_reads_long_sentences_in_windows(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("-DOCSTART- O\n\nab B-PER\nß I-PER\nc O\n\nd O\n")
  examples = tagging.read(str(path))
  assert [e.words for e in examples] == [("ab", "ß", "c"), ("d",)]
  labels = tagging.label_list(examples)
  assert labels == ["O", "B-PER", "I-PER"]
  arrays, starts, counts = tagging.featurize(examples, CharTokenizer(), labels,
                                             _data("tagging", max_seq_length=6))
  # a b ß ß c are 5 pieces, 4 fit between [CLS] and [SEP]: two windows, pieces 0-3
  # and 2-4; "c" (piece 4) is labelled in the second, at position 3 of row 1.
  assert starts == [[1, 3, 6 + 3], [2 * 6 + 1]]
  assert counts == {"windows": 3, "words_inside_a_piece": 0}
  np.testing.assert_array_equal(arrays["labels"][0], [-1, 1, -1, 2, -1, -1])
  np.testing.assert_array_equal(arrays["labels"][1], [-1, -1, -1, 0, -1, -1])
  np.testing.assert_array_equal(arrays["attention_mask"][1], [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(arrays["attention_mask"][2], [1, 1, 1, 0, 0, 0])
  # Each word's tag is read from its own window, one sentence decoded as a whole.
  logits = np.zeros((3, 6, 3))
  logits[0, 1, 1] = logits[0, 3, 2] = logits[1, 3, 1] = 1
  preds = tagging.predictions(examples, starts, logits, labels, None)
  assert preds[0] == {"tokens": ["ab", "ß", "c"], "labels": ["B-PER", "I-PER", "B-PER"]}


@pytest.mark.parametrize("n,limit", [(1, 1), (5, 4), (10, 4), (37, 8), (126, 126),
                                     (127, 126), (400, 126)])
def test_tagging_windows_cover_every_piece_with_context(n, limit):
  starts, window_of = tagging.windows(n, limit)
  assert starts[0] == 0 and starts[-1] + limit >= n and len(window_of) == n
  assert all(b > a for a, b in zip(starts, starts[1:]))
  for f, k in enumerate(window_of):
    assert starts[k] <= f < starts[k] + limit
    if 0 < k < len(starts) - 1:  # a quarter window of context on either side
      assert f - starts[k] >= limit // 4 and starts[k] + limit - f > limit // 4


def test_tagging_in_windows_predicts_as_one_long_row():
  # A model whose logits depend on the token alone: reading a 60-word sentence in
  # windows of 8 must give the tags one row of 64 gives.
  words = [chr(ord("a") + i % 26) for i in range(60)]
  labels = ["O", "B-X", "I-X"]
  example = tagging.Example(tuple(words), None, "mem", 1)

  def predict(seq):
    arrays, starts, counts = tagging.featurize([example], CharTokenizer(), None,
                                               _data("tagging", max_seq_length=seq))
    logits = np.sin(arrays["input_ids"][..., None] * np.arange(1, 4) * 0.7)
    return tagging.predictions([example], starts, logits, labels, None), counts

  windowed, counts = predict(8)
  assert counts["windows"] > 1
  whole, counts = predict(64)
  assert counts["windows"] == 1 and windowed == whole
  assert len(whole[0]["labels"]) == 60 and set(whole[0]["labels"]) > {"O"}


class PieceTokenizer(CharTokenizer):
  """Like SentencePiece on Chinese: a zero-width word-boundary piece at the start,
  then the longest known piece ("中国", "人民", "的新") or one character."""
  PIECES = ("中国", "人民", "的新")

  def encode_offsets(self, text):
    ids, spans, i = [5], [(0, 0)], 0
    while i < len(text):
      n = next((len(p) for p in self.PIECES if text.startswith(p, i)), 1)
      if not text[i].isspace():
        ids.append(10 + ord(text[i]) % 50)
        spans.append((i, i + n))
      i += n
    return ids, spans


def test_tagging_reads_chinese_as_running_text_and_continues_shared_pieces(tmp_path):
  # No space beside CJK characters and full-width forms (１), one between others.
  assert tagging.running_text(["迈", "向", "A", "B", "１", "x"]) == (
      "迈向A B１x", [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)])
  path = tmp_path / "zh.txt"
  path.write_text("中 B-LOC\n国 I-LOC\n人 O\n民 O\n的 O\n新 B-PER\n华 I-PER\n")
  examples = tagging.read(str(path))
  labels = tagging.label_list(examples)  # O, B-LOC, B-PER, I-LOC, I-PER
  arrays, starts, counts = tagging.featurize(examples, PieceTokenizer(), labels,
                                             _data("tagging", max_seq_length=16))
  # [CLS] ▁ 中国 人民 的新 华 [SEP]: one label per piece, on the word it starts in;
  # 国, 民 and 新 begin inside another word's piece.
  assert starts[0] == [2, -1, 3, -1, 4, -1, 5]
  assert arrays["attention_mask"][0].sum() == 7
  np.testing.assert_array_equal(arrays["labels"][0][:8], [-1, -1, 1, 0, 0, 4, -1, -1])
  assert counts == {"windows": 1, "words_inside_a_piece": 3}
  # A shared piece's words continue its tag: 中国 -> B-LOC I-LOC, 人民 -> O O; 新 sits
  # in "的新" (O), so that entity can only be found from 华 on: the cost is counted.
  logits = np.zeros((1, 16, len(labels)))
  logits[0, [2, 3, 4, 5], [1, 0, 0, 2]] = 1
  assert tagging.predictions(examples, starts, logits, labels, None)[0]["labels"] == [
      "B-LOC", "I-LOC", "O", "O", "O", "O", "B-PER"]
  # max_seq_length 5: windows of 3 of the 5 pieces, one apart; each piece is read
  # from its own window (▁ 中国 人民 | 中国 人民 的新 | 人民 的新 华), at position 1
  # but for the last window's 的新 (2) and 华 (3). No word is lost to a cut.
  _, starts, counts = tagging.featurize(examples, PieceTokenizer(), labels,
                                        _data("tagging", max_seq_length=5))
  assert starts[0] == [1 * 5 + 1, -1, 2 * 5 + 1, -1, 2 * 5 + 2, -1, 2 * 5 + 3]
  assert counts == {"windows": 3, "words_inside_a_piece": 3}


def test_tagging_decodes_the_best_sequence_bio_allows():
  labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
  allowed, first = tagging.transitions(labels)
  assert allowed[1, 2] and allowed[2, 2] and allowed[3, 4]  # I-X after B-X / I-X
  assert not (allowed[0, 2] or allowed[3, 2] or allowed[4, 2])  # not after O or LOC
  assert allowed[:, [0, 1, 3]].all() and list(first) == [1, 1, 0, 1, 0]
  # Greedy reads B-LOC I-PER (0.5, 0.9); the best path BIO allows is B-PER I-PER
  # (0.4 * 0.9 = 0.36 > B-LOC I-LOC's 0.5 * 0.05).
  probs = np.array([[0.1, 0.4, 0.0, 0.5, 0.0], [0.05, 0.0, 0.9, 0.0, 0.05]])
  with np.errstate(divide="ignore"):
    assert tagging.viterbi(np.log(probs), allowed, first) == [1, 2]
  assert tagging.viterbi(np.zeros((0, 5)), allowed, first) == []
  # Against every sequence of 4 words.
  rng = np.random.default_rng(0)
  for _ in range(20):
    log_probs = np.log(rng.dirichlet(np.ones(5), size=4))
    legal = [s for s in itertools.product(range(5), repeat=4)
             if first[s[0]] and all(allowed[a, b] for a, b in zip(s, s[1:]))]
    best = max(legal, key=lambda s: log_probs[np.arange(4), s].sum())
    assert tagging.viterbi(log_probs, allowed, first) == list(best)
  # Through predictions: argmax O I-PER I-PER comes out O B-PER I-PER.
  example = tagging.Example(("a", "b", "c"), None, "x", 1)
  logits = np.log(np.array([[[0.1] * 5] + [[0.9, 0.02, 0.04, 0.02, 0.02],
                                           [0.1, 0.3, 0.4, 0.1, 0.1],
                                           [0.1, 0.1, 0.6, 0.1, 0.1]]]))
  assert tagging.predictions([example], [[1, 2, 3]], logits, labels, None)[0][
      "labels"] == ["O", "B-PER", "I-PER"]


def test_crf_decodes_and_scores_every_sequence_by_hand():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
  allowed, first = tagging.transitions(labels)
  rng = np.random.default_rng(1)
  # Potentials of 4 words [4, T + 1, T]: row 0 as the first tag, row 1 + i after tag i.
  pots = rng.normal(size=(4, 6, 5))
  score = lambda s: pots[0, 0, s[0]] + sum(pots[k, 1 + s[k - 1], s[k]]
                                           for k in range(1, 4))
  seqs = list(itertools.product(range(5), repeat=4))
  legal = [s for s in seqs if first[s[0]] and all(allowed[a, b] for a, b in zip(s, s[1:]))]
  assert tagging.viterbi(pots, allowed, first) == list(max(legal, key=score))
  # Per-word log-probs are potentials that ignore the predecessor.
  log_probs = np.log(rng.dirichlet(np.ones(5), size=4))
  as_pots = np.repeat(log_probs[:, None], 6, axis=1)
  assert tagging.viterbi(log_probs, allowed, first) == tagging.viterbi(as_pots, allowed,
                                                                       first)

  # The loss: -log P(gold) over all 5^4 sequences (unconstrained, as trained), per
  # labelled token. Row 0's 4 words sit at positions 1, 2, 4, 5 (position 3 a
  # continuation piece, 0 and 6 [CLS]/[SEP]); row 1 is a padding row (weight 0).
  log_z = np.logaddexp.reduce([score(s) for s in seqs])
  gold = (1, 2, 0, 3)
  potentials = np.zeros((2, 7, 6, 5), np.float32)
  potentials[0, [1, 2, 4, 5]] = pots
  potentials[0, [0, 3, 6]] = rng.normal(size=(3, 6, 5))  # never read
  potentials[1] = rng.normal(size=(7, 6, 5))
  batch = {"labels": np.full((2, 7), -1), "weight": np.array([1.0, 0.0])}
  batch["labels"][0, [1, 2, 4, 5]] = gold
  batch["labels"][1, 1:4] = 0
  value, metrics = tagging.crf_loss(jnp.asarray(potentials), batch)
  np.testing.assert_allclose(value, (log_z - score(gold)) / 4, rtol=1e-5)
  assert metrics["loss"] == value


def test_pair_packing_cuts_the_longer_segment_first():
  ids, types, cut = task_data.join_segments(CharTokenizer(), [11] * 6, [12] * 2, 8)
  assert ids == [2, 11, 11, 11, 3, 12, 12, 3] and cut
  assert types == [0] * 5 + [1] * 3


def test_classification_formats_and_bad_input(tmp_path):
  (tmp_path / "a.csv").write_text('text,text_pair,label\n"x, y",z,pos\nw,v,neg\n')
  (tmp_path / "a.tsv").write_text("text\tlabel\nx \"y\tpos\nw\tneg\n")
  (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "w", "label": 0}\n')
  csv_ex = classification.read(str(tmp_path / "a.csv"))
  assert (csv_ex[0].text, csv_ex[0].text_pair, csv_ex[0].label) == ("x, y", "z", "pos")
  assert classification.read(str(tmp_path / "a.tsv"))[0].text == 'x "y'
  assert [e.label for e in classification.read(str(tmp_path / "a.jsonl"))] == ["1", "0"]

  assert classification.read(str(tmp_path / "a.jsonl"), labelled=False)[1].text == "w"

  # A label the training file never had: located, not mapped to some other class.
  with pytest.raises(InputError, match=r"a.jsonl:1: label '1' does not occur in the "
                                       r"training file \(labels: neg, pos\)"):
    classification.featurize(classification.read(str(tmp_path / "a.jsonl")),
                             CharTokenizer(), ["neg", "pos"], _data("classification"))


@pytest.mark.parametrize("reader,name,content,message", [
    (classification.read, "bad.csv", "text,label\nx,pos\ny\n",
     r"bad.csv:3: expected the 2 fields"),
    (classification.read, "bad.jsonl", '{"text": "x", "label": 1}\n{"text": "y"\n',
     r"bad.jsonl:2: not a JSON object"),
    (classification.read, "nolabel.jsonl", '{"text": "x"}\n',
     r"nolabel.jsonl:1: missing field\(s\) \['label'\]"),
    (classification.read, "empty.csv", "", "empty.csv holds no examples"),
    (classification.read, "a.txt", "x\n", r"a.txt: unknown format '.txt'"),
    (tagging.read, "bad.txt", "a O\nb\n", r"bad.txt:2: expected 'token label'"),
    (tagging.read, "iobes.txt", "a S-PER\n", r"iobes.txt:1: tag 'S-PER' is not BIO"),
    (tagging.read, "blank.txt", "\n\n", "blank.txt holds no examples"),
    (squad.read, "broken.json", '{"data": [\n{"paragraphs": }]}',
     r"broken.json:2: invalid JSON"),
    (squad.read, "noctx.json", json.dumps({"data": [{"paragraphs": [
        {"qas": [{"id": "1", "question": "q", "answers": []}]}]}]}),
     r"data\[0\].paragraphs\[0\].qas\[0\]: malformed"),
])
def test_bad_files_are_located(tmp_path, reader, name, content, message):
  (tmp_path / name).write_text(content)
  with pytest.raises(InputError, match=message):
    reader(str(tmp_path / name))


def test_squad_windows_answer_spans_and_decoding(tmp_path):
  context = "abcdefghij"
  data = {"data": [{"paragraphs": [{"context": context, "qas": [
      {"id": "1", "question": "q", "answers": [{"text": "ghi", "answer_start": 6}]},
      {"id": "2", "question": "q", "answers": [], "is_impossible": True}]}]}]}
  path = tmp_path / "s.json"
  path.write_text(json.dumps(data))
  examples = squad.read(str(path))
  cfg = _data("qa", max_seq_length=9, doc_stride=3, max_query_length=4, max_answer_length=5)
  arrays, meta, counts = squad.featurize(examples, CharTokenizer(), None, cfg)
  # Room for 9 - 1 (question) - 3 = 5 context tokens: windows [0,5) [3,8) [6,10).
  assert counts["windows"] == 6
  assert [m[0] for m in meta] == [0, 0, 0, 1, 1, 1]
  # Context starts at position 3 ([CLS] q [SEP]); "ghi" = chars 6..8 lies only in the
  # last two windows; elsewhere the target is [CLS].
  assert arrays["start_labels"][:3].tolist() == [0, 0, 3 + 6 - 6]
  assert arrays["end_labels"][:3].tolist() == [0, 0, 3 + 8 - 6]
  assert arrays["start_labels"][3:].tolist() == [0, 0, 0]
  np.testing.assert_array_equal(arrays["token_type_ids"][0], [0, 0, 0, 1, 1, 1, 1, 1, 1])

  logits = np.zeros((6, 9, 2))
  # Window [3,8) (row 1, position = character) gives "g" more context than window
  # [6,10) (row 2, "g" at position 3): BERT's max-context rule makes only row 1's
  # start at "g" eligible, so the higher-scoring row 2 span "ghi" is not taken.
  logits[2, 3, 0] = logits[2, 5, 1] = 9.0
  logits[1, 6, 0] = logits[1, 7, 1] = 5.0
  logits[3:, 0, :] = 4.0  # question 2: [CLS] beats every span
  assert squad.decode(examples, meta, logits, 5, allow_null=True) == ["gh", ""]
  assert squad.decode(examples, meta, logits, 5, allow_null=False)[1] == "a"
  assert len(squad.decode(examples, meta, logits, 1, allow_null=True)[0]) == 1

"""Word starts from pieces (SentencePiece ▁, WordPiece ##) and from a segmentation."""

import pytest

from bert_jax.data import tokenizer
from bert_jax.data import words


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
  sentences = ["the quick brown fox jumps over the lazy dog.", "unbelievable things",
               "今天天气很好。", "我们一起去公园散步。", "人民日报的新闻。"] * 40
  work = tmp_path_factory.mktemp("spm")
  return tokenizer.get_or_train(str(work), lambda: sentences, 90, 1000)


def _groups(pieces: list[str], starts: list[bool]) -> list[str]:
  out = []
  for p, s in zip(pieces, starts):
    if s:
      out.append(p)
    else:
      out[-1] += p
  return out


def test_sentencepiece_words_are_pieces_after_a_boundary(spm):
  text = "unbelievable foxes. 今天很好"
  ids = spm.encode(text)
  pieces = [spm.id_to_token(i) for i in ids]
  groups = _groups(pieces, words.piece_starts(ids, *words.piece_tables(spm)))
  # Latin words keep their pieces together; punctuation and CJK are words of their own.
  assert "\u2581unbelievable" in groups and "\u2581foxes" in groups and "." in groups
  cjk = [p for p in pieces if "\u4e00" <= p[-1] <= "\u9fff"]
  assert "".join(cjk) == "今天很好" and set(cjk) <= set(groups)


def test_wordpiece_continuations_belong_to_the_previous_word(tmp_path):
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##believ", "##able",
           "fox", "##es", ",", "今", "天"]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
  tok = tokenizer.load(str(tmp_path / "vocab.txt"))
  ids = tok.encode("unbelievable foxes, 今天")
  starts = words.piece_starts(ids, *words.piece_tables(tok))
  assert _groups([tok.id_to_token(i) for i in ids], starts) == [
      "un##believ##able", "fox##es", ",", "今", "天"]


def test_segmented_words_follow_the_corpus(spm):
  segmented = ("人民日报", "的", "新闻", "。")
  ids, offsets = spm.encode_offsets("".join(segmented))
  starts = words.segmented_starts(offsets, segmented)
  spans = []
  for (begin, end), s in zip(offsets, starts):
    if s:
      spans.append([begin, end])
    else:
      spans[-1][1] = end
  # Every corpus word lies inside one group (a piece across two words joins them).
  bounds = [0, 4, 5, 7, 8]
  for b, e in zip(bounds, bounds[1:]):
    assert any(sb <= b and e <= se for sb, se in spans), (b, e, spans)
  assert len(ids) == len(starts) and starts[0]


def test_segmented_starts_by_hand():
  # A lone ▁ (zero width) opens the first word; "的新" straddles two words.
  offsets = [(0, 0), (0, 1), (1, 2), (2, 4), (4, 6), (6, 8)]
  assert words.segmented_starts(offsets, ("迈向", "充满", "的", "新世纪")) == [
      True, False, False, True, True, False]


def test_mark_roundtrip():
  tokens = words.mark([5, 6, 7, 0], [True, False, True, False])
  assert tokens == [5, ~6, 7, ~0]
  assert words.unmark(tokens) == ([5, 6, 7, 0], [1, 0, 1, 0])

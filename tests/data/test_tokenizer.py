"""WordPiece against transformers' BERT tokenizers; SentencePiece offsets; lookup."""

import random

import pytest
import transformers

from bert_jax.data import tokenizer

TEXTS = [
    "Hello, World! The QUICK brown fox jumped over the lazy dogs.",
    "Café déjà-vu: naïve ÉCOLE façade, Ångström and résumé (ﬁnal).",
    "我爱北京天安门。人民日报1998年1月1日报道：新华社北京电",
    "BERT's tokenizer handles un-believable, hyper-parameterised things...",
    "Mixed中文and English混合text, 3.14 vs 2,718; e-mail: a@b.co #tag $5",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and ｶﾀｶﾅ, ひらがな and 한국어 text.",
    "tabs\tand\nnewlines  and   spaces, control\x00chars\u200bzero width",
    "x" * 120 + " too-long-word then short",
    "Unseenwordsarehere qzxv jjjjj ¿Qué? ¡Sí! «quotes» “curly” — dash…",
    "",
]


def _vocab(texts, lowercase: bool, seed: int = 0) -> list[str]:
  """A Google-layout vocab (specials at 0 and 100-103) covering the texts partly:
  some words whole, some as a prefix + `##` pieces, some characters left out so
  [UNK] happens."""
  rng = random.Random(seed)
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + [
      "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  ref = transformers.models.bert.tokenization_bert.BasicTokenizer(
      do_lower_case=lowercase)
  words = sorted({w for t in texts for w in ref.tokenize(t)})
  pieces = set()
  for w in words:
    if rng.random() < 0.1:
      continue  # no pieces for this word at all: [UNK] unless characters cover it
    if len(w) > 2 and rng.random() < 0.5:
      cut = rng.randint(1, len(w) - 1)
      pieces.update({w[:cut], "##" + w[cut:]})
    else:
      pieces.add(w)
    for ch in w:
      if rng.random() < 0.7:
        pieces.update({ch, "##" + ch})
  return vocab + sorted(pieces)


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_wordpiece_equals_transformers(tmp_path, lowercase):
  vocab = _vocab(TEXTS, lowercase)
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(vocab) + "\n")
  ours = tokenizer.WordPieceTokenizer(str(path), lowercase=lowercase)
  fast = transformers.BertTokenizerFast(str(path), do_lower_case=lowercase)
  # The slow tokenizer is pure Python, independent of the Rust library we wrap.
  slow = transformers.BertTokenizer(str(path), do_lower_case=lowercase)
  assert ours.special == tokenizer.SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)
  assert ours.vocab_size == len(vocab)
  unk = 0
  for text in TEXTS:
    ids, offsets = ours.encode_offsets(text)
    want = fast(text, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == want["input_ids"], text
    assert ids == slow(text, add_special_tokens=False)["input_ids"], text
    assert offsets == [tuple(o) for o in want["offset_mapping"]], text
    assert ours.encode_batch([text]) == [ids]
    unk += ids.count(ours.unk_id)
  assert unk >= 3  # the generated vocab does leave holes; [UNK] is exercised
  # Over 100 characters is [UNK] as one word, as in BERT.
  assert ours.encode("x" * 120) == [ours.unk_id]
  # Every CJK character is its own word, in either casing.
  assert [ours.id_to_token(i) for i in ours.encode("天安门") if i != ours.unk_id] == [
      t for t in ("天", "安", "门") if t in vocab]


def test_wordpiece_casing_from_hf_config_or_vocab(tmp_path):
  (tmp_path / "vocab.txt").write_text(
      "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "The", "cafe",
                 "café"]) + "\n")
  # No tokenizer_config.json (a Google release): an upper-case entry means cased.
  tok = tokenizer.load(str(tmp_path / "vocab.txt"))
  assert tok.lowercase is False and tok.encode("The café") == [6, 8]
  (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
  tok = tokenizer.load(str(tmp_path / "vocab.txt"))
  assert tok.lowercase is True and tok.encode("The café") == [5, 7]  # accents stripped
  (tmp_path / "tokenizer_config.json").write_text(
      '{"do_lower_case": true, "strip_accents": false}')
  assert tokenizer.load(str(tmp_path / "vocab.txt")).encode("The café") == [5, 8]
  assert tokenizer._is_uncased(["[PAD]", "[CLS]", "the", "人"])


def test_wordpiece_vocab_without_specials_is_an_error(tmp_path):
  (tmp_path / "vocab.txt").write_text("a\nb\n[UNK]\n")
  with pytest.raises(ValueError, match=r"lacks the special tokens \['\[PAD\]', '\[CLS\]'"):
    tokenizer.load(str(tmp_path / "vocab.txt"))


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory):
  sentences = ["今天天气很好。", "我们一起去公园散步。", "人民日报的新闻。",
               "BERT pretraining in JAX", "mixed 中文 text"] * 40
  work = tmp_path_factory.mktemp("spm")
  return tokenizer.get_or_train(str(work), lambda: sentences, 80, 1000), work


def test_sentencepiece_offsets_point_at_the_text(spm_tokenizer):
  tok, _ = spm_tokenizer
  text = "今天 我们去公园, BERT in JAX！"
  ids, offsets = tok.encode_offsets(text)
  assert ids == tok.encode(text) and len(ids) == len(offsets)
  for i, (start, end) in zip(ids, offsets):
    piece = tok.id_to_token(i).replace("\u2581", "")
    if i != tok.unk_id and piece:
      assert text[start:end].strip() == piece, (piece, text[start:end])
  # Spans are ordered, non-overlapping and cover every non-space character.
  covered = set()
  for start, end in offsets:
    assert not covered & set(range(start, end))
    covered |= set(range(start, end))
  assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered


def test_from_dir_finds_either_kind(tmp_path, spm_tokenizer):
  tok, work = spm_tokenizer
  assert isinstance(tokenizer.from_dir(str(work)), tokenizer.SentencePieceTokenizer)
  assert tokenizer.from_dir(str(tmp_path)) is None
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhi\n")
  wp = tokenizer.from_dir(str(tmp_path))
  assert isinstance(wp, tokenizer.WordPieceTokenizer) and wp.encode("hi") == [5]
  assert tok.special == tokenizer.SENTENCEPIECE_IDS and tok.special.first_normal == 5
  assert wp.special.first_normal == 5
  assert tokenizer.SpecialIds(0, 100, 101, 102, 103).first_normal == 104

"""People's Daily NER conversion against hand-written BIO for corpus lines."""

from bert_jax.data import corpus, ner


def _labels(line):
  return [[f"{c}/{t}" for c, t in s] for s in ner.bio_sentences(line)]


def test_persons_places_organisations_and_compounds_by_hand():
  # From the corpus's first lines: consecutive nr words are one person.
  line = "中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr"
  assert _labels(line) == [[
      "中/B-ORG", "共/I-ORG", "中/I-ORG", "央/I-ORG", "总/O", "书/O", "记/O", "、/O",
      "国/O", "家/O", "主/O", "席/O", "江/B-PER", "泽/I-PER", "民/I-PER"]]
  # A bracketed compound is one entity of the bracket's type; ns words stay apart;
  # a full stop ends a sentence.
  line = "[中央/n  电视台/n]nt  在/p  中国/ns  北京/ns  。/w  邓/nr  小平/nr"
  assert _labels(line) == [
      ["中/B-ORG", "央/I-ORG", "电/I-ORG", "视/I-ORG", "台/I-ORG", "在/O", "中/B-LOC",
       "国/I-LOC", "北/B-LOC", "京/I-LOC", "。/O"],
      ["邓/B-PER", "小/I-PER", "平/I-PER"]]
  # Two persons apart are two entities; a compound of another tag is plain words.
  line = "兰/nr  红光/nr  摄/Vg  和/c  江/nr  [国家/n  主席/n]n"
  assert [t for s in ner.bio_sentences(line) for _, t in s] == [
      "B-PER", "I-PER", "I-PER", "O", "O", "B-PER", "O", "O", "O", "O"]
  # A closing quote and a run of stops stay with the sentence they end.
  line = "“/w  好/a  。/w  ”/w  是/v  吗/y  ？/w  ！/w  对/a"
  assert [len(s) for s in ner.bio_sentences(line)] == [4, 4, 1]


def test_articles_match_the_pretraining_documents():
  bio = next(ner.documents(0, 1))
  text = next(corpus.peoples_daily_documents())
  assert "".join(c for s in bio for c, _ in s) == "".join(text)
  assert [len(s) for s in bio] == [len(s) for s in text]  # the same sentences
  assert any(t == "B-PER" for s in bio for _, t in s)
  assert sum(1 for _ in ner.documents(3, 5)) == 2

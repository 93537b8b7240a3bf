"""The sentiment demo's data: deduplicated before the split, texts in both files
dropped, seeded disjoint splits; the naive-Bayes baseline on an obvious rule."""

from bert_jax.tools import sentiment_demo


def test_dedup_before_a_seeded_disjoint_split(tmp_path):
  pos = [f"good {i % 30}" for i in range(90)] + ["same", "", "  "]
  neg = [f"bad {i % 40}" for i in range(80)] + ["same"]
  (tmp_path / "pos.txt").write_text("\n".join(pos) + "\n", encoding="utf-8")
  (tmp_path / "neg.txt").write_text("\n".join(neg) + "\n", encoding="utf-8")
  reviews, counts = sentiment_demo.load_reviews(str(tmp_path))
  assert counts == {"lines": 93 + 81, "unique": 30 + 40 + 1, "in_both_dropped": 1,
                    "kept": 70}
  assert len({t for t, _ in reviews}) == 70 and ("same", "pos") not in reviews
  train, dev, test = sentiment_demo.split(reviews)
  assert (len(train), len(dev), len(test)) == (56, 7, 7)
  texts = [{t for t, _ in part} for part in (train, dev, test)]
  assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
  assert sentiment_demo.split(reviews) == (train, dev, test)  # seeded
  assert sentiment_demo.split(reviews, seed=1) != (train, dev, test)


def test_naive_bayes_baseline():
  train = [("好看好看", "pos"), ("很好", "pos"), ("太差", "neg"), ("差劲差", "neg")]
  assert sentiment_demo.naive_bayes_accuracy(train, [("好", "pos"), ("差", "neg")]) == 1.0

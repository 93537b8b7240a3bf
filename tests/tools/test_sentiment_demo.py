"""The sentiment demo's data: deduplicated before the split, texts in both files
dropped, seeded disjoint splits; the naive-Bayes and TF-IDF baselines on an obvious
rule, the latter's C chosen on dev, never test."""

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


def test_the_domain_text_is_the_training_reviews_only(tmp_path):
  pos = [f"good {i}" for i in range(40)]
  neg = [f"bad {i}" for i in range(40)]
  (tmp_path / "pos.txt").write_text("\n".join(pos) + "\n", encoding="utf-8")
  (tmp_path / "neg.txt").write_text("\n".join(neg) + "\n", encoding="utf-8")
  path = tmp_path / "out" / "domain.txt"
  assert sentiment_demo.write_domain_text(str(path), str(tmp_path)) == 64
  train, dev, test = sentiment_demo.split(sentiment_demo.load_reviews(str(tmp_path))[0])
  written = path.read_text(encoding="utf-8").splitlines()
  assert written == [t for t, _ in train]  # texts only, in the split's order
  assert not set(written) & {t for t, _ in dev + test}


def test_naive_bayes_baseline():
  train = [("好看好看", "pos"), ("很好", "pos"), ("太差", "neg"), ("差劲差", "neg")]
  assert sentiment_demo.naive_bayes_accuracy(train, [("好", "pos"), ("差", "neg")]) == 1.0


def test_tfidf_baseline_chooses_c_on_dev_and_scores_test():
  words = ["好", "棒", "赞", "差", "烂", "坏"]
  rows = lambda n, seed: [(w * (1 + (i + seed) % 3) + "的", "pos" if w in "好棒赞" else "neg")
                          for i in range(n) for w in words]
  train, dev, test = rows(10, 0), rows(3, 1), rows(3, 2)
  got = sentiment_demo.tfidf_logreg(train, dev, test)
  assert got["test_accuracy"] == 1.0 and got["C"] in sentiment_demo.TFIDF_C
  # Dev decides C: test's labels never change the choice.
  flipped = [(t, "neg" if l == "pos" else "pos") for t, l in dev]
  chosen = sentiment_demo.tfidf_logreg(train, flipped, test)
  assert chosen["dev_accuracy"] == 0.0 and chosen["test_accuracy"] == 1.0
  unlabelled = sentiment_demo.tfidf_logreg(train, flipped, [(t, "?") for t, _ in test])
  assert unlabelled["C"] == chosen["C"] and unlabelled["test_accuracy"] == 0.0

"""`bert-jax benchmark --what prepare` on a small synthetic corpus."""

import json

from bert_jax.tools import prepare_benchmark


def test_prepare_benchmark_prints_its_figures(tmp_path, tiny_config, capsys):
  config = tiny_config.copy_and_resolve_references()
  config.data.update(tokenizer_sentences=2000, eval_documents=5)
  result = prepare_benchmark.run(config, str(tmp_path), corpus_mb=0.5)
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
  assert result["processes"] == 1 and result["corpus_mb"] >= 0.5
  assert result["tokens_per_sec_per_process"] > 0 and result["peak_rss_mb"] > 0
  lines = (tmp_path / "corpus-0.5mb.txt").read_text(encoding="utf-8").splitlines()
  numbered = [line.split(" ", 1)[0] for line in lines if line]
  assert numbered == [str(i) for i in range(len(numbered))]  # no two documents alike

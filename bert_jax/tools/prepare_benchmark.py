"""`bert-jax benchmark --what prepare`: how fast `prepare` turns text into shards, per
process, and the most memory a process holds doing it; one JSON line.

The corpus, WORKDIR/corpus-{MB}mb.txt (--corpus_mb, made once), is the embedded one
repeated, each pass in a new shuffled order and every line numbered, so that no two
documents are alike. It is prepared as `pretrain` would on the job's processes, one
worker each (data.prepare_workers=1), with the workdir's SentencePiece model: trained
first on the embedded corpus if there is none, outside the timing. peak_rss_mb is the
largest peak resident memory of a process during `prepare` (Linux: VmHWM, reset
before it; it includes the ~0.7 GB of TensorFlow and JAX).
"""

import json
import os
import random
import shutil
import time

from bert_jax.data import corpus, prepare, tokenizer

_STAGES = {"ready": "first", "peaks": "all"}


def make_corpus(path: str, megabytes: float) -> None:
  """Writes at least `megabytes` MiB of text (whole documents) to `path`."""
  docs = [["".join(corpus.untag_words(line)) for line in lines]
          for lines in corpus.peoples_daily_lines()]
  size, line, passes = 0, 0, 0
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    while size < megabytes * 2**20:
      order = list(range(len(docs)))
      random.Random(passes).shuffle(order)
      for i in order:
        text = "".join(f"{line + k} {p}\n" for k, p in enumerate(docs[i])) + "\n"
        line += len(docs[i])
        f.write(text)
        size += len(text.encode())
        if size >= megabytes * 2**20:
          break
      passes += 1
  os.replace(path + ".tmp", path)


def _peak_rss_mb(reset: bool = False) -> float:
  """This process's peak resident memory (VmHWM), first reset to the current with
  `reset`; 0 off Linux."""
  try:
    if reset:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
      return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM"))
  except OSError:
    return 0.0


def run(config, workdir: str, corpus_mb: float = 1024,
        job: prepare.Job | None = None) -> dict:
  job = job or prepare.jax_job()
  meetings = prepare.Meetings(job, "bert_jax/prepare_benchmark", _STAGES)
  source = os.path.join(workdir, f"corpus-{corpus_mb:g}mb.txt")
  config = config.copy_and_resolve_references()
  config.data.update(input=source, prepare_workers=1, prepared_dir="")
  try:
    if job.index == 0:
      os.makedirs(workdir, exist_ok=True)
      if not os.path.exists(source):
        make_corpus(source, corpus_mb)
      sentences = lambda: [s for d in corpus.peoples_daily_documents() for s in d]
      tokenizer.get_or_train(workdir, sentences, config.model.vocab_size,
                             config.data.tokenizer_sentences, config.train.seed,
                             config.data.tokenizer_model_type)
      shutil.rmtree(prepare.data_dir(config, workdir), ignore_errors=True)
    meetings.meet("ready")
    _peak_rss_mb(reset=True)
    start = time.perf_counter()
    stats = prepare.run(config, workdir, job=job)
    seconds = time.perf_counter() - start
    peaks = meetings.meet("peaks", str(_peak_rss_mb()))
  except BaseException as e:
    meetings.fail(e)
    raise
  result = {
      "what": "prepare",
      "tokens_per_sec_per_process": round(stats["tokens"] / seconds / job.count),
      "processes": job.count,
      "peak_rss_mb": round(max(map(float, peaks))),
      "tokens": stats["tokens"],
      "rows": stats["rows"],
      "seconds": round(seconds, 1),
      "corpus_mb": round(os.path.getsize(source) / 2**20, 1),
      "cpu_count": os.cpu_count(),
  }
  if job.index == 0:
    print(json.dumps(result))
  return result

"""Span QA on SQuAD v1.1 / v2.0 JSON: question + context windows (doc stride), answer
character spans -> token spans through the tokenizer's offsets, best-span decoding
within max_answer_length, no-answer ([CLS]) handling for v2.0, and the official
exact-match / F1 with SQuAD's answer normalisation."""

import collections
import dataclasses
import json
import re
import string

import numpy as np
from etils import epath

from bert_jax.finetune import step as finetune_step
from bert_jax.finetune import features
from bert_jax.errors import InputError

PER_TOKEN = True
BEST_METRIC = "f1"


@dataclasses.dataclass(frozen=True)
class Example:
  qid: str
  question: str
  context: str
  answers: tuple[tuple[str, int], ...]  # (text, character start); empty: no answer
  where: str  # position in the JSON, for error messages


def read(path: str, labelled: bool = True) -> list[Example]:
  """Questions of a SQuAD file; `labelled` requires answers (or is_impossible)."""
  if not epath.Path(path).exists():
    raise InputError(f"{path} does not exist")
  with epath.Path(path).open() as f:
    text = f.read()
  if not text.strip():
    raise InputError(f"{path} holds no examples")
  try:
    data = json.loads(text)["data"]
  except json.JSONDecodeError as e:
    raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
  except (KeyError, TypeError):
    raise InputError(f"{path}: not SQuAD JSON (no top-level 'data' list)") from None
  examples = []
  for a, article in enumerate(data):
    for p, para in enumerate(article.get("paragraphs", [])):
      for q, qa in enumerate(para.get("qas", [])):
        where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
        try:
          answers = tuple((x["text"], int(x["answer_start"])) for x in qa.get("answers", []))
          example = Example(str(qa["id"]), qa["question"], para["context"],
                            () if qa.get("is_impossible") else answers, where)
        except (KeyError, TypeError, ValueError) as e:
          raise InputError(f"{where}: malformed ({e!r})") from None
        if labelled and not example.answers and not qa.get("is_impossible"):
          raise InputError(f"{where}: no answers and not is_impossible")
        examples.append(example)
  return features.require_examples(examples, path)


def label_list(examples) -> None:
  del examples
  return None  # spans, not labels


def num_outputs(labels) -> int:
  del labels
  return 2  # start and end logits


def _windows(num_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
  """[start, end) token windows of at most `room` tokens, `stride` apart."""
  out, start = [], 0
  while True:
    end = min(start + room, num_tokens)
    out.append((start, end))
    if end == num_tokens:
      return out
    start += min(room, stride)


def _max_context(windows, position: int, w: int) -> bool:
  """Whether window w gives `position` its most context (BERT's rule): the window in
  which min(left, right) context is largest, longer windows winning ties."""
  def score(i):
    s, e = windows[i]
    return min(position - s, e - 1 - position) + 0.01 * (e - s)
  holders = [i for i, (s, e) in enumerate(windows) if s <= position < e]
  return max(holders, key=score) == w


def _answer_tokens(offsets, start: int, text: str) -> tuple[int, int] | None:
  """First and last token covering characters [start, start + len(text))."""
  end = start + len(text)
  inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
  return (inside[0], inside[-1]) if inside else None


def featurize(examples: list[Example], tok, labels, data_config):
  """(arrays, meta, counts). One row per context window; meta per row: example index,
  each position's character span in the context ((-1, -1) outside the context) and
  whether the window gives that token its most context."""
  del labels
  cfg = data_config
  rows, meta = [], []
  counts = collections.Counter()
  questions = tok.encode_batch([e.question for e in examples])
  for n, (e, q) in enumerate(zip(examples, questions)):
    if len(q) > cfg.max_query_length:
      counts["truncated_questions"] += 1
      q = q[:cfg.max_query_length]
    ctx, offsets = tok.encode_offsets(e.context)
    room = cfg.max_seq_length - len(q) - 3
    if room < 1:
      raise InputError(f"max_seq_length={cfg.max_seq_length} leaves no room for context "
                       f"after max_query_length={cfg.max_query_length}")
    answer = None
    if e.answers:  # training targets the first answer, as BERT's run_squad does
      text, char_start = e.answers[0]
      if e.context.startswith(text, char_start):
        answer = _answer_tokens(offsets, char_start, text)
      if answer is None:
        counts["answers_not_in_context"] += 1  # trained as no-answer, counted
    windows = _windows(len(ctx), room, cfg.doc_stride)
    counts["windows"] += len(windows)
    for w, (s, end) in enumerate(windows):
      ids = [tok.cls_id, *q, tok.sep_id, *ctx[s:end], tok.sep_id]
      first = len(q) + 2  # position of context token s
      span = [(-1, -1)] * first + list(offsets[s:end]) + [(-1, -1)]
      best = [False] * first + [_max_context(windows, p, w) for p in range(s, end)] + [False]
      start_pos = end_pos = 0  # [CLS]: no answer in this window
      if answer is not None and s <= answer[0] and answer[1] < end:
        start_pos, end_pos = answer[0] - s + first, answer[1] - s + first
      rows.append({"input_ids": ids, "token_type_ids": [0] * first + [1] * (end - s + 1),
                   "start_labels": start_pos, "end_labels": end_pos})
      meta.append((n, span, best))
  return features.to_arrays(rows, cfg.max_seq_length, tok.pad_id), meta, dict(counts)


def loss(logits, batch):
  start, start_m = finetune_step.weighted_xent(
      logits[..., 0], batch["start_labels"], batch["weight"])
  end, end_m = finetune_step.weighted_xent(
      logits[..., 1], batch["end_labels"], batch["weight"])
  return (start + end) / 2, {"loss": (start + end) / 2,
                             "accuracy": (start_m["accuracy"] + end_m["accuracy"]) / 2}


def decode(examples, meta, logits, max_answer_length: int, allow_null: bool,
           null_threshold: float = 0.0) -> list[str]:
  """Best answer text per example: the highest start + end logit over spans inside
  the context, start in a window that gives it most context, length at most
  max_answer_length. With `allow_null` (v2.0) the answer is "" when the [CLS] score
  (lowest over the windows) beats the best span by more than null_threshold."""
  logits = np.asarray(logits, np.float64)
  best = [(-np.inf, "")] * len(examples)
  null = [np.inf] * len(examples)
  for row, (n, span, max_ctx) in enumerate(meta):
    start, end = logits[row, :len(span), 0], logits[row, :len(span), 1]
    null[n] = min(null[n], start[0] + end[0])
    in_ctx = np.array([s >= 0 for s, _ in span])
    scores = start[:, None] + end[None, :]
    i, j = np.indices(scores.shape)
    ok = (in_ctx[:, None] & in_ctx[None, :] & np.array(max_ctx)[:, None]
          & (j >= i) & (j - i < max_answer_length))
    if not ok.any():
      continue
    scores = np.where(ok, scores, -np.inf)
    a, b = np.unravel_index(scores.argmax(), scores.shape)
    if scores[a, b] > best[n][0]:
      # .strip(): a SentencePiece piece "▁x" spans the space before x.
      best[n] = (scores[a, b], examples[n].context[span[a][0]:span[b][1]].strip())
  return ["" if allow_null and null[n] - best[n][0] > null_threshold else best[n][1]
          for n in range(len(examples))]


def evaluate(examples, meta, logits, labels, data_config) -> dict:
  del labels
  answers = decode(examples, meta, logits, data_config.max_answer_length,
                   data_config.version_2_with_negative,
                   data_config.null_score_diff_threshold)
  return squad_metrics(examples, answers)


def predictions(examples, meta, logits, labels, data_config) -> list[dict]:
  del labels
  answers = decode(examples, meta, logits, data_config.max_answer_length,
                   data_config.version_2_with_negative,
                   data_config.null_score_diff_threshold)
  return [{"id": e.qid, "question": e.question, "answer": a}
          for e, a in zip(examples, answers)]


# SQuAD's official evaluation (evaluate-v2.0.py, which agrees with v1.1's wherever
# both answers are non-empty).
def normalize_answer(s: str) -> str:
  """Lower case, drop punctuation and the articles a/an/the, squeeze whitespace."""
  s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s, flags=re.UNICODE)
  return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
  pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred or not ref:  # no-answer: 1 when both are empty
    return float(pred == ref)
  same = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(ref)
  return 2 * precision * recall / (precision + recall)


def squad_metrics(examples, answers) -> dict:
  """exact_match and f1 in percent (max over gold answers; "" is the gold answer of
  a no-answer question), with has_answer_* / no_answer_* splits when both occur."""
  em, f, has = [], [], []
  for e, a in zip(examples, answers):
    golds = [t for t, _ in e.answers if normalize_answer(t)] or [""]
    em.append(max(exact_match(a, g) for g in golds))
    f.append(max(f1(a, g) for g in golds))
    has.append(bool(e.answers))
  em, f, has = np.array(em), np.array(f), np.array(has)
  out = {"exact_match": 100 * em.mean(), "f1": 100 * f.mean(), "examples": len(em)}
  if has.any() and not has.all():
    for name, sel in (("has_answer", has), ("no_answer", ~has)):
      out[f"{name}_exact_match"] = 100 * em[sel].mean()
      out[f"{name}_f1"] = 100 * f[sel].mean()
      out[f"{name}_examples"] = int(sel.sum())
  return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}

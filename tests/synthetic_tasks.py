"""Small synthetic fine-tuning tasks with learnable rules, and a tiny "pretrained"
workdir on their vocabulary."""

import json
import os
import random

# Few filler words: with uniform attention at init, [CLS] sees the mean of the
# sentence, and a 32-wide model separates a color from that mean only when the
# fillers do not span its whole space.
FILLER = [f"w{i}" for i in range(12)]
COLORS = ["red", "blue", "green"]
ANIMALS = ["cat", "dog", "owl"]
PEOPLE = ["ann", "bob", "carl", "dora"]
CITIES = ["paris", "rome", "oslo"]
ALL_WORDS = FILLER + COLORS + ANIMALS + PEOPLE + CITIES + ["jr", "what", "color", "city",
                                                           "animal"]


def pretrained_tiny(workdir: str, seed: int = 0) -> None:
  """A pretrain workdir (config.json, tokenizer/spm.model, checkpoint of step 0) of a
  2-layer, 32-wide BERT with a SentencePiece model of ALL_WORDS, written through the
  pretraining code's own tokenizer and checkpoint functions. Its weights are the
  random init: fine-tuning tests must not depend on what pretraining learns."""
  # pylint: disable=g-import-not-at-top
  import jax
  from bert_jax.runtime import checkpoints
  from bert_jax.model import bert as model
  from bert_jax.runtime import optimizer
  from bert_jax.data import tokenizer
  from bert_jax.runtime import state as state_lib
  from bert_jax.configs import pretrain as configs
  rng = random.Random(seed)
  sentences = [" ".join(rng.choice(ALL_WORDS) for _ in range(rng.randint(4, 12)))
               for _ in range(300)]
  os.makedirs(os.path.join(workdir, "tokenizer"), exist_ok=True)
  with open(os.path.join(workdir, tokenizer.MODEL_FILE), "wb") as f:
    f.write(tokenizer.train(sentences, vocab_size=128))
  c = configs.get_config("tiny")
  c.model.update({"vocab_size": 128, "num_layers": 2, "hidden_size": 32, "num_heads": 2,
                  "intermediate_size": 64, "max_position_embeddings": 128})
  checkpoints.write_config(workdir, c)
  bert = model.BertForPreTraining(model.BertConfig.from_dict(c.model))
  tx, _ = optimizer.make(c.optimizer, 10)
  # Not fine-tuning's seed: restored weights must differ from a fresh init's.
  key = jax.random.key(1000 + seed)
  state = jax.jit(lambda r: state_lib.init_state(bert, tx, r, 8))(key)
  mngr = checkpoints.manager(workdir, async_save=False)
  checkpoints.save(mngr, state)
  mngr.wait_until_finished()
  mngr.close()


def classification_rows(n: int, seed: int, colors=tuple(COLORS)) -> list[dict]:
  """Label = the color word in the sentence, or "none". (Each further class costs
  the tiny model another plateau of steps: two colors keep the test short.)"""
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    label = rng.choice(list(colors) + ["none"])
    if label != "none":
      words.insert(rng.randrange(len(words) + 1), label)
    rows.append({"text": " ".join(words), "label": label})
  return rows


def tagging_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
  """PER = a person's name (B) optionally followed by "jr" (I); LOC = a city."""
  rng = random.Random(seed)
  out = []
  for _ in range(n):
    sent = []
    for _ in range(rng.randint(3, 9)):
      r = rng.random()
      if r < 0.2:
        sent.append((rng.choice(PEOPLE), "B-PER"))
        if rng.random() < 0.4:
          sent.append(("jr", "I-PER"))
      elif r < 0.35:
        sent.append((rng.choice(CITIES), "B-LOC"))
      else:
        sent.append((rng.choice(FILLER), "O"))
    out.append(sent)
  return out


def squad_data(n: int, seed: int, v2: bool) -> dict:
  """Contexts of filler words with one color and one city (and an animal in half of
  them); the question asks for one of them. v2 adds questions about an absent animal
  (no answer). Answers are single SentencePiece pieces in the tiny vocabulary."""
  rng = random.Random(seed)
  paragraphs = []
  for i in range(n):
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 20))]
    spans = {"color": [rng.choice(COLORS)],
             "city": [rng.choice(CITIES)]}
    if v2 and rng.random() < 0.5:
      spans["animal"] = [rng.choice(ANIMALS)]
    for kind, span in spans.items():
      words.insert(rng.randrange(len(words) + 1), " ".join(span))
    context = " ".join(words)
    kind = rng.choice(["color", "city"] + (["animal"] if v2 else []))
    qa = {"id": f"q{i}", "question": f"what {kind}", "answers": []}
    if kind in spans:
      text = " ".join(spans[kind])
      start = f" {context} ".index(f" {text} ")  # whole words only
      qa["answers"] = [{"text": text, "answer_start": start}]
    elif v2:
      qa["is_impossible"] = True
    paragraphs.append({"context": context, "qas": [qa]})
  return {"version": "v2.0" if v2 else "1.1",
          "data": [{"title": "synthetic", "paragraphs": paragraphs}]}


def write_jsonl(path, rows) -> str:
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def write_conll(path, sentences) -> str:
  with open(path, "w") as f:
    for sent in sentences:
      f.write("".join(f"{w} {t}\n" for w, t in sent) + "\n")
  return str(path)


def write_json(path, obj) -> str:
  with open(path, "w") as f:
    json.dump(obj, f)
  return str(path)


def similarity_rows(n: int, seed: int) -> list[dict]:
  """A text and its positive share a person, a city, an animal and a color (324
  combinations), each among other filler words in another order; the model must
  embed texts by those words to find a text's positive among the others'."""
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    keys = [rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(ANIMALS),
            rng.choice(COLORS)]

    def side():
      words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))] + keys
      rng.shuffle(words)
      return " ".join(words)
    rows.append({"text": side(), "text_pair": side()})
  return rows

"""Checkpoint conversion: Hugging Face / Google TF1 BERT <-> our Orbax checkpoints.

Sources (`load`):
  hf     a Hugging Face directory: config.json + model.safetensors (or a sharded
         model.safetensors.index.json; pytorch_model.bin only when torch is
         importable), PyTorch names and layouts, BertForPreTraining or BertModel layout.
  tf1    a Google TF1 checkpoint directory: bert_config.json, vocab.txt,
         bert_model.ckpt.* (read with tf.train.load_checkpoint; optimizer slots skipped).
  orbax  a pretrain workdir or a directory this module wrote (config.json with a
         "model" section + checkpoints/<step>/params).
Destinations (`save_orbax`, `save_hf`):
  orbax  DST/config.json ({"model": BertConfig fields}), DST/checkpoints/0/params
         (params only), DST/tokenizer/<tokenizer files>.
  hf     DST/config.json (transformers BertConfig), DST/model.safetensors in PyTorch
         names/layout (metadata format "pt"; decoder tied to the word embeddings),
         tokenizer files (spm.model, vocab.txt, ...) next to them.

Every path goes through one intermediate, the PyTorch-named state dict of
BertForPreTraining, whose expected names and shapes are derived from `to_hf_params`
(our tree -> FlaxBertForPreTraining's tree, verified against transformers in
tests/test_hf_reference.py) by HF's own Flax<->PyTorch naming rule. Input is validated
in full before anything is written, and output is written into a temporary sibling of
DST that is renamed at the end, so bad input leaves no DST behind.
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile

import flax
import flax.linen as nn
import jax
import numpy as np

from bert_jax.model import bert as model_lib
from bert_jax.runtime import checkpoints, outputs
from bert_jax.errors import InputError

log = logging.getLogger("bert_jax")

FORMATS_FROM = ("hf", "tf1", "orbax")
FORMATS_TO = ("orbax", "hf")
TOKENIZER_FILES = ("vocab.txt", "spm.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "sentencepiece.bpe.model")

# Optional parts of the pretraining model: (HF name prefixes, our top-level params).
# A checkpoint may lack a whole group (BertModel has no heads; BertForMaskedLM has
# no pooler and no NSP head); the group is then initialised with our init and
# reported. A group present only in part is a broken checkpoint (InputError).
OPTIONAL_GROUPS = {
    "pooler": (("bert.pooler.",), ("pooler",)),
    "mlm_head": (("cls.predictions.",), ("mlm_transform", "mlm_layer_norm",
                                          "mlm_output_bias")),
    "nsp_head": (("cls.seq_relationship.",), ("nsp",)),
}


# --- our tree <-> FlaxBertForPreTraining's tree -------------------------------------


def to_hf_params(params, cfg: model_lib.BertConfig):
  """Maps our (unboxed) parameter tree onto FlaxBertForPreTraining's `params`."""
  h = cfg.hidden_size
  emb = params["embeddings"]

  def dense(p):
    return {"kernel": p["kernel"], "bias": p["bias"]}

  def ln(p):
    return {"scale": p["scale"], "bias": p["bias"]}

  layers = {}
  for i in range(cfg.num_layers):
    lp = params[f"layer_{i}"]
    att = lp["attention"]
    # Ours: q/k/v kernel [H, heads, head_dim], bias [heads, head_dim]; HF splits the
    # H outputs head-major (reshape to (heads, head_dim)), so a plain reshape matches.
    qkv = {name: {"kernel": att[name]["kernel"].reshape(h, h),
                  "bias": att[name]["bias"].reshape(h)}
           for name in ("query", "key", "value")}
    layers[str(i)] = {
        "attention": {
            "self": qkv,
            "output": {
                "dense": {"kernel": att["out"]["kernel"].reshape(h, h),
                          "bias": att["out"]["bias"]},
                "LayerNorm": ln(lp["attention_layer_norm"]),
            },
        },
        "intermediate": {"dense": dense(lp["intermediate"])},
        "output": {"dense": dense(lp["output"]),
                   "LayerNorm": ln(lp["output_layer_norm"])},
    }

  return {
      "bert": {
          "embeddings": {
              "word_embeddings": {"embedding": emb["word_embeddings"]["embedding"]},
              "position_embeddings": {"embedding": emb["position_embeddings"]["embedding"]},
              "token_type_embeddings": {
                  "embedding": emb["token_type_embeddings"]["embedding"]},
              "LayerNorm": ln(emb["layer_norm"]),
          },
          "encoder": {"layer": layers},
          "pooler": {"dense": dense(params["pooler"])},
      },
      "cls": {
          # The HF decoder is tied to the word embeddings (tie_word_embeddings=True),
          # so it has no kernel of its own, only this output bias.
          "predictions": {
              "bias": params["mlm_output_bias"],
              "transform": {"dense": dense(params["mlm_transform"]),
                            "LayerNorm": ln(params["mlm_layer_norm"])},
          },
          "seq_relationship": dense(params["nsp"]),
      },
  }


def from_hf_params(hf, cfg: model_lib.BertConfig):
  """The inverse of `to_hf_params`."""
  h, n = cfg.hidden_size, cfg.num_heads
  d = h // n
  b, c = hf["bert"], hf["cls"]
  dense = lambda p: {"kernel": p["kernel"], "bias": p["bias"]}
  ln = lambda p: {"scale": p["scale"], "bias": p["bias"]}
  emb = b["embeddings"]
  out = {
      "embeddings": {
          "word_embeddings": {"embedding": emb["word_embeddings"]["embedding"]},
          "position_embeddings": {"embedding": emb["position_embeddings"]["embedding"]},
          "token_type_embeddings": {"embedding": emb["token_type_embeddings"]["embedding"]},
          "layer_norm": ln(emb["LayerNorm"]),
      },
      "pooler": dense(b["pooler"]["dense"]),
      "mlm_transform": dense(c["predictions"]["transform"]["dense"]),
      "mlm_layer_norm": ln(c["predictions"]["transform"]["LayerNorm"]),
      "mlm_output_bias": c["predictions"]["bias"],
      "nsp": dense(c["seq_relationship"]),
  }
  for i in range(cfg.num_layers):
    lp = b["encoder"]["layer"][str(i)]
    s, o = lp["attention"]["self"], lp["attention"]["output"]
    att = {name: {"kernel": s[name]["kernel"].reshape(h, n, d),
                  "bias": s[name]["bias"].reshape(n, d)}
           for name in ("query", "key", "value")}
    att["out"] = {"kernel": o["dense"]["kernel"].reshape(n, d, h),
                  "bias": o["dense"]["bias"]}
    out[f"layer_{i}"] = {
        "attention": att,
        "attention_layer_norm": ln(o["LayerNorm"]),
        "intermediate": dense(lp["intermediate"]["dense"]),
        "output": dense(lp["output"]["dense"]),
        "output_layer_norm": ln(lp["output"]["LayerNorm"]),
    }
  return out


# --- the PyTorch-named intermediate -------------------------------------------------

_PT_LEAF = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def _plain(cfg: model_lib.BertConfig) -> model_lib.BertConfig:
  """The config with per-layer params (`layer_i`, no scan) and no remat: the layout
  every conversion works in. Scanned params are unstacked first (`_unscanned`)."""
  return dataclasses.replace(cfg, scan_layers=False, remat="none")


def _unscanned(params):
  """Params of a `scan_layers` model (one `layers` subtree) -> `layer_i` subtrees."""
  if "layers" in params:
    return model_lib.unstack_layers(params)
  return params


def pt_table(cfg: model_lib.BertConfig):
  """{PyTorch name: (HF Flax path, PyTorch shape, transposed)} for BertForPreTraining.

  HF's naming rule: Flax `kernel` is PyTorch `weight` transposed; `embedding` and
  LayerNorm `scale` are `weight`; `bias` is `bias`.
  """
  hf_shapes = jax.eval_shape(lambda p: to_hf_params(p, cfg), model_lib.abstract_params(model_lib.BertForPreTraining(_plain(cfg))))
  table = {}
  for path, x in flax.traverse_util.flatten_dict(hf_shapes).items():
    name = ".".join(path[:-1] + (_PT_LEAF[path[-1]],))
    transposed = path[-1] == "kernel"
    table[name] = (path, tuple(x.shape[::-1]) if transposed else tuple(x.shape),
                   transposed)
  return table


def params_to_pt(params, cfg: model_lib.BertConfig) -> dict:
  """Our params -> PyTorch-named float32 numpy state dict (decoder tied)."""
  flat = flax.traverse_util.flatten_dict(to_hf_params(_unscanned(params), cfg))
  sd = {}
  for name, (path, _, transposed) in pt_table(cfg).items():
    x = np.asarray(flat[path], np.float32)
    sd[name] = np.ascontiguousarray(x.T if transposed else x)
  sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
  sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
  return sd


def _normalise_pt_names(sd: dict) -> dict:
  """Older names (LayerNorm gamma/beta) and the BertModel layout (no `bert.`)."""
  out = {}
  for k, v in sd.items():
    if k.endswith(".gamma"):
      k = k[:-len("gamma")] + "weight"
    elif k.endswith(".beta"):
      k = k[:-len("beta")] + "bias"
    out[k] = v
  if not any(k.startswith("bert.") for k in out):
    out = {k if k.startswith("cls.") else "bert." + k: v for k, v in out.items()}
  return out


def pt_to_params(sd: dict, cfg: model_lib.BertConfig):
  """PyTorch-named state dict -> (our params as float32 numpy, missing head groups).

  Raises InputError listing every missing tensor and shape mismatch. Missing optional
  groups (see OPTIONAL_GROUPS) are initialised with our init and returned by name.
  """
  sd = _normalise_pt_names(sd)
  table = pt_table(cfg)
  missing_groups, missing, mismatched = [], [], []
  group_of = lambda name: next((g for g, (prefixes, _) in OPTIONAL_GROUPS.items()
                                if name.startswith(prefixes)), None)
  for group, (prefixes, _) in OPTIONAL_GROUPS.items():
    if not any(k.startswith(prefixes) and k in table for k in sd):
      missing_groups.append(group)
  for name, (_, shape, _) in table.items():
    if name not in sd:
      if group_of(name) not in missing_groups:
        missing.append(f"{name} {shape}")
    elif tuple(sd[name].shape) != shape:
      mismatched.append(f"{name}: checkpoint {tuple(sd[name].shape)}, expected {shape}")
  word = sd.get("bert.embeddings.word_embeddings.weight")
  dec = sd.get("cls.predictions.decoder.weight")
  if (dec is not None and word is not None and not mismatched
      and (dec.shape != word.shape
           or not np.array_equal(np.asarray(dec), np.asarray(word)))):
    mismatched.append("cls.predictions.decoder.weight: not tied to "
                      "bert.embeddings.word_embeddings.weight (untied decoders are "
                      "not supported)")
  if missing or mismatched:
    raise InputError("checkpoint does not fit the config: "
                     + "; ".join((["missing: " + ", ".join(missing)] if missing else [])
                                 + (["shape mismatch: " + ", ".join(mismatched)]
                                    if mismatched else [])))
  known = set(table) | {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                        "bert.embeddings.position_ids"}
  unused = sorted(k for k in sd if k not in known)
  if unused:
    log.warning("ignoring tensors not in BertForPreTraining: %s", ", ".join(unused))

  init = None
  if missing_groups:
    ours = [p for g in missing_groups for p in OPTIONAL_GROUPS[g][1]]
    log.warning("checkpoint has no %s; initialised with our init: %s",
                ", ".join(missing_groups), ", ".join(ours))
    m = model_lib.BertForPreTraining(_plain(cfg))
    init = nn.meta.unbox(jax.jit(m.init)(
        jax.random.key(0), np.zeros((1, 8), np.int32))["params"])
    init_hf = flax.traverse_util.flatten_dict(to_hf_params(init, cfg))
  flat = {}
  for name, (path, _, transposed) in table.items():
    if name in sd:
      x = np.asarray(sd[name], np.float32)
      flat[path] = x.T if transposed else x
    else:
      flat[path] = np.asarray(init_hf[path], np.float32)
  params = from_hf_params(flax.traverse_util.unflatten_dict(flat), cfg)
  params = jax.tree.map(lambda x: np.ascontiguousarray(x, np.dtype(cfg.param_dtype)),
                        params)
  return params, missing_groups


# --- configs ------------------------------------------------------------------------


def config_from_hf(d: dict) -> model_lib.BertConfig:
  """transformers / Google bert_config.json fields -> our BertConfig."""
  if d.get("model_type", "bert") != "bert":
    raise InputError(f"model_type {d['model_type']!r} is not bert")
  if d.get("hidden_act", "gelu") != "gelu":
    raise InputError(f"hidden_act {d['hidden_act']!r} unsupported: the model uses "
                     "exact (erf) gelu")
  if d.get("position_embedding_type", "absolute") != "absolute":
    raise InputError(f"position_embedding_type {d['position_embedding_type']!r} "
                     "unsupported: only absolute")
  need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
          "intermediate_size")
  absent = [k for k in need if k not in d]
  if absent:
    raise InputError(f"config lacks {', '.join(absent)}")
  if d["hidden_size"] % d["num_attention_heads"]:
    raise InputError(f"hidden_size {d['hidden_size']} is not divisible by "
                     f"num_attention_heads {d['num_attention_heads']}")
  return model_lib.BertConfig(
      vocab_size=d["vocab_size"], num_layers=d["num_hidden_layers"],
      hidden_size=d["hidden_size"], num_heads=d["num_attention_heads"],
      intermediate_size=d["intermediate_size"],
      max_position_embeddings=d.get("max_position_embeddings", 512),
      type_vocab_size=d.get("type_vocab_size", 2),
      hidden_dropout=d.get("hidden_dropout_prob", 0.1),
      attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
      layer_norm_eps=d.get("layer_norm_eps", 1e-12),
      initializer_range=d.get("initializer_range", 0.02))


def config_to_hf(cfg: model_lib.BertConfig) -> dict:
  return {
      "architectures": ["BertForPreTraining"], "model_type": "bert",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.intermediate_size,
      "max_position_embeddings": cfg.max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size, "hidden_act": "gelu",
      "layer_norm_eps": cfg.layer_norm_eps, "hidden_dropout_prob": cfg.hidden_dropout,
      "attention_probs_dropout_prob": cfg.attention_dropout,
      "initializer_range": cfg.initializer_range, "pad_token_id": 0,
      "position_embedding_type": "absolute", "tie_word_embeddings": True,
  }


# --- readers ------------------------------------------------------------------------


@dataclasses.dataclass
class Loaded:
  cfg: model_lib.BertConfig
  params: dict                       # our tree, numpy (or jax) arrays
  tokenizer_files: list              # paths to copy along
  missing_heads: list                # optional groups initialised with our init


def _tokenizer_files(*dirs) -> list:
  found = {}
  for d in dirs:
    for f in TOKENIZER_FILES:
      p = os.path.join(d, f)
      if f not in found and os.path.isfile(p):
        found[f] = p
  return list(found.values())


def _check_vocab(cfg: model_lib.BertConfig, files: list) -> None:
  vocab = [p for p in files if os.path.basename(p) == "vocab.txt"]
  if vocab:
    with open(vocab[0], encoding="utf-8") as f:
      n = sum(1 for _ in f)
    if n != cfg.vocab_size:
      raise InputError(f"vocab_size {cfg.vocab_size} in the config disagrees with "
                       f"{vocab[0]} ({n} lines)")


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise InputError(f"cannot read {path}: {e}") from e


def _read_safetensors(path: str) -> dict:
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  sd = {}
  try:
    # framework "flax": bf16/fp16 tensors come back as jax arrays (numpy has no bf16).
    with safe_open(path, framework="flax") as f:
      for k in f.keys():
        sd[k] = np.asarray(f.get_tensor(k).astype(np.float32))
  except Exception as e:  # safetensors' SafetensorError, or an OSError for a bad file
    raise InputError(f"{path}: not a readable safetensors file ({e})") from e
  return sd


def read_hf(path: str) -> Loaded:
  cfg = config_from_hf(_read_json(os.path.join(path, "config.json")))
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  binary = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(single):
    sd = _read_safetensors(single)
  elif os.path.isfile(index):
    shards = sorted(set(_read_json(index)["weight_map"].values()))
    sd = {}
    for s in shards:
      sd.update(_read_safetensors(os.path.join(path, s)))
  elif os.path.isfile(binary):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise InputError(f"{binary} needs torch, which is not installed; convert it to "
                       "model.safetensors first") from e
    sd = {k: v.float().numpy() for k, v in
          torch.load(binary, map_location="cpu", weights_only=True).items()}
  else:
    raise InputError(f"{path} has no model.safetensors, model.safetensors.index.json "
                     "or pytorch_model.bin")
  files = _tokenizer_files(path)
  _check_vocab(cfg, files)
  params, missing = pt_to_params(sd, cfg)
  return Loaded(cfg, params, files, missing)


_TF1_SKIP = ("adam_m", "adam_v", "global_step", "Momentum", "LAMB", "lamb_")


def tf1_to_pt(variables: dict) -> dict:
  """Google TF1 BERT variable names/layouts -> the PyTorch-named state dict."""
  sd = {}
  for name, x in variables.items():
    if any(s in name for s in _TF1_SKIP):
      continue
    parts = name.split("/")
    if parts[-1] == "output_weights":          # cls/seq_relationship: [2, H] already
      parts[-1] = "weight"
    elif parts[-1] == "output_bias":
      parts[-1] = "bias"
    elif parts[-1] == "kernel":
      parts[-1] = "weight"
      x = x.T                                  # TF [in, out] -> PyTorch [out, in]
    elif parts[-1] in ("gamma", "beta"):
      parts[-1] = {"gamma": "weight", "beta": "bias"}[parts[-1]]
    elif parts[-1].endswith("_embeddings"):
      parts.append("weight")
    parts = [p.replace("layer_", "layer.") if p.startswith("layer_") else p
             for p in parts]
    sd[".".join(parts)] = x
  return sd


def read_tf1(path: str) -> Loaded:
  # pylint: disable=g-import-not-at-top
  from bert_jax.data import tf_checkpoint  # TensorFlow only when reading one
  cfg = config_from_hf(_read_json(os.path.join(path, "bert_config.json")))
  variables = tf_checkpoint.read_variables(path, _TF1_SKIP)  # its errors first
  files = _tokenizer_files(path)
  _check_vocab(cfg, files)
  sd = tf1_to_pt(variables)
  params, missing = pt_to_params(sd, cfg)
  return Loaded(cfg, params, files, missing)


def read_orbax(path: str) -> Loaded:
  if not os.path.isfile(os.path.join(path, checkpoints.CONFIG_FILE)):
    raise InputError(f"{path} has no {checkpoints.CONFIG_FILE}: not a pretrain workdir")
  config = checkpoints.read_config(path)
  if "model" not in config:
    raise InputError(f"{path} is not a pretrain workdir or converted checkpoint (its "
                     f"{checkpoints.CONFIG_FILE} has no model section; a fine-tuning "
                     f"workdir is read by `predict`)")
  if not checkpoints.has_checkpoint(path):
    raise InputError(f"{path} has no checkpoint yet (checkpoints/ is empty)")
  m, params = checkpoints.restore_params(path, config)
  files = _tokenizer_files(os.path.join(path, "tokenizer"))
  return Loaded(_plain(m.cfg), _unscanned(params), files, [])


def detect(path: str) -> str:
  """'orbax', 'hf' or 'tf1' from a directory's files."""
  if os.path.isfile(os.path.join(path, "bert_config.json")):
    return "tf1"
  cfg_path = os.path.join(path, "config.json")
  if os.path.isfile(cfg_path):
    return "orbax" if "model" in _read_json(cfg_path) else "hf"
  raise InputError(f"{path}: neither a workdir/Orbax dir (config.json with a model "
                   "section), an HF dir (config.json) nor a TF1 dir (bert_config.json)")


def load(path: str, fmt: str | None = None) -> Loaded:
  if not os.path.isdir(path):
    raise InputError(f"{path} is not a directory")
  fmt = fmt or detect(path)
  readers = {"hf": read_hf, "tf1": read_tf1, "orbax": read_orbax}
  if fmt not in readers:
    raise InputError(f"unknown source format {fmt!r}; choose one of {FORMATS_FROM}")
  return readers[fmt](path)


# --- writers ------------------------------------------------------------------------


def _atomic_dir(dst: str, write) -> None:
  """Runs write(tmp) in a fresh sibling of dst, then renames it to dst."""
  dst = os.path.abspath(dst)
  outputs.check_new_dir(dst)
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix="." + os.path.basename(dst) + ".tmp-", dir=parent)
  try:
    write(tmp)
    outputs.with_umask(tmp)  # mkdtemp made it 0700
    if os.path.exists(dst):
      os.rmdir(dst)
    os.rename(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def save_orbax(loaded: Loaded, dst: str, source: str = "") -> None:
  """DST/config.json + DST/checkpoints/0/params (+ DST/tokenizer/)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def write(tmp):
    config = ml_collections.ConfigDict({
        "model": dataclasses.asdict(loaded.cfg),
        "converted_from": source,
        "initialised_heads": list(loaded.missing_heads)})
    checkpoints.write_config(tmp, config)
    params = jax.tree.map(np.asarray, loaded.params)
    mngr = checkpoints.manager(tmp, async_save=False)
    mngr.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
    mngr.wait_until_finished()
    mngr.close()
    if loaded.tokenizer_files:
      os.makedirs(os.path.join(tmp, "tokenizer"))
      for f in loaded.tokenizer_files:
        shutil.copy(f, os.path.join(tmp, "tokenizer", os.path.basename(f)))

  _atomic_dir(dst, write)


def save_hf(loaded: Loaded, dst: str) -> None:
  """DST/config.json + DST/model.safetensors (PyTorch layout) + tokenizer files."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  sd = params_to_pt(loaded.params, loaded.cfg)
  # safetensors refuses shared memory: the tied decoder gets its own copy.
  sd = {k: np.array(v, copy=True) for k, v in sd.items()}

  def write(tmp):
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
      json.dump(config_to_hf(loaded.cfg), f, indent=2)
    save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    for f in loaded.tokenizer_files:
      shutil.copy(f, os.path.join(tmp, os.path.basename(f)))

  _atomic_dir(dst, write)


def convert(src: str, src_format: str, dst: str, dst_format: str) -> Loaded:
  """`bert-jax convert --from SRC_FORMAT SRC --to DST_FORMAT DST`."""
  if src_format not in FORMATS_FROM:
    raise InputError(f"--from {src_format!r}: choose one of {', '.join(FORMATS_FROM)}")
  if dst_format not in FORMATS_TO:
    raise InputError(f"--to {dst_format!r}: choose one of {', '.join(FORMATS_TO)}")
  outputs.check_new_dir(dst)  # before the (long) read
  loaded = load(src, src_format)
  if dst_format == "orbax":
    save_orbax(loaded, dst, source=f"{src_format}:{os.path.abspath(src)}")
  else:
    save_hf(loaded, dst)
  log.info("converted %s (%s) -> %s (%s)%s", src, src_format, dst, dst_format,
           f"; initialised {', '.join(loaded.missing_heads)}"
           if loaded.missing_heads else "")
  return loaded

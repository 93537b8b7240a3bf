"""The demo: its picture (held-out accuracy against training time, with the references),
its workdir, its dtype and how it names the model."""

from bert_jax.configs import pretrain
from bert_jax.tools import demo


def test_plot_writes_a_png_with_the_references(tmp_path):
  logged = [{"step": 0, "ref_unigram_mlm_accuracy": 0.04, "ref_neighbours_mlm_accuracy": 0.2},
            {"step": 5, "loss": 8.0, "eval_mlm_accuracy": 0.1, "train_seconds": 30.0},
            {"step": 10, "loss": 7.0, "eval_mlm_accuracy": 0.25, "train_seconds": 90.0}]
  path = demo.plot(logged, str(tmp_path / "acc.png"))
  assert path == str(tmp_path / "acc.png")
  assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert demo.plot(logged[:1], str(tmp_path / "none.png")) is None  # no evaluations


def test_a_workdir_of_another_demo_version_is_moved_aside(tmp_path):
  from bert_jax.runtime import checkpoints  # pylint: disable=g-import-not-at-top
  old = demo.default_config()
  old.data.mask_prob = 0.3  # what another version's recipe might have used
  work = tmp_path / "demo_workdir"
  checkpoints.write_config(str(work), old)
  (work / "checkpoints" / "100").mkdir(parents=True)
  demo._fresh_if_other_version(demo.default_config(), str(work))  # pylint: disable=protected-access
  assert not work.exists()
  assert (tmp_path / "demo_workdir.previous" / "checkpoints" / "100").is_dir()
  # This version's own workdir is resumed, not moved.
  checkpoints.write_config(str(work), demo.default_config())
  (work / "checkpoints" / "100").mkdir(parents=True)
  demo._fresh_if_other_version(demo.default_config(), str(work))  # pylint: disable=protected-access
  assert (work / "checkpoints" / "100").is_dir()


def test_the_demo_computes_in_bfloat16_only_where_it_is_fast(tmp_path, monkeypatch):
  cpuinfo = tmp_path / "cpuinfo"
  monkeypatch.setattr(demo, "CPUINFO", str(cpuinfo))
  cpuinfo.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 sha_ni\n")
  assert demo.fast_bfloat16() and demo.default_config().model.dtype == "bfloat16"
  cpuinfo.write_text("processor : 0\nflags : fpu avx2 avx512f sha_ni\n")
  assert not demo.fast_bfloat16() and demo.default_config().model.dtype == "float32"
  cpuinfo.unlink()  # not Linux
  assert not demo.fast_bfloat16()
  assert demo.default_config().model.position_init == "sinusoidal"


def test_the_model_is_named_by_its_shape_not_its_preset_label():
  model = pretrain.get_config("demo").model
  assert pretrain.describe(model) == "tiny"
  model.update(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=1024)
  assert model.size == "tiny" and pretrain.describe(model) == "mini"
  model.intermediate_size = 512
  assert pretrain.describe(model) == "L4/H256/A4"

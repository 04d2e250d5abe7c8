"""QLoRA (Dettmers et al. 2023, arXiv 2305.14314; ``model.lora.quantize``): NF4's 16
values are the paper's normal quantiles; quantize / dequantize equal a numpy oracle
written from the paper (nearest code, blocks of 64, absmax scales minus their mean in
8-bit floats in blocks of 256); a QLoRA model computes the LoRA model over the
dequantized base, trains only its adapters with its stored base bytes unchanged, resumes
exactly and merges into a float model with the same logits; ``phijax.plan`` shows the
base's bytes per parameter; bad settings are one line.

Oracles: scipy's normal quantiles, numpy (with ml_dtypes' float8), the float model."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from ml_collections import ConfigDict

from phijax import config_files
from phijax.model import init_params, lora, params_io, quant, sharding
from phijax.model.config import ModelConfig
from phijax.train import optim, setup
from phijax.train.step import build, device_batch, random_batch
from tests.test_freeze import _flat, resumed_step_is_exact
from tests.test_lora import PHI, _logits, _opt, two_step_config

QLORA = PHI.replace(lora=dict(rank=4, alpha=8.0, targets=".", quantize="nf4"))


def test_nf4_is_the_papers_normal_quantiles():
  """bitsandbytes' create_normal_map: 8 positive quantiles of N(0, 1) from
  offset = 0.9677083 to 0.5, 7 negative ones, and an exact zero, over the largest."""
  norm = pytest.importorskip("scipy.stats").norm
  offset = 0.9677083
  pos = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
  neg = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
  values = np.sort(np.concatenate([pos, [0.0], neg]))
  np.testing.assert_allclose(quant.NF4, values / values.max(), atol=1e-6, rtol=0)
  assert quant.NF4[7] == 0.0 and quant.NF4[0] == -1.0 and quant.NF4[-1] == 1.0


def _oracle(w, kind):
  """Quantize then dequantize ``w`` as the paper describes, in numpy."""
  blocks = w.astype(np.float64).reshape(-1, 64)
  absmax = np.abs(blocks).max(axis=1)
  unit = blocks / np.where(absmax > 0, absmax, 1)[:, None]
  if kind == "nf4":
    idx = np.abs(unit[..., None] - quant.NF4.astype(np.float64)).argmin(-1).reshape(-1)
    codes = ((idx[0::2] << 4) | idx[1::2]).astype(np.uint8)
    values = quant.NF4[idx]
  else:
    codes = np.round(unit * 127).astype(np.int8).reshape(-1)
    values = codes / 127
  absmax = absmax.astype(np.float32)
  offset = absmax.mean(dtype=np.float32)
  centred = np.zeros(-(-len(absmax) // 256) * 256, np.float32)
  centred[:len(absmax)] = absmax - offset
  centred = centred.reshape(-1, 256)
  scale = np.abs(centred).max(axis=1)
  scale = np.where(scale > 0, scale, 1).astype(np.float32)
  fp8 = (centred / scale[:, None] * np.float32(448)).astype(ml_dtypes.float8_e4m3fn)
  absmax_back = (fp8.astype(np.float32) / 448 * scale[:, None]).reshape(-1) + offset
  out = values.reshape(-1, 64).astype(np.float32) * absmax_back[:len(absmax), None]
  return codes, fp8.view(np.uint8).reshape(-1), out.reshape(w.shape)


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_round_trip_equals_the_numpy_oracle(kind):
  rng = np.random.default_rng(0)
  w = (0.02 * rng.standard_normal((48, 40)) * rng.uniform(0.2, 3, (48, 1))).astype(np.float32)
  w[:2] = 0.0  # 80 zeros: one whole block of 64 (absmax 0) and part of the next
  q = quant.quantize(w, kind)
  codes, absmax, back = _oracle(w, kind)
  np.testing.assert_array_equal(np.asarray(q["codes"]).reshape(-1), codes)
  np.testing.assert_array_equal(np.asarray(q["absmax"]), absmax)  # 30 blocks, 256 padded
  got = np.asarray(quant.dequantize(q, kind))
  assert got.shape == w.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, back, rtol=1e-6, atol=1e-9)
  assert not got[:1].any()
  err = np.linalg.norm(got - w) / np.linalg.norm(w)
  assert err < (0.11 if kind == "nf4" else 0.02), err  # int8: the 8-bit scales dominate


def test_qlora_trains_adapters_over_the_unchanged_quantized_base(tmp_path):
  """Warm start: a float model's matrices quantized (``quantize_like``) give a model
  equal (to float rounding) to the float model holding the dequantized base; training
  moves only the adapters; resume is exact; the merged float model computes the
  trained QLoRA model."""
  float_params = init_params(PHI, jax.random.key(1))
  params_io.save_params(str(tmp_path / "base"), PHI, float_params)
  abstract = jax.eval_shape(lambda: init_params(QLORA, jax.random.key(0)))
  q_params = setup._warm_start_params(str(tmp_path / "base"), abstract, str(tmp_path))
  # As the warm start does: fresh adapters (A random, B zero) over the loaded base.
  q_params = lora.with_adapters_from(q_params, init_params(QLORA, jax.random.key(0)))
  report = json.loads((tmp_path / "quantization.json").read_text())
  assert report["matrices"] == 12 and 0.05 < report["relative_rms_error"] < 0.11
  # Equal to float rounding: the compiled step fuses the dequantization (1e-7 here).
  np.testing.assert_allclose(_logits(QLORA, q_params),
                             _logits(PHI, lora.merge(QLORA, q_params)[1]), atol=1e-6, rtol=0)
  assert quant.parameter_count(q_params) - lora.count(q_params) == quant.parameter_count(
      float_params)

  opt = _opt("adamw")
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  fns = build(QLORA, optim.make_direction(opt, adapters_only=True), mesh,
              sharding.DEFAULT_RULES, trainable=optim.trainable(opt, adapters_only=True))
  state = fns.init(jax.random.key(0))
  state = state.replace(params=jax.device_put(q_params, fns.state_shardings.params),
                        opt_state=fns.tx.init(q_params))
  before = _flat(jax.device_get(state.params))
  batch = device_batch(random_batch(4, 16, 64), fns.batch_sharding)
  for _ in range(2):
    state, _ = fns.train_step(state, batch, jnp.float32(1e-2))
  after = _flat(jax.device_get(state.params))
  for k in before:
    assert np.array_equal(after[k], before[k]) != ("/lora/" in k), k
  adapter_bytes = sum(v.nbytes for k, v in before.items() if "/lora/" in k)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state.opt_state))
  assert opt_bytes == 2 * adapter_bytes + 4  # Adam's moments of the adapters alone
  ma, mb = resumed_step_is_exact(fns, state, batch, tmp_path / "ckpt")
  assert float(ma["loss"]) == float(mb["loss"])
  trained = jax.device_get(state.params)
  merged_cfg, merged = lora.merge(QLORA, trained)
  assert merged_cfg.lora.rank == 0
  np.testing.assert_allclose(_logits(merged_cfg, merged), _logits(QLORA, trained),
                             atol=1e-5, rtol=0)


def test_plan_shows_the_base_bytes_per_parameter():
  from phijax import plan
  config = config_files.load("tiny", ["--config.model.lora.rank=8",
                                      "--config.model.lora.quantize=nf4"])
  out = plan.plan(config, {"data": 1, "fsdp": 1, "tensor": 1}, activations=False)
  q = out["quantized"]
  # 4 bits, + 8 bits per 64 values, + 32 bits per 64 x 256: QLoRA's 4.127 bits; here
  # a little more, the second level padded to whole blocks of 256 scales, + an offset.
  sizes = [n for n in (int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(
      init_params_shapes(config))) if n]
  scale_blocks = [-(-n // 64 // 256) for n in sizes]
  assert q["parameters"] == sum(sizes)
  assert q["global_bytes"] == sum(n // 2 + 256 * b + 4 * b + 4
                                  for n, b in zip(sizes, scale_blocks))
  assert q["global_bytes"] / q["parameters"] == pytest.approx(4.127 / 8, rel=0.01)
  assert f"{q['global_bytes'] / q['parameters']:.3f} bytes each" in plan.report(out)


def init_params_shapes(config):
  """The float block matrices of ``config``'s model (kernels under ``layers_*``)."""
  cfg = ModelConfig.from_dict(config.model)
  shapes = jax.eval_shape(lambda: init_params(cfg.replace(lora={}), jax.random.key(0)))
  return [x for p, x in jax.tree_util.tree_flatten_with_path(shapes)[0]
          if sharding.path_names(p)[-1] == "kernel" and "layers_" in sharding.path_names(p)[0]]


def test_bad_settings_are_one_line_naming_the_field():
  for settings, match in [(dict(quantize="nf4"), "needs adapters"),
                          (dict(rank=4, quantize="fp4"), "choose 'nf4', 'int8'")]:
    with pytest.raises(ValueError, match=f"model config: lora.quantize.*{match}") as e:
      PHI.replace(lora=settings)
    assert "\n" not in str(e.value)
  odd = ModelConfig(arch="phi", vocab_size=64, hidden_size=36, num_layers=1, num_heads=3,
                    intermediate_size=40, lora=dict(rank=2, quantize="nf4"))
  with pytest.raises(ValueError, match="not a multiple of the 64-value blocks") as e:
    init_params(odd, jax.random.key(0))
  assert "\n" not in str(e.value)


def test_a_qlora_run_exports_its_adapters_alone_and_reads_back_exactly(tmp_path):
  """A QLoRA run warm-started from a float base: ``--adapters_only`` writes the
  adapters (a fraction of the model's bytes) and the base's path and hash; reading the
  directory re-quantizes the base and gives the run's parameters bit for bit; a changed
  base is refused in one line."""
  from phijax.convert import adapters, weights
  from phijax.train import loop

  config = two_step_config()
  pre_cfg = ModelConfig.from_dict(config.model)
  params_io.save_params(str(tmp_path / "pre"), pre_cfg, init_params(pre_cfg, jax.random.key(7)))
  config.model.lora.update(rank=2, targets="attn", quantize="nf4")
  config.train.init_from = str(tmp_path / "pre")
  loop.train(config, str(tmp_path / "run"))
  report = json.loads((tmp_path / "run" / "quantization.json").read_text())
  assert report["matrices"] == 6 * pre_cfg.num_layers and report["relative_rms_error"] < 0.11
  cfg, trained, _ = weights.load_run_params(str(tmp_path / "run"))

  summary = adapters.export(str(tmp_path / "run"), str(tmp_path / "ad"))
  assert summary["num_params"] == lora.count(trained)
  stored = _flat(params_io.load_params(str(tmp_path / "ad"))[1])
  assert stored and all("/lora/" in k for k in stored)
  read_cfg, read = weights.read_params(str(tmp_path / "ad"))
  assert read_cfg == cfg
  flat, want = _flat(read), _flat(trained)
  assert sorted(flat) == sorted(want)
  for k in want:
    assert flat[k].tobytes() == want[k].tobytes(), k

  assert (tmp_path / "ad" / "tokenizer.model").exists()  # for --params_dir readers
  # The base changes after training (a run that went on): the adapters' record is the
  # warm start's, so neither the first export nor a new one accepts the changed base.
  params_io.save_params(str(tmp_path / "pre"), pre_cfg, init_params(pre_cfg, jax.random.key(8)))
  adapters.export(str(tmp_path / "run"), str(tmp_path / "ad2"))
  for d in ("ad", "ad2"):
    with pytest.raises(ValueError, match="not the one .* were trained over") as e:
      weights.read_params(str(tmp_path / d))
    assert "\n" not in str(e.value)

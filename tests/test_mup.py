"""muP (``model.mup``, MiniCPM's parametrisation): the coordinate check, the forward
pass against the scalings applied by hand, the optimizer's 1/width_mult, bad settings,
and that with mup off the compiled model is the standard one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from ml_collections import ConfigDict

from phijax import convert, model, mup_check
from phijax.train import optim
from phijax.model import rope
from phijax.model.config import ModelConfig

SMALL = {
    "phi": ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=64, partial_rotary_factor=0.5),
    "phi3": ModelConfig(arch="phi3", vocab_size=64, hidden_size=32, num_layers=2,
                        num_heads=4, num_kv_heads=2, intermediate_size=64),
}
# width_mult = 32 / 8 = 4: every scaling is far from 1.
MUP = dict(mup=True, mup_scale_emb=12.0, mup_scale_depth=1.4, mup_dim_model_base=8)


def _run(fn, *args):
  """``jax.jit(fn)(*args)``, compiled as ``phijax.mup_check`` does: tiny programs
  compile in about half the time."""
  return mup_check.compile_fast(fn, *args)(*args)


def _params(cfg, seed=0):
  """Random parameters of ``cfg``'s shapes (norm scales near 1): nothing to compile,
  unlike ``model.init_params``."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.asarray(
          (1.0 if optim.path_string(path).endswith("norm/scale") else 0.0)
          + 0.05 * rng.standard_normal(x.shape), jnp.float32),
      nn.unbox(model.abstract_params(cfg)))


# ------------------------------------------------------------------ coordinate check

# Of mup_check's four widths, both ends and width_mult = 1 (256): 15 s instead of 21.
WIDTHS = (64, 256, 512)


def test_coordinate_check_is_flat_under_mup_and_drifts_without():
  coords = mup_check.coordinate_check(mup_check.Setup(), WIDTHS)
  print(mup_check.table(coords, mup_check.Setup(), WIDTHS))
  blocks = [f"layers_{i}" for i in range(mup_check.Setup().num_layers)]
  spread = lambda mup, when, name: mup_check.spread(coords, mup, when, name, WIDTHS)
  for name in blocks:
    # At init: fan-in scaled hidden matrices keep the block outputs flat in width; the
    # standard ones grow like sqrt(width) (measured: 1.00-1.05 against 6-9; with
    # init_std unscaled, muP's are 1.22 and 1.42: the embedding dominates the stream).
    assert spread(True, "init", name) < 1.1
    assert spread(False, "init", name) > 3
  # After 3 AdamW steps at one lr (phi3, seeds 0-3): muP's block outputs spread
  # 1.1-2.6 (higher at the small widths: 64 is not yet the infinite-width regime), the
  # standard ones 120-430; muP's logits 1.2-1.6, the standard ones 3.3-5.4.
  for name in blocks:
    assert spread(True, "trained", name) < 3
    assert spread(False, "trained", name) > 30
  mup, standard = spread(True, "trained", "logits"), spread(False, "trained", "logits")
  assert mup < 2
  assert standard > 1.8 * mup, (standard, mup)


# ------------------------------------------------------------------ forward pass

def _norm(cfg, p, x):
  """LayerNorm (phi) or RMSNorm (phi3) in plain jnp."""
  if cfg.arch == "phi":
    mean = x.mean(-1, keepdims=True)
    y = (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + cfg.layer_norm_eps)
    return y * p["scale"] + p["bias"]
  return p["scale"] * x / jnp.sqrt((x ** 2).mean(-1, keepdims=True) + cfg.layer_norm_eps)


def _mup_by_hand(cfg, params, tokens):
  """MiniCPM's scalings around the standard model's attention and MLP modules."""
  standard = cfg.replace(mup=False)
  T = tokens.shape[1]
  cos, sin = rope.cos_sin(standard, jnp.arange(T)[None], None)
  s = cfg.mup_scale_depth / np.sqrt(cfg.num_layers)
  x = params["embed"][tokens] * cfg.mup_scale_emb
  for i in range(cfg.num_layers):
    p = params[f"layers_{i}"]
    attn = lambda h: model.Attention(standard).apply({"params": p["attn"]}, h, cos, sin,
                                                     None, True)
    mlp = lambda h: model.Mlp(standard).apply({"params": p["mlp"]}, h)
    h = _norm(cfg, p["input_norm"], x)
    if cfg.arch == "phi":
      x = x + s * attn(h) + s * mlp(h)
    else:
      x = x + s * attn(h)
      x = x + s * mlp(_norm(cfg, p["post_attention_norm"], x))
  x = _norm(cfg, params["final_norm"], x) / (cfg.hidden_size / cfg.mup_dim_model_base)
  logits = x @ params["lm_head"]
  return logits + params["lm_head_bias"] if cfg.arch == "phi" else logits


@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_mup_logits_equal_the_scalings_applied_by_hand(arch):
  cfg = SMALL[arch].replace(**MUP)
  params = _params(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 7)), jnp.int32)
  # Every scaling at 1 is the standard model.
  ones = cfg.replace(mup_scale_emb=1.0, mup_scale_depth=float(np.sqrt(cfg.num_layers)),
                     mup_dim_model_base=cfg.hidden_size)

  def logits(params, tokens):  # one program compiles faster than four
    apply = lambda c: model.Transformer(c).apply({"params": params}, tokens)
    return apply(cfg), _mup_by_hand(cfg, params, tokens), apply(SMALL[arch]), apply(ones)
  got, by_hand, plain, with_ones = _run(logits, params, tokens)
  np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(got) - np.asarray(plain)).max() > 0.1
  np.testing.assert_allclose(with_ones, plain, rtol=1e-5, atol=1e-6)


def test_mup_init_scales_block_matrices_only():
  cfg = SMALL["phi3"].replace(**MUP)
  standard, mup = _run(lambda key: [model.init_params(c, key) for c in (SMALL["phi3"], cfg)],
                       jax.random.key(0))
  flat = lambda t: {optim.path_string(p): np.asarray(v)
                    for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  blocks = flat(optim.block_matrix_mask(mup))
  assert sum(blocks.values()) == 2 * 7  # q/k/v/o, gate/up/down in each of 2 layers
  for path, value in flat(mup).items():
    factor = 0.5 if blocks[path] else 1.0  # 1 / sqrt(width_mult = 4)
    np.testing.assert_allclose(value, factor * flat(standard)[path], rtol=1e-6,
                               err_msg=path)


# ------------------------------------------------------------------ optimizer

def _optim(name, **kw):
  return ConfigDict(dict(name=name, lr=1.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                         clip=1.0, muon_beta=0.95, muon_rms=0.2, mu_dtype="", freeze="",
                         **kw))


def _first_directions(cfg_optim, params, *width_mults):
  """The first update direction for random gradients at each width_mult."""
  txs = [optim.make_direction(cfg_optim, width_mult=w) for w in width_mults]
  rng = np.random.default_rng(0)
  grads = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
  return _run(lambda g, p: [tx.update(g, tx.init(p), p)[0] for tx in txs], grads, params)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_mup_scales_block_matrix_updates_by_one_over_width_mult(name):
  cfg = SMALL["phi"].replace(**MUP)
  params = _params(cfg)
  base, scaled = _first_directions(_optim(name), params, 1.0, cfg.width_mult)
  blocks = optim.block_matrix_mask(params)
  checked = {True: 0, False: 0}

  def check(path, is_block, b, s):
    factor = 1 / cfg.width_mult if is_block else 1.0
    np.testing.assert_allclose(s, factor * b, rtol=1e-6, atol=1e-9,
                               err_msg=optim.path_string(path))
    assert np.abs(b).max() > 0
    checked[is_block] += 1
  jax.tree_util.tree_map_with_path(check, blocks, base, scaled)
  assert checked[True] == 2 * 6 and checked[False] > 0  # phi: q/k/v/o, fc1/fc2


def test_width_mult_one_is_the_unchanged_optimizer():
  params = _params(SMALL["phi"])
  assert SMALL["phi"].width_mult == 1.0  # what train/loop.py passes with mup off

  def program(name, **kw):
    tx = optim.make_direction(_optim(name), **kw)
    return jax.jit(lambda g, p: tx.update(g, tx.init(p), p)).lower(params, params).as_text()
  for name in ("adamw", "muon"):
    assert program(name) == program(name, width_mult=1.0)
    assert program(name) != program(name, width_mult=4.0)


def test_mup_with_freeze_scales_the_trained_block_matrices():
  cfg = SMALL["phi3"].replace(**MUP)
  params = _params(cfg)
  opt = _optim("adamw")
  opt.freeze = "layers_0/.*"
  base, scaled = _first_directions(opt, params, 1.0, cfg.width_mult)
  kernel = lambda t, layer: np.asarray(t[layer]["mlp"]["down_proj"]["kernel"])
  np.testing.assert_allclose(kernel(scaled, "layers_1"), kernel(base, "layers_1") / 4,
                             rtol=1e-6)
  np.testing.assert_allclose(scaled["embed"], base["embed"], rtol=1e-6)
  assert not np.any(kernel(scaled, "layers_0"))


# ------------------------------------------------------------------ errors

def test_bad_settings_are_errors_naming_the_field(tmp_path):
  for field, value in [("mup_scale_emb", 0.0), ("mup_scale_depth", -1.4),
                       ("mup_dim_model_base", 0), ("mup_scale_emb", float("nan"))]:
    with pytest.raises(ValueError, match=f"model config: {field}: must be positive"):
      SMALL["phi"].replace(**{field: value})
  cfg = SMALL["phi"].replace(**MUP)
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="mup=True .* Hugging Face Phi has no settings"):
    convert.to_hf(cfg, _params(cfg), str(tmp_path / "hf"))
  assert not (tmp_path / "hf").exists()
  with pytest.raises(ValueError, match="optim.name='sgd' with model.mup"):
    optim.make_direction(_optim("sgd"), width_mult=cfg.width_mult)
  with pytest.raises(ValueError, match="width_mult must be positive"):
    optim.make_direction(_optim("adamw"), width_mult=0.0)


# ------------------------------------------------------------------ mup off

def _lowered(cfg):
  params = _params(SMALL[cfg.arch])
  tokens = jnp.zeros((1, 8), jnp.int32)
  return jax.jit(model.Transformer(cfg).apply).lower({"params": params}, tokens).as_text()


@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_mup_off_compiles_the_standard_model(arch):
  cfg = SMALL[arch]
  without_mup_keys = {k: v for k, v in cfg.to_dict().items() if not k.startswith("mup")}
  off = _lowered(cfg)
  assert off == _lowered(ModelConfig.from_dict(without_mup_keys))
  # With mup off its knobs reach nothing.
  assert off == _lowered(cfg.replace(mup_scale_emb=12.345, mup_scale_depth=1.2345,
                                     mup_dim_model_base=7))
  # mup on adds exactly its own ops: scale_emb, 2 residual branches per layer, and the
  # division before lm_head; so the off program has no multiply by 1 of them either.
  on = _lowered(cfg.replace(**MUP))
  count = lambda text, op: text.count(f"stablehlo.{op}")
  assert count(on, "multiply") - count(off, "multiply") == 1 + 2 * cfg.num_layers
  assert count(on, "divide") - count(off, "divide") == 1

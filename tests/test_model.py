"""Model properties that need no Hugging Face: causality, packing, sizes, errors."""

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phijax import model
from phijax.model import Transformer
from phijax.model.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = {
    "phi": ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=64, partial_rotary_factor=0.5, qk_layernorm=True),
    "phi3": ModelConfig(arch="phi3", vocab_size=64, hidden_size=32, num_layers=2,
                        num_heads=4, num_kv_heads=2, intermediate_size=64,
                        sliding_window=6),
}


def _logits(cfg, params, tokens, positions=None, segment_ids=None):
  # One compiled forward, not an eager compile per op: the same numbers, far faster.
  fwd = jax.jit(lambda p, *a: Transformer(cfg).apply({"params": p}, *a))
  return np.asarray(fwd(params, jnp.asarray(tokens), positions, segment_ids))


@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_causal(arch):
  cfg = SMALL[arch]
  params = model.init_params(cfg, jax.random.key(1))
  tokens = np.random.default_rng(0).integers(0, 64, (1, 12)).astype(np.int32)
  base = _logits(cfg, params, tokens)
  for t in (0, 5, 11):
    changed = tokens.copy()
    changed[0, t] = (changed[0, t] + 7) % 64
    out = _logits(cfg, params, changed)
    np.testing.assert_array_equal(out[:, :t], base[:, :t])
    assert np.abs(out[:, t:] - base[:, t:]).max() > 1e-4  # the change is seen from t on


@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_packed_documents_equal_documents_alone(arch):
  cfg = SMALL[arch]
  params = model.init_params(cfg, jax.random.key(2))
  rng = np.random.default_rng(1)
  lengths = [5, 9, 2]
  docs = [rng.integers(0, 64, (n,)).astype(np.int32) for n in lengths]
  tokens = np.concatenate(docs)[None]
  segment_ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[None]
  positions = np.concatenate([np.arange(n) for n in lengths])[None]
  packed = _logits(cfg, params, tokens, positions.astype(np.int32),
                   segment_ids.astype(np.int32))
  start = 0
  for doc in docs:
    alone = _logits(cfg, params, doc[None])
    np.testing.assert_allclose(packed[0, start:start + len(doc)], alone[0], atol=2e-5)
    start += len(doc)


def _named_config(name):
  return importlib.import_module(f"phijax.configs.{name}").get_config()


@pytest.mark.parametrize("name,expected", [
    ("phi1", 1_418_270_720), ("phi1_5", 1_418_270_720), ("phi2", 2_779_683_840),
    ("phi3_mini", 3_821_079_552), ("phi4", 14_659_507_200)])
def test_named_config_parameter_counts(name, expected):
  cfg = ModelConfig.from_dict(_named_config(name).model)
  assert model.count_params(cfg) == expected  # eval_shape: nothing is allocated


def test_every_parameter_has_logical_axes():
  for cfg in SMALL.values():
    boxed = model.abstract_params(cfg)
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: hasattr(x, "names"))
    assert leaves and all(len(x.names) == x.value.ndim for x in leaves)


@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_bf16_compute_is_close_to_f32(arch):
  cfg = SMALL[arch]
  params = model.init_params(cfg, jax.random.key(3))
  tokens = np.arange(16, dtype=np.int32)[None] % 64
  f32 = _logits(cfg, params, tokens)
  bf16 = _logits(cfg.replace(dtype="bfloat16"), params, tokens)
  assert bf16.dtype == np.float32
  np.testing.assert_allclose(bf16, f32, atol=5e-2)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_same_gradients(remat):
  cfg = SMALL["phi3"]
  params = model.init_params(cfg, jax.random.key(4))
  tokens = jnp.arange(10, dtype=jnp.int32)[None] % 64

  def loss(p, c):
    return jnp.mean(Transformer(c).apply({"params": p}, tokens) ** 2)

  g0 = jax.grad(loss)(params, cfg)
  g1 = jax.grad(loss)(params, cfg.replace(remat=remat))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_dropout_is_active_only_in_training():
  cfg = SMALL["phi"].replace(resid_pdrop=0.5, attention_dropout=0.3, embd_pdrop=0.2,
                             resid_pdrop_schedule="linear")
  params = model.init_params(cfg, jax.random.key(5))
  tokens = jnp.arange(8, dtype=jnp.int32)[None]
  m = Transformer(cfg)
  a = m.apply({"params": params}, tokens)
  b = m.apply({"params": params}, tokens)
  np.testing.assert_array_equal(a, b)
  c = m.apply({"params": params}, tokens, deterministic=False,
              rngs={"dropout": jax.random.key(0)})
  assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-3
  assert model.residual_dropout_rates(cfg) == [0.0, 0.5]


@pytest.mark.parametrize("kw,field", [
    (dict(arch="gpt2"), "arch"),
    (dict(hidden_size=30, num_heads=4), "num_heads"),
    (dict(num_heads=4, num_kv_heads=3, hidden_size=32), "num_kv_heads"),
    (dict(hidden_size=32, num_heads=4, partial_rotary_factor=0.375), "partial_rotary_factor"),
    (dict(dtype="float8"), "dtype"),
])
def test_bad_config_names_the_field(kw, field):
  with pytest.raises(ValueError, match=f"model config: {field}"):
    ModelConfig(**kw)


def test_unknown_model_field_is_named():
  with pytest.raises(ValueError, match="n_layers"):
    ModelConfig.from_dict({"n_layers": 3})

"""Optimizer directions: which parameters Muon takes, and that its updates are
orthogonalised at AdamW's RMS while the rest get Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from phijax import config as base
from phijax.train import optim
from phijax.model import sharding, init_params
from phijax.model.config import ModelConfig


def _tiny_params(arch):
  c = base.default()
  c.model.update(arch=arch, vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                 intermediate_size=96)
  if arch == "phi3":
    c.model.num_kv_heads = 2
  return init_params(ModelConfig.from_dict(c.model), jax.random.key(0))


def test_muon_takes_block_kernels_and_leaves_the_rest_to_adam():
  for arch in ("phi", "phi3"):
    params = _tiny_params(arch)
    dims = optim.muon_dimension_numbers(params)
    flat = {"/".join(sharding.path_names(p)): d for p, d in jax.tree_util.tree_flatten_with_path(
        dims, is_leaf=lambda x: x is None or isinstance(x, optax.contrib.MuonDimensionNumbers))[0]}
    muon = sorted(k for k, d in flat.items() if d is not None)
    assert muon and all(k.startswith("layers_") and k.endswith("/kernel") for k in muon)
    assert flat["embed"] is None and flat["lm_head"] is None
    assert flat["layers_0/attn/o_proj/kernel"].output_axis == 2
    n_kernels = sum(1 for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
                    if sharding.path_names(p)[-1] == "kernel")
    assert len(muon) == n_kernels


def test_muon_direction_is_orthogonal_at_adamw_rms_and_adam_elsewhere():
  params = _tiny_params("phi")
  cfg = ConfigDict(dict(name="muon", lr=1.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0,
                        clip=0.0, muon_beta=0.95, muon_rms=0.2))
  tx = optim.make_direction(cfg)
  rng = np.random.default_rng(0)
  grads = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
  direction, _ = tx.update(grads, tx.init(params), params)
  q = np.asarray(direction["layers_0"]["attn"]["q_proj"]["kernel"]).reshape(32, -1)
  sv = np.linalg.svd(q, compute_uv=False)
  # Newton-Schulz (quintic, 5 steps) pushes singular values near 1, not exactly.
  assert sv.max() / sv.min() < 2.0, sv
  assert abs(np.sqrt(np.mean(q ** 2)) - 0.2) < 0.06
  # The update opposes the gradient.
  assert np.sum(q * np.asarray(grads["layers_0"]["attn"]["q_proj"]["kernel"]).reshape(32, -1)) < 0
  # Adam's first step is -g / (|g| + eps) ~ -sign(g) on the embedding (Nesterov scales it).
  e = np.asarray(direction["embed"])
  np.testing.assert_array_equal(np.sign(e), -np.sign(np.asarray(grads["embed"])))
  assert np.allclose(np.abs(e), np.abs(e).flat[0], rtol=1e-4)


def test_block_scale_scales_the_block_matrices_update_not_the_rest_nor_the_decay():
  """adamw at block_scale=s: GaLore's per-group learning rates without its projection
  (the block matrices' Adam update times s, weight decay at the full lr, the rest as
  adamw)."""
  params = _tiny_params("phi")
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # decay: nonzero weights
  cfg = ConfigDict(base.default().optim.to_dict())
  cfg.update(name="adamw", weight_decay=0.1, clip=0.0)
  rng = np.random.default_rng(0)
  grads = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)

  def direction(scale, decay):
    c = ConfigDict(cfg.to_dict())
    c.update(block_scale=scale, weight_decay=decay)
    tx = optim.make_direction(c)
    return tx.update(grads, tx.init(params), params)[0]

  plain, scaled = direction(1.0, 0.1), direction(0.25, 0.1)
  adam, decay_only = direction(1.0, 0.0), jax.tree_util.tree_map(
      lambda p: -0.1 * p * (p.ndim >= 2), params)
  block = jax.tree_util.tree_leaves(optim.block_matrix_mask(params))
  assert any(block) and not all(block)
  for b, p, s, a, d in zip(block, *(jax.tree_util.tree_leaves(t) for t in (
      plain, scaled, adam, decay_only))):
    if b:  # 0.25 x Adam's update, then the decay at full strength
      np.testing.assert_allclose(s, 0.25 * a + d, rtol=1e-5, atol=1e-7)
    else:
      np.testing.assert_array_equal(s, p)

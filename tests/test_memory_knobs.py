"""Memory knobs: ``optim.mu_dtype`` keeps first moments in bfloat16 (Adam's second
moment stays float32), the update stays within bfloat16 rounding of the float32
one, and a bad dtype is refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from phijax import config as base
from phijax.train import optim


def _params():
  rng = np.random.default_rng(0)
  return {"layers_0": {"mlp": {"kernel": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)}},
          "embed": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32),
          "ln": {"scale": jnp.ones((8,), jnp.float32)}}


def _opt(name, mu_dtype):
  c = ConfigDict(base.default().optim.to_dict())
  c.update(name=name, mu_dtype=mu_dtype, b1=0.9)
  return c


def _bytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", ["adamw", "muon", "lion", "sgd"])
def test_bf16_first_moment(name):
  params = _params()
  grads = jax.tree_util.tree_map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
  updates, states = {}, {}
  for dtype in ("", "bfloat16"):
    tx = optim.make_direction(_opt(name, dtype))
    state = tx.init(params)
    for _ in range(3):  # a few steps: the moment is read back, not only written
      u, state = tx.update(grads, state, params)
    updates[dtype], states[dtype] = u, state
  f32, bf16 = states[""], states["bfloat16"]
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  bf16_leaves = [x for x in jax.tree_util.tree_leaves(bf16) if x.dtype == jnp.bfloat16]
  # Every parameter's first moment is bfloat16, and nothing else is.
  assert sum(x.size for x in bf16_leaves) == n_params
  assert _bytes(f32) - _bytes(bf16) == 2 * n_params
  for a, b in zip(jax.tree_util.tree_leaves(updates[""]),
                  jax.tree_util.tree_leaves(updates["bfloat16"])):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-2, rtol=2e-2)


def test_bad_mu_dtype_is_named():
  with pytest.raises(ValueError, match="optim.mu_dtype='int8'"):
    optim.make_direction(_opt("adamw", "int8"))

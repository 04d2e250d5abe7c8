"""GaLore (``optim.name=galore``) against a plain-numpy GaLore: the projector spans the
gradient's top-``rank`` singular subspace, recomputed every ``galore_update_every``
steps; Adam runs on the projected gradient (its moments kept across projector
changes); the update is projected back and scaled; non-block parameters take plain
Adam. Also: the state shrinks, a checkpointed state resumes exactly, and a rank
above a matrix's smaller side is refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from phijax.train import checkpoint, optim
from phijax.model import sharding
from phijax import config as base
from phijax.train.step import build, device_batch, random_batch

RANK, EVERY, SCALE, B1, B2, EPS = 2, 3, 0.5, 0.9, 0.99, 1e-8


def _opt(**kw):
  c = ConfigDict(base.default().optim.to_dict())
  c.update(name="galore", galore_rank=RANK, galore_update_every=EVERY, galore_scale=SCALE,
           b1=B1, b2=B2, eps=EPS, weight_decay=0.0, clip=0.0)
  c.update(**kw)
  return c


def _adam(state, g, t):
  m, v = state
  m = B1 * m + (1 - B1) * g
  v = B2 * v + (1 - B2) * g * g
  mh, vh = m / (1 - B1 ** t), v / (1 - B2 ** t)
  return (m, v), mh / (np.sqrt(vh) + EPS)


def test_update_equals_numpy_galore():
  rng = np.random.default_rng(0)
  # a wide (6 x 10: right projector) and a tall (12 x 5: left projector) block matrix,
  # and a non-block parameter (plain Adam)
  shapes = {"layers_0": {"mlp": {"fc1": {"kernel": (6, 10)}, "fc2": {"kernel": (12, 5)}}},
            "embed": (7, 3)}
  params = jax.tree_util.tree_map(lambda s: jnp.zeros(s, jnp.float32), shapes,
                                  is_leaf=lambda x: isinstance(x, tuple))
  tx = optim.make_direction(_opt())
  state = tx.init(params)
  names = ["layers_0/mlp/fc1/kernel", "layers_0/mlp/fc2/kernel", "embed"]
  ref = {n: (0.0, 0.0) for n in names}
  proj = {}
  for t in range(1, 3 * EVERY + 2):
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(
        rng.standard_normal(p.shape), jnp.float32), params)
    direction, state = tx.update(grads, state, params)
    got = {optim.path_string(p): np.asarray(x)
           for p, x in jax.tree_util.tree_flatten_with_path(direction)[0]}
    g = {optim.path_string(p): np.asarray(x, np.float64)
         for p, x in jax.tree_util.tree_flatten_with_path(grads)[0]}
    projectors = {optim.path_string(p): np.asarray(x, np.float64)
                  for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
                  if "projector" in optim.path_string(p) and x.size}
    for n in names[:2]:
      G = g[n]
      left = G.shape[0] >= G.shape[1]
      if (t - 1) % EVERY == 0:  # a new subspace: the top singular vectors of this gradient
        U, _, Vt = np.linalg.svd(G, full_matrices=False)
        basis = U[:, :RANK] if left else Vt[:RANK].T
        (P,) = [x for k, x in projectors.items() if k.endswith(n)]
        np.testing.assert_allclose(P @ P.T, basis @ basis.T, atol=1e-5)
        proj[n] = P  # its sign convention: the subspace is what GaLore defines
      P = proj[n]
      R = P.T @ G if left else G @ P
      ref[n], N = _adam(ref[n], R, t)
      update = SCALE * (P @ N if left else N @ P.T)
      np.testing.assert_allclose(got[n], -update, atol=1e-5, rtol=1e-4)
    ref["embed"], N = _adam(ref["embed"], g["embed"], t)
    np.testing.assert_allclose(got["embed"], -N, atol=1e-5, rtol=1e-4)
  # Between refreshes the projector is kept: state stays that of step 3*EVERY+1.
  assert len(proj) == 2


def _fns(**kw):
  from phijax.model.config import ModelConfig
  cfg = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                    intermediate_size=64)
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  return build(cfg, optim.make_direction(_opt(**kw)), mesh, sharding.DEFAULT_RULES)


def test_state_shrinks_and_resumes_exactly(tmp_path):
  fns = _fns(weight_decay=0.1, clip=1.0)
  adamw = _fns(name="adamw")
  state = fns.init(jax.random.key(0))
  adamw_state = jax.eval_shape(adamw.tx.init, state.params)
  assert (optim.state_bytes_per_parameter(state.opt_state, state.params)
          < 0.5 * optim.state_bytes_per_parameter(adamw_state, state.params))
  batch = device_batch(random_batch(4, 16, 64), fns.batch_sharding)
  losses = []
  for _ in range(EVERY + 1):  # past one projector refresh
    state, m = fns.train_step(state, batch, jnp.float32(1e-2))
    losses.append(float(m["loss"]))
  assert losses[-1] < losses[0]
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
  ckpt.save(EVERY + 1, state, {"step": EVERY + 1})
  ckpt.wait()
  abstract = checkpoint.abstract_like(
      jax.eval_shape(fns.init.jitted, jax.random.key(0)), fns.state_shardings)
  _, restored, _ = ckpt.restore_latest(abstract)
  ckpt.close()
  for _ in range(EVERY):  # the next refresh too: projectors and moments came back
    state, _ = fns.train_step(state, batch, jnp.float32(1e-2))
    restored, _ = fns.train_step(restored, batch, jnp.float32(1e-2))
  for x, y in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_rank_above_matrix_is_named():
  with pytest.raises(ValueError, match=r"optim.galore_rank=40 is above the smaller side of "
                                       r"layers_0/attn/.*\(32 x 32\)"):
    _fns(galore_rank=40)

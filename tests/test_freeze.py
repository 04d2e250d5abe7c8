"""``optim.freeze``: frozen parameters get no update and no optimizer state, the saved
state shrinks by exactly their moments, a checkpoint of it restores (resume), and a
regex that matches nothing is refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from phijax.train import checkpoint, losses, optim
from phijax.model import sharding
from phijax import config as base
from phijax.model import Transformer
from phijax.model.config import ModelConfig
from phijax.train.step import build, device_batch, random_batch

CFG = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64)


def _fns(freeze, trainable=False):
  """The step with ``freeze``; ``trainable``: also told which parameters train (as
  ``phijax.train`` tells it)."""
  opt = ConfigDict(base.default().optim.to_dict())
  opt.update(name="adamw", freeze=freeze)
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  return build(CFG, optim.make_direction(opt), mesh, sharding.DEFAULT_RULES,
               trainable=optim.trainable(opt) if trainable else None)


def _batch():
  return random_batch(4, 16, 64)


def _flat(tree):
  return {optim.path_string(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _nbytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def test_frozen_parameters_keep_their_values_and_hold_no_state(tmp_path):
  fns, plain = _fns("^embed, layers_0/attn/.*_proj/bias"), _fns("")
  state, ref = fns.init(jax.random.key(0)), plain.init(jax.random.key(0))
  before = _flat(state.params)
  frozen = [k for k in before if k == "embed" or
            (k.startswith("layers_0/attn/") and k.endswith("_proj/bias"))]
  assert len(frozen) == 5  # the embedding and layer 0's q/k/v/o biases
  # Adam's two float32 moments of each frozen parameter are not held.
  assert _nbytes(ref.opt_state) - _nbytes(state.opt_state) == 2 * sum(
      before[k].nbytes for k in frozen)
  batch = device_batch(_batch(), fns.batch_sharding)
  for _ in range(2):
    state, m = fns.train_step(state, batch, jnp.float32(1e-2))
  after = _flat(state.params)
  for k in before:
    if k in frozen:
      np.testing.assert_array_equal(after[k], before[k])
    else:
      assert not np.array_equal(after[k], before[k]), k
  # Resume: the frozen state round-trips through a checkpoint and trains on the same.
  resumed_step_is_exact(fns, state, batch, tmp_path / "ckpt")


def resumed_step_is_exact(fns, state, batch, directory):
  """``state`` saved at step 2 and restored: the next step from each is the same bit
  for bit (every leaf of the new state). Returns both steps' metrics."""
  ckpt = checkpoint.Checkpointer(str(directory), async_save=False)
  ckpt.save(2, state, {"step": 2})
  ckpt.wait()
  abstract = checkpoint.abstract_like(
      jax.eval_shape(fns.init.jitted, jax.random.key(0)), fns.state_shardings)
  step, restored, _ = ckpt.restore_latest(abstract)
  ckpt.close()
  assert step == 2
  a, ma = fns.train_step(state, batch, jnp.float32(1e-2))
  b, mb = fns.train_step(restored, batch, jnp.float32(1e-2))
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  return ma, mb


def test_regex_matching_nothing_is_named():
  with pytest.raises(ValueError, match=r"optim.freeze: 'embeding' matches no parameter"):
    _fns("embed, embeding")


def test_bad_regex_is_named():
  with pytest.raises(ValueError, match=r"optim.freeze: '\(' is not a regular expression"):
    _fns("(")


def test_grad_norm_covers_the_trained_parameters_only():
  """The logged ``grad_norm`` is the norm of what trains (the clip's view), not of the
  frozen parameters' gradients too."""
  fns = _fns("^embed", trainable=True)
  untold = _fns("^embed")  # no ``trainable``: the norm of every gradient
  batch = device_batch(_batch(), fns.batch_sharding)
  params = jax.device_get(fns.init(jax.random.key(0)).params)  # the step donates its state
  _, m = fns.train_step(fns.init(jax.random.key(0)), batch, jnp.float32(0.0))
  _, m_all = untold.train_step(untold.init(jax.random.key(0)), batch, jnp.float32(0.0))

  def mean_loss(p):  # the reference: autodiff of the mean token loss over the logits
    logits = Transformer(CFG).apply({"params": p}, batch["inputs"], batch["positions"],
                                    batch["segment_ids"])
    nll, _ = losses.token_losses(logits, batch["targets"])
    return losses.masked_sum(nll, batch["loss_mask"]) / jnp.sum(batch["loss_mask"])

  flat = _flat(jax.grad(mean_loss)(params))
  trained = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for k, v in flat.items()
                        if k != "embed"))
  everything = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in flat.values()))
  assert everything > trained * 1.01  # the embedding's gradient is not negligible
  np.testing.assert_allclose(float(m["grad_norm"]), trained, rtol=1e-4)
  np.testing.assert_allclose(float(m_all["grad_norm"]), everything, rtol=1e-4)
  assert optim.trainable(ConfigDict(dict(freeze=""))) is None

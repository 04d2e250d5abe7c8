"""Probes: periodic measurements of the training state that the loop logs but that
never change it. The loop asks each probe ``due(step)`` after a step and writes what
``measure(state, batch, lr)`` returns as a metrics row.

``Sharpness`` (``train.sharpness_every``; Cohen et al. 2021, "Gradient Descent on
Neural Networks Typically Occurs at the Edge of Stability", arXiv 2103.00065): the top
eigenvalue of the training loss's Hessian on one fixed batch (the first training
batch it sees), by power iteration over Hessian-vector products (forward-over-reverse:
``jvp`` of ``grad``), logged as ``sharpness`` beside ``two_over_lr``: gradient descent
is stable on a quadratic only while ``sharpness < 2 / lr``. For Adam (``adam``,
``adamw``) it also logs the preconditioned sharpness, the top eigenvalue of
``P^-1/2 H P^-1/2`` with ``P = diag(sqrt(v_hat) + eps)`` (Cohen et al. 2022, "Adaptive
Gradient Methods at the Edge of Stability", arXiv 2207.14484), beside Adam's threshold
``(2 + 2 b1) / ((1 - b1) lr)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from phijax.train import losses
from phijax.model import Transformer


def top_eigenvalue(hvp, like, key, iters: int = 20):
  """Largest-magnitude eigenvalue of the symmetric operator ``hvp`` (a pytree ->
  pytree linear map shaped like ``like``) by power iteration; returns
  ``(eigenvalue, vector)``. ``iters`` is static: call it inside ``jit``."""
  leaves, treedef = jax.tree_util.tree_flatten(like)
  keys = jax.random.split(key, len(leaves))
  v = treedef.unflatten([jax.random.normal(k, x.shape, jnp.float32)
                         for k, x in zip(keys, leaves)])

  def normalise(t):
    n = optax.tree.norm(t)
    return jax.tree_util.tree_map(lambda x: x / jnp.maximum(n, 1e-30), t)

  def body(_, v):
    return normalise(hvp(v))

  v = jax.lax.fori_loop(0, iters, body, normalise(v))
  eig = optax.tree.vdot(v, hvp(v))  # the Rayleigh quotient of the unit vector
  return eig, v


def hvp_of(loss_fn, params):
  """``v -> H v`` of ``loss_fn`` at ``params`` (forward-over-reverse)."""
  grad = jax.grad(loss_fn)
  return lambda v: jax.jvp(grad, (params,), (v,))[1]


def adam_preconditioner(opt_state, b2: float, eps: float):
  """``sqrt(v_hat) + eps`` per parameter from the (first) Adam state in ``opt_state``,
  or None when it holds no Adam second moment."""
  found = [s for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
      if isinstance(s, optax.ScaleByAdamState)]
  if not found:
    return None
  s = found[0]
  correction = 1.0 - b2 ** jnp.maximum(s.count, 1).astype(jnp.float32)
  return jax.tree_util.tree_map(lambda nu: jnp.sqrt(nu / correction) + eps, s.nu)


class Sharpness:
  """The ``sharpness`` probe (see the module docstring)."""

  name = "sharpness"

  def __init__(self, model_cfg, cfg_optim, every: int, iters: int = 20, seed: int = 0):
    if every < 0 or iters < 1:
      raise ValueError(f"train.sharpness_every={every} must be >= 0 and "
                       f"train.sharpness_iters={iters} >= 1")
    self.every, self.iters, self.seed = every, iters, seed
    self.adam = cfg_optim.name in ("adam", "adamw") and not cfg_optim.get("freeze", "")
    self.b1, self.b2, self.eps = float(cfg_optim.b1), float(cfg_optim.b2), float(cfg_optim.eps)
    self.batch = None

    # Forward-over-reverse needs a jvp of every op: the dense reference attention and
    # a plain log-softmax, not the xla impl's, the kernels' and the fused cross
    # entropy's custom VJPs (the same function; only how its gradient is computed
    # differs).
    model = Transformer(dataclasses.replace(model_cfg, attention_impl="reference"))

    def loss(params, batch):
      logits = model.apply({"params": params}, batch["inputs"], batch["positions"],
                           batch["segment_ids"]).astype(jnp.float32)
      logp = jax.nn.log_softmax(logits)
      nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
      mask = batch["loss_mask"]
      return losses.masked_sum(nll, mask) / jnp.maximum(jnp.sum(mask), 1.0)

    def measure(params, opt_state, batch, key):
      f = lambda p: loss(p, batch)
      hvp = hvp_of(f, params)
      out = {"sharpness": top_eigenvalue(hvp, params, key, self.iters)[0]}
      if self.adam:
        pre = adam_preconditioner(opt_state, self.b2, self.eps)
        inv_sqrt = jax.tree_util.tree_map(lambda d: 1.0 / jnp.sqrt(d), pre)
        scaled = lambda v: jax.tree_util.tree_map(jnp.multiply, inv_sqrt, hvp(
            jax.tree_util.tree_map(jnp.multiply, inv_sqrt, v)))
        out["preconditioned_sharpness"] = top_eigenvalue(scaled, params, key, self.iters)[0]
      return out

    self._measure = jax.jit(measure)

  def due(self, step: int) -> bool:
    return bool(self.every) and step % self.every == 0

  def measure(self, state, batch, lr: float) -> dict:
    if self.batch is None:
      self.batch = batch  # the fixed batch: the first one the probe sees
    key = jax.random.key(self.seed)  # the same start vector every time
    out = {k: float(v) for k, v in jax.device_get(
        self._measure(state.params, state.opt_state, self.batch, key)).items()}
    out["two_over_lr"] = 2.0 / lr if lr else float("inf")
    if self.adam:
      out["adam_threshold"] = ((2 + 2 * self.b1) / ((1 - self.b1) * lr)
                               if lr else float("inf"))
    return out


def make(config, fns) -> list:
  """The probes a config asks for (none by default: the loop then does no extra work)."""
  t = config.train
  probes = []
  if t.sharpness_every:
    if t.objective != "lm":
      raise ValueError(f"train.sharpness_every measures the language-modelling loss; it "
                       f"does not take train.objective={t.objective!r}")
    probes.append(Sharpness(fns.model.cfg, config.optim, int(t.sharpness_every),
                            int(t.sharpness_iters), seed=int(t.seed)))
  return probes

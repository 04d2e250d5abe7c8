"""Optimizer factory: the update direction, without the learning rate.

The learning rate comes from the host curriculum each step and multiplies the
direction inside the train step, so schedules are plain Python and shapes never
depend on them. ``adamw`` = clip -> Adam -> decoupled weight decay (not on norms
and biases) -> negate; times lr this is exactly ``optax.adamw``.
"""

from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("adamw", "adam", "sgd", "lion")


def decay_mask(params):
  """Weight decay on matrices only: no decay on norm scales and biases (1-D)."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_direction(cfg_optim) -> optax.GradientTransformation:
  name = cfg_optim.name
  parts = []
  if cfg_optim.clip and cfg_optim.clip > 0:
    parts.append(optax.clip_by_global_norm(cfg_optim.clip))
  if name in ("adamw", "adam"):
    parts.append(optax.scale_by_adam(b1=cfg_optim.b1, b2=cfg_optim.b2, eps=cfg_optim.eps))
  elif name == "lion":
    parts.append(optax.scale_by_lion(b1=cfg_optim.b1, b2=cfg_optim.b2))
  elif name == "sgd":
    if cfg_optim.b1:
      parts.append(optax.trace(decay=cfg_optim.b1))
  else:
    raise ValueError(f"optim.name: unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
  if cfg_optim.weight_decay and name != "adam":
    parts.append(optax.add_decayed_weights(cfg_optim.weight_decay, mask=decay_mask))
  parts.append(optax.scale(-1.0))
  return optax.chain(*parts)

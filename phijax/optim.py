"""Optimizer factory: the update direction, without the learning rate.

The learning rate comes from the host curriculum each step and multiplies the
direction inside the train step, so schedules are plain Python and shapes never
depend on them. ``adamw`` = clip -> Adam -> decoupled weight decay (not on norms
and biases) -> negate; times lr this is exactly ``optax.adamw``.

``muon`` (``optax.contrib.muon``): the hidden-layer matrices (every ``kernel`` inside
a block: q/k/v/o, MLP) take momentum orthogonalised by Newton-Schulz, scaled to
RMS ``optim.muon_rms`` (0.2 matches AdamW's update size, so one ``lr`` serves both,
after Moonshot's "Muon is scalable"); embeddings, ``lm_head``, norms and biases
take Adam with ``b1``/``b2``. Weight decay as for adamw.
"""

from __future__ import annotations

import jax
import optax

from phijax import sharding

OPTIMIZERS = ("adamw", "adam", "sgd", "lion", "muon")


def decay_mask(params):
  """Weight decay on matrices only: no decay on norm scales and biases (1-D)."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def muon_dimension_numbers(params):
  """Which parameters Muon orthogonalises, and as what matrix (None = Adam).

  Block kernels only: q/k/v ``[D, H, E]`` are ``D x (H*E)`` matrices, o_proj
  ``[H, E, D]`` is ``(H*E) x D``, MLP kernels are 2-D already.
  """
  def dims(path, p):
    names = sharding.path_names(path)
    if names[-1] != "kernel" or not any(n.startswith("layers_") for n in names):
      return None
    if names[-2] == "o_proj":
      return optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1), output_axis=2)
    if p.ndim == 3:
      return optax.contrib.MuonDimensionNumbers(reduction_axis=0, output_axis=(1, 2))
    return optax.contrib.MuonDimensionNumbers(reduction_axis=0, output_axis=1)
  return jax.tree_util.tree_map_with_path(dims, params)


def make_direction(cfg_optim) -> optax.GradientTransformation:
  name = cfg_optim.name
  parts = []
  if cfg_optim.clip and cfg_optim.clip > 0:
    parts.append(optax.clip_by_global_norm(cfg_optim.clip))
  if name == "muon":
    # learning_rate=-1: optax scales by -lr, so -1 leaves the update un-negated; the
    # shared weight decay and negation below then apply as for adamw.
    parts.append(optax.contrib.muon(
        learning_rate=-1.0, adam_learning_rate=-1.0, beta=cfg_optim.muon_beta,
        adam_b1=cfg_optim.b1, adam_b2=cfg_optim.b2, eps=cfg_optim.eps,
        consistent_rms=cfg_optim.muon_rms,
        muon_weight_dimension_numbers=muon_dimension_numbers))
  elif name in ("adamw", "adam"):
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

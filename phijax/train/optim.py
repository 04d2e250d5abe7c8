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

``galore`` (Zhao et al. 2024, arXiv 2403.03507; ``optax.contrib.scale_by_galore``):
the same block matrices, each seen as a 2-D matrix, have their gradient projected
onto a rank-``optim.galore_rank`` subspace (top singular vectors of the gradient,
recomputed every ``optim.galore_update_every`` steps), take Adam there, and are
projected back and scaled by ``optim.galore_scale``; everything else takes plain
Adam. Weight decay as for adamw. The Adam moments of a projected ``m x n`` matrix
are ``r x n`` (or ``m x r``), plus the ``m x r`` projector.

``optim.block_scale`` (any optimizer; 1 = off) multiplies the block matrices' update
before weight decay, as ``galore_scale`` does GaLore's: ``adamw`` at
``block_scale=galore_scale`` takes GaLore's per-group learning rates (``lr`` times the
scale on the block matrices, ``lr`` on the rest, decay at ``lr``) without its
projection, the control that separates the projection from the smaller step.

``optim.mu_dtype`` (e.g. ``"bfloat16"``) keeps the first moment (Adam's m, Muon's,
Lion's and SGD's momentum) in that dtype to save optimizer memory; the arithmetic
of each update still runs in float32 and the second moment stays float32.

``make_direction(cfg_optim, width_mult=...)``: muP (``model.mup``; pass the model
config's ``width_mult``): the block matrices' direction, weight decay included, is
multiplied by ``1 / width_mult``, i.e. their learning rate is ``lr / width_mult``, as
MiniCPM's per-group learning rates; embeddings, ``lm_head``, norms and biases keep
``lr`` (muP's input and readout weights: the model divides the readout's input by
``width_mult`` instead). For every optimizer whose update is sized per entry like
Adam's (adamw, adam, lion, muon at ``muon_rms``, galore); sgd would need other
scalings and is refused.

``optim.freeze`` (comma-separated regexes searched in each parameter's path, e.g.
``embed`` or ``layers_0/.*``): matching parameters take ``optax.set_to_zero`` through
``optax.multi_transform``, so they get no update and hold no optimizer state; the
saved optimizer state shrinks accordingly. The logged ``grad_norm`` covers the trained
parameters only, as the clip does (``trainable``, which ``phijax.train`` hands to the
step).

LoRA (``model.lora.rank`` > 0; ``adapters_only=True`` here, Hu et al. 2021): every
parameter but the adapter factors (``phijax.model.lora``) is frozen the same way, so
only the adapters hold optimizer state (``optim.freeze`` can freeze some adapters
too). Every optimizer but galore takes them: Muon orthogonalises block kernels only,
so the adapters (thin ``in x r`` and ``r x out`` factors, which PEFT users train with
AdamW) take Muon's Adam branch with ``b1``/``b2``; galore, whose projection is for
full-rank block matrices, has none left to project and is refused.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from phijax.model import lora, quant, sharding

OPTIMIZERS = ("adamw", "adam", "sgd", "lion", "muon", "galore")


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


def _mu_dtype(cfg_optim):
  name = cfg_optim.get("mu_dtype", "") or None
  if name not in (None, "float32", "bfloat16", "float16"):
    raise ValueError(f"optim.mu_dtype={name!r}: choose '' (float32), 'bfloat16' or "
                     "'float16'")
  return None if name in (None, "float32") else jnp.dtype(name)


def path_string(path) -> str:
  """A parameter's path as ``optim.freeze`` matches it: ``layers_0/attn/q_proj/kernel``."""
  return "/".join(sharding.path_names(path))


def freeze_labels(patterns: str, adapters_only: bool = False):
  """``params -> tree of "frozen" / "train"``; raises naming a regex that matches no
  parameter, with the paths there are. ``adapters_only`` (LoRA): every parameter that
  is not an adapter factor is frozen too."""
  regexes = []
  for text in filter(None, (t.strip() for t in patterns.split(","))):
    try:
      regexes.append((text, re.compile(text)))
    except re.error as e:
      raise ValueError(f"optim.freeze: {text!r} is not a regular expression ({e})") from None

  def frozen(path) -> bool:
    return ((adapters_only and not lora.is_adapter(sharding.path_names(path)))
            or any(rx.search(path_string(path)) for _, rx in regexes))

  def labels(params):
    paths = [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for text, rx in regexes:
      if not any(rx.search(p) for p in paths):
        shown = ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
        raise ValueError(f"optim.freeze: {text!r} matches no parameter path (they look "
                         f"like {shown})")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if frozen(path) else "train", params)
  return labels


def trainable(cfg_optim, *, adapters_only: bool = False):
  """``params -> tree of bools`` (True where the parameter is trained), or None when
  nothing is frozen (no ``optim.freeze``, no LoRA): the step computes gradients of the
  trained leaves only, and its ``grad_norm`` covers them only, as the clip inside the
  "train" branch of ``make_direction`` does."""
  freeze = cfg_optim.get("freeze", "")
  if not freeze and not adapters_only:
    return None
  labels = freeze_labels(freeze, adapters_only)
  return lambda params: jax.tree_util.tree_map(lambda label: label == "train",
                                               labels(params))


def trained_leaves(trainable, params):
  """The leaves that train: ``params`` itself when ``trainable`` is None, else a list
  of the leaves ``trainable(params)`` marks, in tree order."""
  if trainable is None:
    return params
  return [x for x, t in zip(jax.tree_util.tree_leaves(params),
                            jax.tree_util.tree_leaves(trainable(params))) if t]


def value_and_trained_grad(loss_fn, trainable):
  """``jax.value_and_grad(loss_fn, has_aux=True)`` over ``trained_leaves`` of its first
  argument. Frozen leaves enter the loss as constants, so XLA never computes their
  weight gradients (under LoRA most of the backward pass) nor accumulates them over
  micro-batches."""
  plain = jax.value_and_grad(loss_fn, has_aux=True)
  if trainable is None:
    return plain

  def grad_fn(params, *args):
    flat, treedef = jax.tree_util.tree_flatten(params)
    mask = jax.tree_util.tree_leaves(trainable(params))

    def of_trained(leaves):
      it = iter(leaves)
      return loss_fn(treedef.unflatten([next(it) if t else x for x, t in zip(flat, mask)]),
                     *args)
    return jax.value_and_grad(of_trained, has_aux=True)(trained_leaves(trainable, params))
  return grad_fn


def with_frozen_zeros(trainable, params, grads):
  """``value_and_trained_grad``'s gradients back in ``params``' tree, zeros at the
  frozen leaves (which the direction's ``set_to_zero`` never reads)."""
  if trainable is None:
    return grads
  it = iter(grads)
  return jax.tree_util.tree_map(lambda p, t: next(it) if t else jnp.zeros_like(p),
                                params, trainable(params))


def apply_direction(trainable, params, direction, lr):
  """``params + lr * direction``; frozen leaves pass through untouched (``p + lr * 0.0``
  would turn a stored -0.0 into +0.0: a frozen base keeps its bytes)."""
  mask = (jax.tree_util.tree_map(lambda _: True, params) if trainable is None
          else trainable(params))
  return jax.tree_util.tree_map(lambda p, d, t: p + lr * d.astype(p.dtype) if t else p,
                                params, direction, mask)


def _is_dims(x) -> bool:
  """A leaf of ``muon_dimension_numbers``' tree: a matrix's dimension numbers or None."""
  return x is None or isinstance(x, optax.contrib.MuonDimensionNumbers)


def galore_dimension_numbers(rank: int):
  """Muon's block matrices as GaLore's, checking that ``rank`` fits every one of them
  (optax would silently clamp it)."""
  def dims(params):
    def check(path, p, d):
      if d is None:
        return None
      red = (d.reduction_axis,) if isinstance(d.reduction_axis, int) else d.reduction_axis
      m = int(np.prod([p.shape[a] for a in red]))
      n = p.size // m
      if rank > min(m, n):
        raise ValueError(f"optim.galore_rank={rank} is above the smaller side of "
                         f"{path_string(path)} ({m} x {n}); use a rank <= {min(m, n)}")
      return optax.contrib.GaLoreDimensionNumbers(d.reduction_axis, d.output_axis)
    return jax.tree_util.tree_map_with_path(
        check, params, muon_dimension_numbers(params), is_leaf=_is_dims)
  return dims


def state_bytes_per_parameter(opt_state, params) -> float:
  """Optimizer-state bytes per parameter (arrays or ShapeDtypeStructs, e.g. the train
  state's ``jax.eval_shape``)."""
  size = sum(int(np.prod(x.shape)) * x.dtype.itemsize
             for x in jax.tree_util.tree_leaves(opt_state))
  return size / max(quant.parameter_count(params), 1)


def block_matrix_mask(params):
  """True on the block matrices (Muon's and GaLore's), False elsewhere."""
  return jax.tree_util.tree_map(lambda d: d is not None, muon_dimension_numbers(params),
                                is_leaf=_is_dims)


def mup_scaling(name: str, width_mult: float):
  """The block matrices' direction times ``1 / width_mult`` (muP's hidden learning rate),
  or None where muP is off."""
  if width_mult == 1.0:
    return None
  if not width_mult > 0:
    raise ValueError(f"width_mult must be positive, got {width_mult}")
  if name == "sgd":
    raise ValueError("optim.name='sgd' with model.mup: muP's 1/width_mult learning rate "
                     "is for Adam-like updates (SGD needs other per-layer scalings); use "
                     "adamw, adam, lion, muon or galore, or turn model.mup off")
  return optax.masked(optax.scale(1.0 / width_mult), block_matrix_mask)


def check_lora(cfg_optim) -> None:
  """The optimizer can train LoRA adapters: every one but galore."""
  if cfg_optim.name == "galore":
    raise ValueError("optim.name='galore' with model.lora: GaLore projects the gradients "
                     "of full block matrices, which LoRA freezes; use adamw (or muon, lion, "
                     "sgd) to train the adapters")


def make_direction(cfg_optim, *, width_mult: float = 1.0,
                   adapters_only: bool = False) -> optax.GradientTransformation:
  """``cfg_optim`` is ``config.optim``; ``width_mult`` is the model config's (muP; 1.0
  otherwise, which leaves the transformation as it was); ``adapters_only``: a LoRA
  model (``model.lora.rank`` > 0), only its adapters train."""
  if adapters_only:
    check_lora(cfg_optim)
  tx = _direction(cfg_optim, mup_scaling(cfg_optim.name, width_mult))
  freeze = cfg_optim.get("freeze", "")
  if not freeze and not adapters_only:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               freeze_labels(freeze, adapters_only))


def _direction(cfg_optim, mup=None) -> optax.GradientTransformation:
  name = cfg_optim.name
  mu_dtype = _mu_dtype(cfg_optim)
  parts = []
  if cfg_optim.clip and cfg_optim.clip > 0:
    parts.append(optax.clip_by_global_norm(cfg_optim.clip))
  if name == "muon":
    # learning_rate=-1: optax scales by -lr, so -1 leaves the update un-negated; the
    # shared weight decay and negation below then apply as for adamw.
    parts.append(optax.contrib.muon(
        learning_rate=-1.0, adam_learning_rate=-1.0, beta=cfg_optim.muon_beta,
        adam_b1=cfg_optim.b1, adam_b2=cfg_optim.b2, eps=cfg_optim.eps,
        consistent_rms=cfg_optim.muon_rms, mu_dtype=mu_dtype,
        muon_weight_dimension_numbers=muon_dimension_numbers))
  elif name == "galore":
    if int(cfg_optim.galore_rank) < 1 or int(cfg_optim.galore_update_every) < 1:
      raise ValueError("optim.galore_rank and optim.galore_update_every must be positive, "
                       f"got {cfg_optim.galore_rank} and {cfg_optim.galore_update_every}")
    adam = lambda: optax.scale_by_adam(b1=cfg_optim.b1, b2=cfg_optim.b2, eps=cfg_optim.eps,
                                       mu_dtype=mu_dtype)
    # Only the block matrices enter GaLore: for any other leaf it would keep a
    # zero-size projector, which orbax refuses to checkpoint.
    parts.append(optax.multi_transform(
        {"galore": optax.contrib.scale_by_galore(
            rank=int(cfg_optim.galore_rank),
            update_proj_gap=int(cfg_optim.galore_update_every),
            scale=float(cfg_optim.galore_scale), base_optimizer=adam(),
            weight_dimension_numbers=galore_dimension_numbers(int(cfg_optim.galore_rank))),
         "adam": adam()},
        lambda params: jax.tree_util.tree_map(
            lambda d: "adam" if d is None else "galore", muon_dimension_numbers(params),
            is_leaf=_is_dims)))
  elif name in ("adamw", "adam"):
    parts.append(optax.scale_by_adam(b1=cfg_optim.b1, b2=cfg_optim.b2, eps=cfg_optim.eps,
                                     mu_dtype=mu_dtype))
  elif name == "lion":
    parts.append(optax.scale_by_lion(b1=cfg_optim.b1, b2=cfg_optim.b2, mu_dtype=mu_dtype))
  elif name == "sgd":
    if cfg_optim.b1:
      parts.append(optax.trace(decay=cfg_optim.b1, accumulator_dtype=mu_dtype))
  else:
    raise ValueError(f"optim.name: unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
  block_scale = float(cfg_optim.get("block_scale", 1.0))
  if block_scale != 1.0:
    parts.append(optax.masked(optax.scale(block_scale), block_matrix_mask))
  if cfg_optim.weight_decay and name != "adam":
    parts.append(optax.add_decayed_weights(cfg_optim.weight_decay, mask=decay_mask))
  if mup is not None:  # after weight decay: a group's lr scales its decay too (torch)
    parts.append(mup)
  parts.append(optax.scale(-1.0))
  return optax.chain(*parts)

"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv 2106.09685) on the block matrices.

A targeted matrix (``model.lora.targets``, a regex searched in paths such as
``layers_0/attn/q_proj``) computes

    y = x W (+ b) + (alpha / rank) * dropout(x) A B

with ``W`` (and ``b``) the frozen base and ``A [in, rank]``, ``B [rank, out]`` the only
trained parameters (``phijax.train.optim`` freezes every parameter ``is_adapter``
does not name). ``B`` starts at zeros, so the added term is exactly 0.0 and step 0
computes the base model bit for bit; ``A`` starts uniform in ``+-1/sqrt(fan_in)``,
PEFT's ``kaiming_uniform_(a=sqrt(5))`` (the paper draws it from a Gaussian: either
works, as ``B = 0`` makes the product zero). ``alpha / rank`` is the paper's scale,
``alpha`` held fixed as ``rank`` varies.

The adapters live beside the base weight, ``<matrix>/lora/a`` and ``<matrix>/lora/b``,
so the base keeps its path (``train.init_from`` of a pretrained run and
``phijax.convert`` read it unchanged). ``a`` keeps the kernel's input dims and ``b``
its output dims (q_proj: ``a [D, r]``, ``b [r, H, E]``; o_proj: ``a [H, E, r]``), with
the kernel's logical axis names and ``lora`` (unsharded) for the rank: adapters shard
by the same rules as their matrix.

``merge`` folds adapters into the base (``W + scale * A B``), which is what a Hugging
Face export (``phijax.convert.to_hf``) writes and what a warm start from a LoRA run
loads as its base.

QLoRA (``model.lora.quantize``, ``phijax.model.quant``) stores the base quantized:
``Dense.base_kernel``, the one read of the base weight, dequantizes it; ``merge``
dequantizes it first.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from phijax.model.config import LoraConfig, block_matrix_paths  # noqa: F401 (re-exported)
from phijax.model import quant
from phijax.model.sharding import path_names

ADAPTER = "lora"  # the adapter's module name inside its matrix, and its rank's axis name


def targeted(lora: LoraConfig | None, module_path) -> bool:
  """Whether the Dense at ``module_path`` (a Flax scope path such as ``("layers_0",
  "attn", "q_proj")``) carries an adapter. The path is read from its block on, as
  ``model.lora.targets`` is checked (``block_matrix_paths``), whatever module holds
  the Transformer."""
  if lora is None or lora.rank == 0:
    return False
  names = list(module_path)
  start = next((i for i, n in enumerate(names) if n.startswith("layers_")), 0)
  return re.search(lora.targets, "/".join(names[start:])) is not None


def _uniform_fan_in(fan_in: int):
  """PEFT's Kaiming-uniform with ``a=sqrt(5)``: bound ``sqrt(6 / ((1 + 5) fan_in))``."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class Adapter(nn.Module):
  """``(alpha / rank) * dropout(x) A B`` for a Dense's 2-D input ``x [N, fan_in]``;
  returns float32 ``[N, fan_out]``."""
  lora: Any  # LoraConfig
  in_shape: tuple  # the kernel's input dims
  features: tuple  # its output dims
  names: tuple  # its logical names: input dims then output dims
  dtype: Any  # the compute dtype

  @nn.compact
  def __call__(self, x_NxI, deterministic: bool = True):
    r, n_in = self.lora.rank, len(self.in_shape)
    fan_in = math.prod(self.in_shape)
    a = self.param("a", nn.with_logical_partitioning(
        _uniform_fan_in(fan_in), (*self.names[:n_in], ADAPTER)),
        (*self.in_shape, r), jnp.float32)
    b = self.param("b", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), (ADAPTER, *self.names[n_in:])),
        (r, *self.features), jnp.float32)
    if self.lora.dropout > 0:
      x_NxI = nn.Dropout(self.lora.dropout)(x_NxI, deterministic=deterministic)
    dot = lambda u, w: jax.lax.dot_general(u, w.astype(self.dtype), (((1,), (0,)), ((), ())),
                                           preferred_element_type=jnp.float32)
    h_NxR = dot(x_NxI, a.reshape(fan_in, r)).astype(self.dtype)
    # With b = 0 every term is an exact 0.0: adding it leaves the base output as it was
    # (bit for bit, but for a -0.0 turning +0.0, which compares equal).
    return dot(h_NxR, b.reshape(r, -1)) * (self.lora.alpha / r)


def is_adapter(names) -> bool:
  """A parameter path (strings, ``sharding.path_names``) of an adapter factor."""
  return len(names) >= 2 and names[-2] == ADAPTER


def count(params) -> int:
  """How many adapter parameters ``params`` (arrays or shapes) holds."""
  return sum(int(np.prod(x.shape)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if is_adapter(path_names(p)))


def summary(cfg, params) -> str:
  """`` (N of them trained: LoRA rank r adapters)`` for a run's header; "" without."""
  if cfg.lora.rank == 0:
    return ""
  return f" ({count(params):,} of them trained: LoRA rank {cfg.lora.rank} adapters)"


def merge(cfg, params):
  """``(cfg without lora, params)`` with every adapter folded into its base kernel,
  ``W + (alpha / rank) * A B`` in float32 on the host (a quantized ``W`` dequantized).
  A config without adapters is returned as it is."""
  if cfg.lora.rank == 0:
    return cfg, params
  scale = cfg.lora.alpha / cfg.lora.rank
  params = quant.dequantize_tree(params)  # QLoRA: the base as the step computed it

  def fold(node):
    if not isinstance(node, Mapping):
      return node
    out = {k: fold(v) for k, v in node.items() if k != ADAPTER}
    if ADAPTER in node:
      a, b = (np.asarray(node[ADAPTER][k], np.float32) for k in ("a", "b"))
      out["kernel"] = np.asarray(out["kernel"], np.float32) + scale * np.tensordot(a, b, 1)
    return out
  return cfg.replace(lora=LoraConfig()), fold(dict(params))


def adapters(params):
  """The adapter factors of ``params`` alone, in its nesting (what a LoRA run adds to
  its base: ``phijax.convert --adapters_only``)."""
  def keep(node):
    out = {}
    for k, v in node.items():
      if k == ADAPTER:
        out[k] = dict(v)
      elif isinstance(v, Mapping):
        sub = keep(v)
        if sub:
          out[k] = sub
    return out
  return keep(params)


def with_adapters_from(params, source):
  """``params`` with every adapter factor taken from ``source`` (a tree of the same
  structure): a warm start's base with a fresh run's adapters."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x, y: y if is_adapter(path_names(p)) else x, params, source)

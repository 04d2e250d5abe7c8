"""A frozen base stored quantized (QLoRA: Dettmers et al. 2023, "QLoRA: Efficient
Finetuning of Quantized LLMs", arXiv 2305.14314), dequantized per matmul in the step.

``model.lora.quantize = "nf4"`` stores every block matrix of a LoRA model (the
adapters' base; embeddings, norms and the head stay float32, as PEFT leaves them) as

- ``codes``: 4-bit NormalFloat indices, two per byte (first value in the high
  nibble), shaped as the kernel with its last dim halved, so the kernel's logical
  axis names shard it;
- blocks of BLOCK = 64 consecutive values (the kernel flattened row-major), each
  scaled by its absmax to [-1, 1] and rounded to the nearest of NF4's 16 values;
- double quantisation of those absmax scales: minus their mean (``absmax_offset``),
  in blocks of BLOCK2 = 256 scaled by their own absmax (``absmax_scale``, float32) and
  stored as 8-bit floats (``absmax``, float8 e4m3 bits in uint8: the paper's "8-bit
  Floats with a blocksize of 256").

That is 0.5 + 8/64 + 32/(64 * 256) bits over 4: 4.127 bits (0.516 bytes) a parameter,
the paper's figure. ``"int8"`` is the same blocks with symmetric int8 codes
(``round(127 x / absmax)``, 1.016 bytes a parameter).

NF4's values are the paper's: quantiles of N(0, 1) normalised to [-1, 1], 8 positive
and 7 negative plus an exact 0 (bitsandbytes' ``create_normal_map``); tests check them
against that construction and the round trip against a numpy oracle.

The quantised nodes replace ``kernel`` in a Dense's parameters by ``kernel_nf4`` (or
``kernel_int8``) holding the four arrays above: ``quantize_like`` turns a float tree
into one (a warm start), ``dequantize_tree`` back (exports, merges).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

KINDS = ("nf4", "int8")
BLOCK = 64  # values per absmax scale (QLoRA)
BLOCK2 = 256  # absmax scales per second-level scale (QLoRA's double quantisation)
FP8_MAX = 448.0  # the largest float8 e4m3fn value: a second-level block's absmax maps here

# QLoRA's NF4 code (Appendix E of the paper; bitsandbytes' table), ascending.
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
_NF4_MIDPOINTS = (NF4[1:] + NF4[:-1]) / 2


def node_name(kind: str) -> str:
  """The parameter node that replaces ``kernel``: ``kernel_nf4`` or ``kernel_int8``."""
  return f"kernel_{kind}"


def kind_of(name: str) -> str | None:
  """The quantisation of a node name (``kernel_nf4`` -> ``nf4``), None for others."""
  kind = name[len("kernel_"):] if name.startswith("kernel_") else None
  return kind if kind in KINDS else None


def check_shape(kind: str, shape, where: str) -> None:
  size = math.prod(shape)
  if size % BLOCK:
    raise ValueError(f"model.lora.quantize={kind!r}: {where} has {size} values, not a "
                     f"multiple of the {BLOCK}-value blocks; quantize a model whose block "
                     "matrices are (Phi's all are), or set model.lora.quantize=''")
  if kind == "nf4" and shape[-1] % 2:
    raise ValueError(f"model.lora.quantize='nf4': {where}'s last dim {shape[-1]} is odd; "
                     "two 4-bit codes share a byte along it")


def quantize(w, kind: str) -> dict:
  """The quantised form of float array ``w`` (its size a multiple of BLOCK): a dict of
  ``codes``, ``absmax`` (float8 bits), ``absmax_scale`` and ``absmax_offset``."""
  w = jnp.asarray(w, jnp.float32)
  blocks = w.reshape(-1, BLOCK)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  unit = blocks / jnp.where(absmax > 0, absmax, 1.0)[:, None]
  if kind == "nf4":
    idx = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), unit.reshape(-1)).astype(jnp.uint8)
    pairs = idx.reshape(-1, 2)
    codes = ((pairs[:, 0] << 4) | pairs[:, 1]).reshape(*w.shape[:-1], w.shape[-1] // 2)
  elif kind == "int8":
    codes = jnp.round(unit * 127).astype(jnp.int8).reshape(w.shape)
  else:
    raise ValueError(f"quantize: kind {kind!r}; choose one of {KINDS}")
  return {"codes": codes, **_quantize_scales(absmax)}


def _quantize_scales(absmax) -> dict:
  """Double quantisation: ``absmax - mean`` in blocks of BLOCK2, each block's values
  over its own absmax stored as float8 e4m3 (padded to whole blocks with 0)."""
  offset = jnp.mean(absmax)
  centred = absmax - offset
  pad = -len(centred) % BLOCK2
  centred = jnp.pad(centred, (0, pad)).reshape(-1, BLOCK2)
  scale = jnp.max(jnp.abs(centred), axis=1)
  scale = jnp.where(scale > 0, scale, 1.0)
  fp8 = (centred / scale[:, None] * FP8_MAX).astype(jnp.float8_e4m3fn)
  return {"absmax": jax.lax.bitcast_convert_type(fp8, jnp.uint8).reshape(-1),
          "absmax_scale": scale.astype(jnp.float32),
          "absmax_offset": offset.astype(jnp.float32)}


def dequantize(q: Mapping, kind: str):
  """The float32 kernel ``quantize`` stored (its original shape)."""
  codes = q["codes"]
  if kind == "nf4":
    shape = (*codes.shape[:-1], codes.shape[-1] * 2)
    idx = jnp.stack([codes >> 4, codes & 15], axis=-1).reshape(-1)
    unit = jnp.asarray(NF4)[idx]
  else:
    shape = codes.shape
    unit = codes.reshape(-1).astype(jnp.float32) / 127
  blocks = unit.reshape(-1, BLOCK)
  absmax = dequantize_scales(q)[:blocks.shape[0]]
  return (blocks * absmax[:, None]).reshape(shape)


def dequantize_scales(q: Mapping):
  """The first-level absmax scales (float32, padded to whole BLOCK2 blocks)."""
  fp8 = jax.lax.bitcast_convert_type(q["absmax"], jnp.float8_e4m3fn).astype(jnp.float32)
  per_block = fp8.reshape(-1, BLOCK2) / FP8_MAX * q["absmax_scale"][:, None]
  return per_block.reshape(-1) + q["absmax_offset"]


class QuantizedKernel(nn.Module):
  """A frozen kernel stored quantized; calling it returns the float32 kernel. A fresh
  init quantizes a normal draw (``init_std``); a warm start fills it with
  ``quantize_like``."""
  kind: str
  shape: tuple
  names: tuple  # the kernel's logical axis names
  init_std: float

  @nn.compact
  def __call__(self):
    check_shape(self.kind, self.shape, "/".join(self.scope.path))
    # One draw quantized whole: every array below comes from the same kernel.
    q0 = (quantize(nn.initializers.normal(self.init_std)(self.make_rng("params"),
                                                         self.shape), self.kind)
          if self.is_initializing() else None)
    # Flax checks an existing parameter's shape against its init under eval_shape, so
    # the init must work when applying too (then only its shape is read).
    take = lambda name: (lambda *_: (q0 if q0 is not None else quantize(  # noqa: E731
        jnp.zeros(self.shape), self.kind))[name])
    q = {"codes": self.param("codes", nn.with_logical_partitioning(take("codes"),
                                                                   self.names)),
         "absmax": self.param("absmax", nn.with_logical_partitioning(take("absmax"),
                                                                     (None,))),
         "absmax_scale": self.param("absmax_scale", nn.with_logical_partitioning(
             take("absmax_scale"), (None,))),
         "absmax_offset": self.param("absmax_offset", take("absmax_offset"))}
    return dequantize(q, self.kind)


def _walk(tree, fn, path=()):
  """``tree`` (nested mappings) rebuilt with ``fn(path, name, value)`` applied to each
  entry; ``fn`` returns ``(name, value)`` pairs to put in its place."""
  if not isinstance(tree, Mapping):
    return tree
  out = {}
  for name, value in tree.items():
    for new_name, new_value in fn(path, name, _walk(value, fn, (*path, name))):
      out[new_name] = new_value
  return out


def quantized_nodes(params) -> list[tuple[tuple, str, Any]]:
  """``(path, kind, node)`` of every quantised kernel in ``params``."""
  found = []

  def visit(path, name, value):
    if kind_of(name) and isinstance(value, Mapping):
      found.append(((*path, name), kind_of(name), value))
    return [(name, value)]
  _walk(params, visit)
  return found


def float_like(abstract_params):
  """``abstract_params`` with each quantised node as the float32 ``kernel`` it holds
  (a ``jax.ShapeDtypeStruct``): the tree a float checkpoint is read into."""
  def fn(path, name, value):
    kind = kind_of(name)
    if kind and isinstance(value, Mapping):
      shape = tuple(value["codes"].shape)
      if kind == "nf4":
        shape = (*shape[:-1], shape[-1] * 2)
      return [("kernel", jax.ShapeDtypeStruct(shape, jnp.float32))]
    return [(name, value)]
  return _walk(abstract_params, fn)


def quantize_like(params, abstract_params):
  """Float ``params`` quantised where ``abstract_params`` holds a quantised node (the
  rest returned as they are)."""
  want = {path[:-1]: kind for path, kind, _ in quantized_nodes(abstract_params)}

  def swap(path, name, value):
    if name == "kernel" and tuple(path) in want:
      kind = want[tuple(path)]
      return [(node_name(kind), quantize(value, kind))]
    return [(name, value)]
  return _walk(params, swap)


def dequantize_tree(params):
  """``params`` with every quantised node back as a float32 ``kernel`` (host numpy)."""
  def fn(path, name, value):
    kind = kind_of(name)
    if kind and isinstance(value, Mapping):
      return [("kernel", np.asarray(dequantize(value, kind)))]
    return [(name, value)]
  return _walk(params, fn)


def report(float_params, quantized_params) -> dict:
  """How well the quantised base matches the float one: matrices, their parameters,
  bytes stored, bytes per parameter and the relative RMS error
  ``||W - deq(Q(W))|| / ||W||`` over all of them."""
  dense = dict(_kernels(float_params))
  num = den = 0.0
  count = stored = 0
  for path, kind, node in quantized_nodes(quantized_params):
    w = np.asarray(dense[path[:-1]], np.float64)
    d = np.asarray(dequantize(node, kind), np.float64)
    num += float(np.sum((w - d) ** 2))
    den += float(np.sum(w ** 2))
    count += w.size
    stored += sum(np.asarray(x).nbytes for x in node.values())
  if not count:
    return {}
  return {"matrices": len(quantized_nodes(quantized_params)), "parameters": count,
          "bytes": stored, "bytes_per_parameter": stored / count,
          "relative_rms_error": math.sqrt(num / den) if den else 0.0}


def _kernels(params, path=()):
  for name, value in params.items():
    if isinstance(value, Mapping):
      yield from _kernels(value, (*path, name))
    elif name == "kernel":
      yield path, value


def parameter_count(params) -> int:
  """The parameters ``params`` (arrays or shapes) hold: a quantised kernel counts its
  values (NF4 codes hold two a byte), not its stored arrays."""
  from phijax.model.sharding import path_names
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = path_names(path)
    kind = kind_of(names[-2]) if len(names) >= 2 else None
    size = int(np.prod(leaf.shape))
    if kind is None:
      total += size
    elif names[-1] == "codes":  # the scales belong to the kernel's count
      total += size * (2 if kind == "nf4" else 1)
  return total

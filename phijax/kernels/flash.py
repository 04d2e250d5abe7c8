"""Backend-neutral front end of the flash-attention kernels.

Each backend module (``gpu_triton``, ``tpu_mosaic``; a Mosaic GPU variant would be
a third) provides a ``Backend``: how to choose and check block sizes, how far to
pad head_dim, and two functions on padded ``[B, T, H, D]`` arrays:

  forward(q, k, v, q_seg, kv_seg, problem) -> (out [B,Tp,H,Dp], lse [B,H,Tp] f32)
  backward(q, k, v, q_seg, kv_seg, lse, delta, dout, problem) -> (dq, dk, dv)

This module does the rest once for all backends: input checks with clear
messages, padding of sequence lengths to block multiples and of head_dim to what
the backend can tile, the ``jax.custom_vjp`` wiring, and the FlashAttention-2
``delta = rowsum(out * dout)`` (minus the lse cotangent, so that gradients through
the returned log-sum-exp are exact too).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp

from phijax.kernels.geometry import MaskSpec


class UnsupportedAttention(ValueError):
  """A shape, dtype or option that a kernel cannot take (the message says which)."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """Everything static about one kernel call, after padding (hashable)."""
  mask: MaskSpec
  scale: float
  groups: int  # q heads per kv head (GQA)
  blocks: Any  # the backend's resolved block sizes
  interpret: bool


@dataclasses.dataclass(frozen=True)
class Backend:
  name: str
  dtypes: tuple  # accepted input dtypes
  max_head_dim: int
  padded_head_dim: Callable[[int], int]
  # (block_sizes or None, T, S, D, dtype) -> resolved block sizes; raises
  # UnsupportedAttention for sizes the hardware cannot tile.
  resolve_blocks: Callable[..., Any]
  # resolved blocks -> (multiple for padded T, multiple for padded S)
  seq_multiples: Callable[[Any], tuple]
  forward: Callable[..., tuple]
  backward: Callable[..., tuple]


def split_segment_ids(segment_ids):
  """One ``[B, T]`` array (self-attention) or a ``(q, kv)`` pair -> (q_seg, kv_seg)."""
  if segment_ids is None:
    return None, None
  if isinstance(segment_ids, (tuple, list)):
    if len(segment_ids) != 2:
      raise ValueError("segment_ids must be one [B, T] array or a (q_segment_ids, "
                       f"kv_segment_ids) pair, got a sequence of {len(segment_ids)}")
    return segment_ids[0], segment_ids[1]
  return segment_ids, segment_ids


def unsupported_reason(backend: Backend, q, k, v, *, window=None, segment_ids=None,
                       block_sizes=None):
  """Why ``backend`` cannot run this call (a one-line string), or None if it can."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    return f"needs [batch, length, heads, head_dim] q/k/v, got {q.shape}, {k.shape}, {v.shape}"
  B, T, H, D = q.shape
  _, S, K, _ = k.shape
  if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D or H % K:
    return (f"q {q.shape} and k/v {k.shape}/{v.shape} do not agree (same batch and "
            "head_dim, kv heads dividing q heads)")
  dtypes = {jnp.dtype(x.dtype) for x in (q, k, v)}
  if len(dtypes) != 1:
    return f"q, k and v must share one dtype, got {sorted(str(d) for d in dtypes)}"
  dtype = dtypes.pop()
  if dtype not in [jnp.dtype(d) for d in backend.dtypes]:
    return (f"dtype {dtype} is not supported (use one of "
            f"{', '.join(jnp.dtype(d).name for d in backend.dtypes)})")
  if D > backend.max_head_dim:
    return f"head_dim {D} is larger than the supported {backend.max_head_dim}"
  if window is not None and _as_window(window) is None:
    return f"window must be a positive int or None, got {window!r}"
  q_seg, kv_seg = split_segment_ids(segment_ids)
  if q_seg is not None:
    if tuple(q_seg.shape) != (B, T) or tuple(kv_seg.shape) != (B, S):
      return (f"segment ids must be [batch, length]: expected {(B, T)} and {(B, S)}, "
              f"got {tuple(q_seg.shape)} and {tuple(kv_seg.shape)}")
    if not (jnp.issubdtype(q_seg.dtype, jnp.integer)
            and jnp.issubdtype(kv_seg.dtype, jnp.integer)):
      return f"segment ids must be integers, got {q_seg.dtype} and {kv_seg.dtype}"
  try:
    backend.resolve_blocks(block_sizes, T, S, D, dtype)
  except UnsupportedAttention as e:
    return str(e)
  return None


def _as_window(window):
  """A positive Python int from an int-like (numpy ints too), else None."""
  try:
    w = operator.index(window)
  except TypeError:
    return None
  return w if w > 0 and not isinstance(window, bool) else None


def _round_up(x, m):
  return -(-x // m) * m


def _pad_to(x, axis, size):
  if x.shape[axis] == size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


def make_core(backend: Backend):
  """The differentiable kernel on padded arrays: ``core(q, k, v, q_seg, kv_seg, problem)``."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
  def core(q, k, v, q_seg, kv_seg, problem):
    return backend.forward(q, k, v, q_seg, kv_seg, problem)

  def core_fwd(q, k, v, q_seg, kv_seg, problem):
    out, lse = backend.forward(q, k, v, q_seg, kv_seg, problem)
    return (out, lse), (q, k, v, q_seg, kv_seg, out, lse)

  def core_bwd(problem, residuals, cotangents):
    q, k, v, q_seg, kv_seg, out, lse = residuals
    dout, dlse = cotangents
    # d lse_i / d s_ij = p_ij, so an lse cotangent enters exactly like -delta_i.
    delta_BxTxH = jnp.einsum("bthd,bthd->bth", out.astype(jnp.float32),
                             dout.astype(jnp.float32))
    delta_BxHxT = jnp.transpose(delta_BxTxH, (0, 2, 1)) - dlse.astype(jnp.float32)
    dq, dk, dv = backend.backward(q, k, v, q_seg, kv_seg, lse, delta_BxHxT,
                                  dout.astype(q.dtype), problem)
    return dq, dk, dv, None, None

  core.defvjp(core_fwd, core_bwd)
  return core


_CORES: dict = {}


def flash_attention(backend: Backend, q, k, v, *, causal=True, segment_ids=None,
                    window=None, scale=None, block_sizes=None, interpret=False,
                    return_lse=False):
  """Flash attention of ``[B, T, H, D]`` q over ``[B, S, K, D]`` k/v on ``backend``.

  Returns ``out [B, T, H, D]`` (q's dtype) and, with ``return_lse``, the natural-log
  sum-exp of the scaled scores ``[B, H, T]`` float32 (``-inf`` for a query that
  sees no key; its output row is zero). Raises ``UnsupportedAttention`` with the
  reason for inputs the backend cannot take.
  """
  reason = unsupported_reason(backend, q, k, v, window=window, segment_ids=segment_ids,
                              block_sizes=block_sizes)
  if reason:
    raise UnsupportedAttention(f"{backend.name} attention: {reason}")
  B, T, H, D = q.shape
  S, K = k.shape[1], k.shape[2]
  blocks = backend.resolve_blocks(block_sizes, T, S, D, jnp.dtype(q.dtype))
  t_mult, s_mult = backend.seq_multiples(blocks)
  Tp, Sp, Dp = _round_up(T, t_mult), _round_up(S, s_mult), backend.padded_head_dim(D)
  q_seg, kv_seg = split_segment_ids(segment_ids)
  problem = Problem(
      mask=MaskSpec(causal=bool(causal), q_len=T, kv_len=S, segmented=q_seg is not None,
                    window=None if window is None else _as_window(window)),
      scale=float(1.0 / math.sqrt(D) if scale is None else scale),
      groups=H // K, blocks=blocks, interpret=bool(interpret))
  # Padded keys are masked by position and padded query rows are dropped below;
  # zero padding keeps every padded score finite.
  q_p = _pad_to(_pad_to(q, 1, Tp), 3, Dp)
  k_p = _pad_to(_pad_to(k, 1, Sp), 3, Dp)
  v_p = _pad_to(_pad_to(v, 1, Sp), 3, Dp)
  if q_seg is not None:
    q_seg = _pad_to(jnp.asarray(q_seg, jnp.int32), 1, Tp)
    kv_seg = _pad_to(jnp.asarray(kv_seg, jnp.int32), 1, Sp)
  core = _CORES.get(backend.name)
  if core is None:
    core = _CORES[backend.name] = make_core(backend)
  out_p, lse_p = core(q_p, k_p, v_p, q_seg, kv_seg, problem)
  out = out_p[:, :T, :, :D]
  if return_lse:
    return out, lse_p[:, :, :T]
  return out

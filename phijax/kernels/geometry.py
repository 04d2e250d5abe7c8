"""Which (query block, key block) tiles a flash-attention kernel must visit.

Backend-neutral: the GPU (Triton) and TPU (Mosaic) kernels both call these on
program ids inside the kernel (traced int32 scalars) and the tests call them on
Python ints. Everything is written with ``jnp.minimum``/``jnp.maximum`` and a
floor division of non-negative numbers, which lowers on both backends.

Masking rules (the same as ``phijax.model.attention.attention_mask``): query ``i`` sees
key ``j`` iff ``j <= i`` (causal), ``j > i - window`` (sliding window, Phi-3),
``j < kv_len`` (the key is not padding) and the segment ids match.

A tile is *visible* when at least one (query, key) pair in it may be visible; the
kernels skip the others. A visible tile is *full* when every pair in it is
visible, so the kernel can skip building the element mask. Ranges are returned as
``(lo, full_lo, full_hi, hi)``: blocks ``[lo, hi)`` are visible, blocks
``[full_lo, full_hi)`` are full, and ``lo <= full_lo <= full_hi <= hi``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

# Masked logits get this finite value (not -inf) so that max/exp of a row whose
# keys are all masked never computes inf - inf.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """What the mask depends on besides positions; static (hashable)."""
  causal: bool
  window: int | None
  q_len: int  # real (unpadded) number of queries
  kv_len: int  # real (unpadded) number of keys
  segmented: bool


def _fdiv(a, b: int):
  """Floor division of a non-negative int (Python or traced int32) by b > 0."""
  if isinstance(a, int):
    return a // b
  return lax.div(a, jnp.int32(b))


def _cdiv(a, b: int):
  return _fdiv(a + (b - 1), b)


def _max(a, b):
  if isinstance(a, int) and isinstance(b, int):
    return max(a, b)
  return jnp.maximum(a, b)


def _min(a, b):
  if isinstance(a, int) and isinstance(b, int):
    return min(a, b)
  return jnp.minimum(a, b)


def _where(cond, a, b):
  if isinstance(cond, bool):
    return a if cond else b
  # Strongly typed operands: the Triton lowering of select gives a weak-typed
  # Python int the predicate's type (i1).
  return jnp.where(cond, jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))


def _ordered(lo, full_lo, full_hi, hi):
  """Clamps so that ``lo <= full_lo <= full_hi <= hi`` (empty ranges allowed)."""
  hi = _max(hi, lo)
  full_lo = _min(_max(full_lo, lo), hi)
  full_hi = _min(_max(full_hi, full_lo), hi)
  return lo, full_lo, full_hi, hi


def kv_blocks_for_q_block(spec: MaskSpec, qi, block_q: int, block_k: int):
  """Key blocks that query block ``qi`` must visit: ``(lo, full_lo, full_hi, hi)``."""
  n_kv = _cdiv(spec.kv_len, block_k)  # blocks holding at least one real key
  r0 = qi * block_q  # first query row of the block
  # Last *real* row: padded rows produce discarded outputs, so they may see less.
  r1 = _max(_min(r0 + block_q, spec.q_len) - 1, r0)
  hi = n_kv
  lo = 0
  full_hi = spec.kv_len // block_k  # blocks without padded keys
  full_lo = 0
  if spec.causal:
    hi = _min(hi, _fdiv(r1, block_k) + 1)
    full_hi = _min(full_hi, _fdiv(r0 + 1, block_k))  # last key <= first row
  if spec.window is not None:
    w = spec.window
    lo = _fdiv(_max(r0 - w + 1, 0), block_k)
    full_lo = _cdiv(_max(r1 - w + 1, 0), block_k)  # first key > last row - w
  if spec.segmented:
    full_lo = full_hi = hi
  # A query block entirely in padding (possible when q is padded to a larger
  # block size than this kernel's) visits nothing.
  hi = _where(r0 < spec.q_len, hi, lo)
  return _ordered(lo, full_lo, full_hi, hi)


def q_blocks_for_kv_block(spec: MaskSpec, kj, block_q: int, block_k: int):
  """Query blocks that key block ``kj`` must visit: ``(lo, full_lo, full_hi, hi)``."""
  n_q = _cdiv(spec.q_len, block_q)
  c0 = kj * block_k  # first key of the block
  c1 = _max(_min(c0 + block_k, spec.kv_len) - 1, c0)  # last real key
  lo = 0
  hi = n_q
  full_lo = 0
  full_hi = n_q
  if spec.causal:
    lo = _fdiv(c0, block_q)
    full_lo = _cdiv(c1, block_q)  # first row >= last key
  if spec.window is not None:
    w = spec.window
    hi = _min(hi, _fdiv(c1 + w - 1, block_q) + 1)
    full_hi = _fdiv(c0 + w, block_q)  # last row < first key + w
  has_padding = c0 + block_k > spec.kv_len
  if spec.segmented:
    full_lo = full_hi = hi
  else:
    full_lo = _where(has_padding, hi, full_lo)
    full_hi = _where(has_padding, hi, full_hi)
  hi = _where(c0 < spec.kv_len, hi, lo)  # a key block entirely in padding
  return _ordered(lo, full_lo, full_hi, hi)


def element_mask(spec: MaskSpec, q_pos, kv_pos, q_seg=None, kv_seg=None):
  """Boolean visibility of broadcastable query/key positions (and segment ids)."""
  mask = None

  def both(a, b):
    return b if a is None else jnp.logical_and(a, b)

  if spec.causal:
    mask = both(mask, kv_pos <= q_pos)
  if spec.window is not None:
    mask = both(mask, kv_pos > q_pos - spec.window)
  mask = both(mask, kv_pos < spec.kv_len)
  if spec.segmented:
    mask = both(mask, q_seg == kv_seg)
  return mask

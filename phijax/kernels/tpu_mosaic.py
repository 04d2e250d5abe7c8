"""Flash attention for TPUs with Pallas' Mosaic TPU lowering.

The same algorithm, features and interface as ``gpu_triton``, written the way
Mosaic wants it: the key-block loop is the innermost (``arbitrary``) grid axis and
the online-softmax state lives in VMEM scratch, so Pallas pipelines the HBM->VMEM
copies of the next block behind the current one. A tile that the causal mask or
the sliding window hides is skipped with ``pl.when``, and its index map repeats
the previous block index so that no copy is issued for it either.

TPU tiling: q/k/v are transposed to ``[B, H, T, D]`` so that each block's last two
dims are ``(block, head_dim)``; blocks are multiples of 128 (the lane width; the
log-sum-exp and segment ids travel lane- or sublane-broadcast as in JAX's splash
attention); head_dim is taken whole when it is <= 128 or a multiple of 128 and
padded to the next multiple of 128 otherwise. A block size that is not a multiple
of 128 is refused with a clear ``UnsupportedAttention`` (``dot_product_attention``
with ``impl="auto"`` then falls back to XLA with a warning).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from phijax.kernels import flash
from phijax.kernels.geometry import (MASK_VALUE, element_mask, kv_blocks_for_q_block,
                                     q_blocks_for_kv_block)

LANES = 128
SUBLANES = 8
NT = (((1,), (1,)), ((), ()))  # a @ b.T
NN = (((1,), (0,)), ((), ()))  # a @ b


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes (multiples of 128) of the forward and the two backward kernels.

  ``None`` fields default to 512 (128 blocks are too small on v5e, jax#24633);
  every block is clamped to the sequence length rounded up to 128.
  """
  block_q: int | None = None
  block_k: int | None = None
  block_q_dkv: int | None = None
  block_k_dkv: int | None = None
  block_q_dq: int | None = None
  block_k_dq: int | None = None


DEFAULT_BLOCK = 512


def _round_up(x, m):
  return -(-x // m) * m


def _padded_head_dim(d: int) -> int:
  return d if d <= LANES or d % LANES == 0 else _round_up(d, LANES)


def _resolve_blocks(block_sizes, T, S, D, dtype):
  del D, dtype
  given = block_sizes or BlockSizes()
  fields = {}
  for f in dataclasses.fields(BlockSizes):
    b = getattr(given, f.name)
    b = DEFAULT_BLOCK if b is None else b
    if not isinstance(b, int) or b <= 0 or b % LANES:
      raise flash.UnsupportedAttention(
          f"{f.name}={b!r}: TPU block sizes must be positive multiples of {LANES} "
          "(the TPU lane width)")
    length = T if f.name.startswith("block_q") else S
    fields[f.name] = min(b, _round_up(length, LANES))
  return BlockSizes(**fields)


def _seq_multiples(blocks: BlockSizes):
  return (math.lcm(blocks.block_q, blocks.block_q_dkv, blocks.block_q_dq),
          math.lcm(blocks.block_k, blocks.block_k_dkv, blocks.block_k_dq))


def _dot(a, b, dims):
  precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32,
                         precision=precision)


def _lanes_to(x, d):
  """A lane-broadcast ``[rows, 128]`` value as ``[rows, d]``."""
  if d == LANES:
    return x
  return jnp.tile(x, (1, -(-d // LANES)))[:, :d]


def _clamped(j, lo, hi, n):
  """Block index to fetch at grid step j: j inside [lo, hi), else the nearest
  visible one, so that a skipped step repeats the previous fetch (no new DMA)."""
  last = jnp.maximum(jnp.asarray(hi, jnp.int32) - 1, lo)
  return jnp.clip(jnp.clip(j, lo, last), 0, n - 1)


def _in_range(j, lo, hi):
  return jnp.logical_and(j >= lo, j < hi)


def _visit(j, lo, hi, full_lo, full_hi, step):
  """Runs ``step`` on a visible tile: without the element mask when fully visible."""
  visible = _in_range(j, lo, hi)
  full = _in_range(j, full_lo, full_hi)
  pl.when(jnp.logical_and(visible, full))(lambda: step(masked=False))
  pl.when(jnp.logical_and(visible, jnp.logical_not(full)))(lambda: step(masked=True))


def _to_bhtd(x):
  return jnp.transpose(x, (0, 2, 1, 3))


# --------------------------------------------------------------------------- forward

def _forward_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref,
                    m_scr, l_scr, acc_scr, *, problem: flash.Problem, n_kv: int):
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q, blocks.block_k
  i, j = pl.program_id(2), pl.program_id(3)
  d = acc_scr.shape[-1]
  lo, full_lo, full_hi, hi = kv_blocks_for_q_block(spec, i, bq, bk)

  @pl.when(j == 0)
  def _init():
    m_scr[...] = jnp.full(m_scr.shape, MASK_VALUE, jnp.float32)
    l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
    acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

  def step(masked):
    s = _dot(q_ref[...], k_ref[...], NT) * problem.scale  # [bq, bk]
    if masked:
      q_pos = i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
      kv_pos = j * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
      q_ids = kv_ids = None
      if spec.segmented:
        q_ids = jnp.tile(q_seg_ref[...], (1, bk // LANES))  # [bq, bk]
        kv_ids = kv_seg_ref[:1, :]  # [1, bk]
      mask = element_mask(spec, q_pos, kv_pos, q_ids, kv_ids)
      s = jnp.where(mask, s, MASK_VALUE)
    m_prev, l_prev = m_scr[...], l_scr[...]  # [bq, 128], lane-broadcast
    m_next = jnp.maximum(m_prev, jnp.max(s, axis=1)[:, None])
    p = jnp.exp(s - jnp.tile(m_next, (1, bk // LANES)))
    if masked:  # a row with every key masked so far must add nothing
      p = jnp.where(mask, p, 0.0)
    alpha = jnp.exp(m_prev - m_next)
    l_scr[...] = alpha * l_prev + lax.broadcast_in_dim(jnp.sum(p, axis=1), l_prev.shape,
                                                       (0,))
    m_scr[...] = m_next
    v = v_ref[...]
    acc_scr[...] = acc_scr[...] * _lanes_to(alpha, d) + _dot(p.astype(v.dtype), v, NN)

  _visit(j, lo, hi, full_lo, full_hi, step)

  @pl.when(j == n_kv - 1)
  def _finish():
    l = l_scr[...]
    seen = l > 0.0  # False only for a query that sees no key at all
    l_safe = jnp.where(seen, l, 1.0)
    o_ref[...] = (acc_scr[...] / _lanes_to(l_safe, d)).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m_scr[...] + jnp.log(l_safe), -jnp.inf)


def _forward(q, k, v, q_seg, kv_seg, problem: flash.Problem):
  B, Tp, H, Dp = q.shape
  Sp, K = k.shape[1], k.shape[2]
  G = problem.groups
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q, blocks.block_k
  n_q, n_kv = Tp // bq, Sp // bk

  def kv_index(b, h, i, j):
    lo, _, _, hi = kv_blocks_for_q_block(spec, i, bq, bk)
    return b, lax.div(h, G), _clamped(j, lo, hi, n_kv), 0

  def kv_seg_index(b, h, i, j):
    return b, 0, kv_index(b, h, i, j)[2]

  in_specs = [
      pl.BlockSpec((None, None, bq, Dp), lambda b, h, i, j: (b, h, i, 0)),
      pl.BlockSpec((None, None, bk, Dp), kv_index),
      pl.BlockSpec((None, None, bk, Dp), kv_index),
  ]
  if spec.segmented:
    in_specs += [pl.BlockSpec((None, bq, LANES), lambda b, h, i, j: (b, i, 0)),
                 pl.BlockSpec((None, SUBLANES, bk), kv_seg_index)]
    q_seg = jnp.broadcast_to(q_seg[:, :, None], (B, Tp, LANES))
    kv_seg = jnp.broadcast_to(kv_seg[:, None, :], (B, SUBLANES, Sp))
  else:
    in_specs += [None, None]
  out, lse = pl.pallas_call(
      functools.partial(_forward_kernel, problem=problem, n_kv=n_kv),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0,
          grid=(B, H, n_q, n_kv),
          in_specs=in_specs,
          out_specs=[
              pl.BlockSpec((None, None, bq, Dp), lambda b, h, i, j: (b, h, i, 0)),
              pl.BlockSpec((None, None, bq, LANES), lambda b, h, i, j: (b, h, i, 0)),
          ],
          scratch_shapes=[pltpu.VMEM((bq, LANES), jnp.float32),
                          pltpu.VMEM((bq, LANES), jnp.float32),
                          pltpu.VMEM((bq, Dp), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct((B, H, Tp, Dp), q.dtype),
                 jax.ShapeDtypeStruct((B, H, Tp, LANES), jnp.float32)],
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      interpret=problem.interpret,
      name="phijax_flash_fwd",
  )(_to_bhtd(q), _to_bhtd(k), _to_bhtd(v), q_seg, kv_seg)
  return _to_bhtd(out), lse[..., 0]


# -------------------------------------------------------------------------- backward

def _guard_lse(lse):
  """A row that saw no key (lse -inf) gets +inf, so that its p = exp(s - lse) = 0."""
  return jnp.where(lse == -jnp.inf, jnp.inf, lse)


def _dq_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, lse_ref, delta_ref, do_ref,
               dq_ref, dq_scr, *, problem: flash.Problem, n_kv: int):
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q_dq, blocks.block_k_dq
  i, j = pl.program_id(2), pl.program_id(3)
  lo, full_lo, full_hi, hi = kv_blocks_for_q_block(spec, i, bq, bk)

  @pl.when(j == 0)
  def _init():
    dq_scr[...] = jnp.zeros(dq_scr.shape, jnp.float32)

  def step(masked):
    k = k_ref[...]
    s = _dot(q_ref[...], k, NT) * problem.scale  # [bq, bk]
    p = jnp.exp(s - _guard_lse(jnp.expand_dims(lse_ref[0], -1)))
    if masked:
      q_pos = i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
      kv_pos = j * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
      q_ids = kv_ids = None
      if spec.segmented:
        q_ids = jnp.tile(q_seg_ref[...], (1, bk // LANES))
        kv_ids = kv_seg_ref[:1, :]
      p = jnp.where(element_mask(spec, q_pos, kv_pos, q_ids, kv_ids), p, 0.0)
    dp = _dot(do_ref[...], v_ref[...], NT)
    ds = p * (dp - jnp.expand_dims(delta_ref[0], -1))
    dq_scr[...] += _dot(ds.astype(k.dtype), k, NN)

  _visit(j, lo, hi, full_lo, full_hi, step)

  @pl.when(j == n_kv - 1)
  def _finish():
    dq_ref[...] = (dq_scr[...] * problem.scale).astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, lse_ref, delta_ref, do_ref,
                dk_ref, dv_ref, dk_scr, dv_scr, *, problem: flash.Problem, n_q: int):
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q_dkv, blocks.block_k_dkv
  j, g, i = pl.program_id(2), pl.program_id(3), pl.program_id(4)
  lo, full_lo, full_hi, hi = q_blocks_for_kv_block(spec, j, bq, bk)

  @pl.when(jnp.logical_and(g == 0, i == 0))
  def _init():
    dk_scr[...] = jnp.zeros(dk_scr.shape, jnp.float32)
    dv_scr[...] = jnp.zeros(dv_scr.shape, jnp.float32)

  def step(masked):
    # Transposed scores [bk, bq]: dK and dV are then plain (bk, bq) @ (bq, D) dots.
    q, do = q_ref[...], do_ref[...]
    s_t = _dot(k_ref[...], q, NT) * problem.scale
    p_t = jnp.exp(s_t - _guard_lse(lse_ref[:1, :]))
    if masked:
      q_pos = i * bq + lax.broadcasted_iota(jnp.int32, (bk, bq), 1)
      kv_pos = j * bk + lax.broadcasted_iota(jnp.int32, (bk, bq), 0)
      q_ids = kv_ids = None
      if spec.segmented:
        q_ids = q_seg_ref[:1, :]  # [1, bq]
        kv_ids = jnp.tile(kv_seg_ref[...], (1, bq // LANES))  # [bk, bq]
      p_t = jnp.where(element_mask(spec, q_pos, kv_pos, q_ids, kv_ids), p_t, 0.0)
    dv_scr[...] += _dot(p_t.astype(do.dtype), do, NN)
    dp_t = _dot(v_ref[...], do, NT)
    ds_t = p_t * (dp_t - delta_ref[:1, :])
    dk_scr[...] += _dot(ds_t.astype(q.dtype), q, NN)

  visible = _in_range(i, lo, hi)
  full = _in_range(i, full_lo, full_hi)
  pl.when(jnp.logical_and(visible, full))(lambda: step(masked=False))
  pl.when(jnp.logical_and(visible, jnp.logical_not(full)))(lambda: step(masked=True))

  @pl.when(jnp.logical_and(g == problem.groups - 1, i == n_q - 1))
  def _finish():
    dk_ref[...] = (dk_scr[...] * problem.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _backward(q, k, v, q_seg, kv_seg, lse, delta, dout, problem: flash.Problem):
  B, Tp, H, Dp = q.shape
  Sp, K = k.shape[1], k.shape[2]
  G = problem.groups
  spec, blocks = problem.mask, problem.blocks
  q_t, k_t, v_t, do_t = _to_bhtd(q), _to_bhtd(k), _to_bhtd(v), _to_bhtd(dout)
  segmented = spec.segmented

  # dQ: grid (batch, q head, query block, key block), key blocks innermost.
  bq, bk = blocks.block_q_dq, blocks.block_k_dq
  n_q, n_kv = Tp // bq, Sp // bk

  def kv_index(b, h, i, j):
    lo, _, _, hi = kv_blocks_for_q_block(spec, i, bq, bk)
    return b, lax.div(h, G), _clamped(j, lo, hi, n_kv), 0

  q_block = pl.BlockSpec((None, None, bq, Dp), lambda b, h, i, j: (b, h, i, 0))
  row_block = pl.BlockSpec((None, None, 1, bq), lambda b, h, i, j: (b, h, 0, i))
  in_specs = [q_block, pl.BlockSpec((None, None, bk, Dp), kv_index),
              pl.BlockSpec((None, None, bk, Dp), kv_index)]
  seg_args = [None, None]
  if segmented:
    in_specs += [
        pl.BlockSpec((None, bq, LANES), lambda b, h, i, j: (b, i, 0)),
        pl.BlockSpec((None, SUBLANES, bk),
                     lambda b, h, i, j: (b, 0, kv_index(b, h, i, j)[2]))]
    seg_args = [jnp.broadcast_to(q_seg[:, :, None], (B, Tp, LANES)),
                jnp.broadcast_to(kv_seg[:, None, :], (B, SUBLANES, Sp))]
  else:
    in_specs += [None, None]
  in_specs += [row_block, row_block, q_block]
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, problem=problem, n_kv=n_kv),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(B, H, n_q, n_kv), in_specs=in_specs,
          out_specs=q_block, scratch_shapes=[pltpu.VMEM((bq, Dp), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct((B, H, Tp, Dp), q.dtype),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
      interpret=problem.interpret,
      name="phijax_flash_bwd_dq",
  )(q_t, k_t, v_t, *seg_args, lse[:, :, None, :], delta[:, :, None, :], do_t)

  # dK/dV: grid (batch, kv head, key block, q head in group, query block); the
  # (group, query block) axes are reductions into the VMEM accumulators.
  bq, bk = blocks.block_q_dkv, blocks.block_k_dkv
  n_q, n_kv = Tp // bq, Sp // bk

  def q_index(b, kh, j, g, i):
    lo, _, _, hi = q_blocks_for_kv_block(spec, j, bq, bk)
    return b, kh * G + g, _clamped(i, lo, hi, n_q), 0

  def row_index(b, kh, j, g, i):
    qi = q_index(b, kh, j, g, i)
    return qi[0], qi[1], 0, qi[2]

  q_block = pl.BlockSpec((None, None, bq, Dp), q_index)
  kv_block = pl.BlockSpec((None, None, bk, Dp), lambda b, kh, j, g, i: (b, kh, j, 0))
  row_block = pl.BlockSpec((None, None, SUBLANES, bq), row_index)
  in_specs = [q_block, kv_block, kv_block]
  seg_args = [None, None]
  if segmented:
    in_specs += [
        pl.BlockSpec((None, SUBLANES, bq),
                     lambda b, kh, j, g, i: (b, 0, q_index(b, kh, j, g, i)[2])),
        pl.BlockSpec((None, bk, LANES), lambda b, kh, j, g, i: (b, j, 0))]
    seg_args = [jnp.broadcast_to(q_seg[:, None, :], (B, SUBLANES, Tp)),
                jnp.broadcast_to(kv_seg[:, :, None], (B, Sp, LANES))]
  else:
    in_specs += [None, None]
  in_specs += [row_block, row_block, q_block]
  rows = lambda x: jnp.broadcast_to(x[:, :, None, :], (B, H, SUBLANES, Tp))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, problem=problem, n_q=n_q),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(B, K, n_kv, G, n_q), in_specs=in_specs,
          out_specs=[kv_block, kv_block],
          scratch_shapes=[pltpu.VMEM((bk, Dp), jnp.float32),
                          pltpu.VMEM((bk, Dp), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct((B, K, Sp, Dp), k.dtype),
                 jax.ShapeDtypeStruct((B, K, Sp, Dp), v.dtype)],
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel", "arbitrary",
                               "arbitrary")),
      interpret=problem.interpret,
      name="phijax_flash_bwd_dkv",
  )(q_t, k_t, v_t, *seg_args, rows(lse), rows(delta), do_t)
  return _to_bhtd(dq), _to_bhtd(dk), _to_bhtd(dv)


BACKEND = flash.Backend(
    name="pallas_tpu",
    dtypes=(jnp.float32, jnp.bfloat16),
    max_head_dim=256,
    padded_head_dim=_padded_head_dim,
    resolve_blocks=_resolve_blocks,
    seq_multiples=_seq_multiples,
    forward=_forward,
    backward=_backward,
)


def flash_attention(q, k, v, *, causal=True, segment_ids=None, window=None, scale=None,
                    block_sizes: BlockSizes | None = None, interpret=False,
                    return_lse=False):
  """TPU flash attention; see ``phijax.kernels.flash.flash_attention``."""
  return flash.flash_attention(BACKEND, q, k, v, causal=causal, segment_ids=segment_ids,
                               window=window, scale=scale, block_sizes=block_sizes,
                               interpret=interpret, return_lse=return_lse)


def unsupported_reason(q, k, v, *, window=None, segment_ids=None, block_sizes=None):
  """Why this kernel cannot take the call (one line), or None."""
  return flash.unsupported_reason(BACKEND, q, k, v, window=window,
                                  segment_ids=segment_ids, block_sizes=block_sizes)

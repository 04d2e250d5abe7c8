"""Flash attention for NVIDIA GPUs (A100/H100) with Pallas' Triton lowering.

FlashAttention-2: the forward keeps one query block in registers and streams key
blocks through an online softmax (base-2 exponentials, fp32 accumulation), writing
the output and the log-sum-exp. The backward is two kernels: dK/dV (one key block
per program, looping over the q heads of its GQA group and the query blocks that
see it, so k/v are never repeated and no atomics are needed), then dQ (one query
block per program, looping over key blocks).

Tiles that the causal mask or the sliding window hide are never visited; tiles
that are fully visible skip the element mask (``geometry``). Arrays arrive padded
by ``flash.py``: sequence lengths to block multiples, head_dim to a power of two
(Triton tensors must have power-of-two sizes, and ``tl.dot`` needs every dim >= 16).

Only this module knows about Triton; a Mosaic GPU variant (JAX 0.11+ moves Pallas
GPU there) would be a sibling module with its own ``BACKEND``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from phijax.kernels import flash
from phijax.kernels.geometry import (MASK_VALUE, element_mask, kv_blocks_for_q_block,
                                     q_blocks_for_kv_block)

LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)
MIN_DIM = 16  # smallest size tl.dot takes on every dim


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes (powers of two, >= 16) and launch settings of the three kernels.

  ``None`` fields take ``default_block_sizes(head_dim, dtype)``; every block is also
  clamped to the (padded) sequence length, so short sequences work unchanged.
  """
  block_q: int | None = None  # forward
  block_k: int | None = None
  block_q_dkv: int | None = None  # backward dK/dV
  block_k_dkv: int | None = None
  block_q_dq: int | None = None  # backward dQ
  block_k_dq: int | None = None
  num_warps: int | None = None  # forward
  num_warps_bwd: int | None = None
  num_stages: int | None = None


def default_block_sizes(head_dim: int, dtype=jnp.bfloat16) -> BlockSizes:
  """Defaults per (padded) head_dim and dtype, after the Triton FA2 tutorial's picks.

  Larger head dims hold bigger accumulators in registers, so they get smaller key
  blocks in the backward and more warps; float32 tiles take twice the shared
  memory, so their query blocks are halved (D=128 float32 would otherwise need
  ~164 KB, the A100 limit). Tune with ``benchmarks/attention.py``.
  """
  d = _padded_head_dim(head_dim)
  if d <= 64:
    blocks = BlockSizes(128, 64, 32, 128, 128, 32, num_warps=4, num_warps_bwd=4,
                        num_stages=3)
  else:
    blocks = BlockSizes(128, 64, 32, 64, 64, 32, num_warps=8, num_warps_bwd=4,
                        num_stages=2)
  if jnp.dtype(dtype).itemsize == 4:
    blocks = dataclasses.replace(blocks, block_q=64, block_k_dkv=blocks.block_k_dkv // 2,
                                 block_q_dq=blocks.block_q_dq // 2)
  return blocks


def _padded_head_dim(d: int) -> int:
  return max(MIN_DIM, pl.next_power_of_2(d))


def _is_pow2(n) -> bool:
  return isinstance(n, int) and n >= 1 and n & (n - 1) == 0


def _resolve_blocks(block_sizes, T, S, D, dtype):
  """Fills defaults, checks, and clamps blocks to the padded sequence lengths."""
  base = default_block_sizes(D, dtype)
  given = block_sizes or BlockSizes()
  fields = {f.name: getattr(given, f.name) if getattr(given, f.name) is not None
            else getattr(base, f.name) for f in dataclasses.fields(BlockSizes)}
  for name in ("block_q", "block_k", "block_q_dkv", "block_k_dkv", "block_q_dq",
               "block_k_dq"):
    b = fields[name]
    if not _is_pow2(b) or b < MIN_DIM:
      raise flash.UnsupportedAttention(
          f"{name}={b!r}: GPU block sizes must be powers of two >= {MIN_DIM} "
          "(Triton tensor shapes and tl.dot limits)")
    length = T if name.startswith("block_q") else S
    fields[name] = min(b, max(MIN_DIM, pl.next_power_of_2(length)))
  return BlockSizes(**fields)


def _seq_multiples(blocks: BlockSizes):
  # Powers of two: the largest block is a multiple of the others.
  return (max(blocks.block_q, blocks.block_q_dkv, blocks.block_q_dq),
          max(blocks.block_k, blocks.block_k_dkv, blocks.block_k_dq))


def _dot(a, b, *, trans_b=False):
  """``a @ b`` (or ``a @ b.T``) with fp32 accumulation; exact fp32 for fp32 inputs.

  Triton would use TF32 for float32 under the default precision; HIGHEST keeps
  float32 inputs at float32 accuracy (~1e-6 from the XLA reference in interpret mode).
  """
  precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return plgpu.dot(a, b, trans_b=trans_b, precision=precision)


# --------------------------------------------------------------------------- forward

def _tile_mask(spec, q_pos, q_seg, kv_seg_ref, kb, bk):
  """Element mask of the [bq, bk] tile of key block ``kb`` (forward and dQ share it)."""
  kv_pos = kb * bk + jnp.arange(bk)
  kv_seg = kv_seg_ref[pl.ds(kb * bk, bk)] if spec.segmented else None
  return element_mask(spec, q_pos[:, None], kv_pos[None, :],
                      None if q_seg is None else q_seg[:, None],
                      None if kv_seg is None else kv_seg[None, :])


def _forward_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref, *,
                    problem: flash.Problem):
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q, blocks.block_k
  qi = pl.program_id(0)
  q = q_ref[...]  # [bq, Dp], stays in registers
  d_pad = q.shape[-1]
  q_pos = qi * bq + jnp.arange(bq)
  q_seg = q_seg_ref[pl.ds(qi * bq, bq)] if spec.segmented else None
  qk_scale = problem.scale * LOG2_E  # scores in base-2 units

  def body(kb, carry, masked):
    acc, m_prev, l_prev = carry
    kv_slice = pl.ds(kb * bk, bk)
    k = k_ref[kv_slice, :]
    s = _dot(q, k, trans_b=True) * qk_scale  # [bq, bk] f32
    if masked:
      mask = _tile_mask(spec, q_pos, q_seg, kv_seg_ref, kb, bk)
      s = jnp.where(mask, s, MASK_VALUE)
    m_next = jnp.maximum(m_prev, jnp.max(s, axis=1))
    p = jnp.exp2(s - m_next[:, None])
    if masked:  # a row with every key masked so far must add nothing
      p = jnp.where(mask, p, 0.0)
    correction = jnp.exp2(m_prev - m_next)
    l_next = l_prev * correction + jnp.sum(p, axis=1)
    v = v_ref[kv_slice, :]
    acc = acc * correction[:, None] + _dot(p.astype(v.dtype), v)
    return acc, m_next, l_next

  lo, full_lo, full_hi, hi = kv_blocks_for_q_block(spec, qi, bq, bk)
  carry = (jnp.zeros((bq, d_pad), jnp.float32),
           jnp.full((bq,), MASK_VALUE, jnp.float32),
           jnp.zeros((bq,), jnp.float32))
  carry = lax.fori_loop(lo, full_lo, functools.partial(body, masked=True), carry)
  carry = lax.fori_loop(full_lo, full_hi, functools.partial(body, masked=False), carry)
  carry = lax.fori_loop(full_hi, hi, functools.partial(body, masked=True), carry)
  acc, m, l = carry
  seen = l > 0.0  # False only for a query that sees no key at all
  l_safe = jnp.where(seen, l, 1.0)
  o_ref[...] = (acc / l_safe[:, None]).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(seen, m * LN_2 + jnp.log(l_safe), -jnp.inf)


def _forward(q, k, v, q_seg, kv_seg, problem: flash.Problem):
  B, Tp, H, Dp = q.shape
  Sp = k.shape[1]
  G = problem.groups
  blocks = problem.blocks
  bq = blocks.block_q
  full_q = pl.BlockSpec((None, Tp), lambda i, b, h: (b, 0))
  full_kv = pl.BlockSpec((None, Sp), lambda i, b, h: (b, 0))
  seg_specs = [full_q, full_kv] if problem.mask.segmented else [None, None]
  return pl.pallas_call(
      functools.partial(_forward_kernel, problem=problem),
      grid=(Tp // bq, B, H),
      in_specs=[
          pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0)),
          # GQA: q head h reads kv head h // G straight from the [B, S, K, D] array.
          pl.BlockSpec((None, Sp, None, Dp), lambda i, b, h: (b, 0, lax.div(h, G), 0)),
          pl.BlockSpec((None, Sp, None, Dp), lambda i, b, h: (b, 0, lax.div(h, G), 0)),
          *seg_specs,
      ],
      out_specs=[
          pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0)),
          pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)),
      ],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((B, H, Tp), jnp.float32)],
      compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps,
                                           num_stages=blocks.num_stages),
      interpret=problem.interpret,
      name="phijax_flash_fwd",
  )(q, k, v, q_seg, kv_seg)


# -------------------------------------------------------------------------- backward

def _safe_lse2(lse):
  """lse in base-2 units; a row that saw no key (-inf) becomes +inf so p = 0."""
  return jnp.where(lse == -jnp.inf, jnp.inf, lse * LOG2_E)


def _dkv_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, lse_ref, delta_ref, do_ref,
                dk_ref, dv_ref, *, problem: flash.Problem):
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q_dkv, blocks.block_k_dkv
  kj = pl.program_id(2)
  kv_slice = pl.ds(kj * bk, bk)
  k = k_ref[...]  # [bk, Dp]
  v = v_ref[...]
  d_pad = k.shape[-1]
  kv_pos = kj * bk + jnp.arange(bk)
  kv_seg = kv_seg_ref[kv_slice] if spec.segmented else None
  qk_scale = problem.scale * LOG2_E
  lo, full_lo, full_hi, hi = q_blocks_for_kv_block(spec, kj, bq, bk)

  def body(qb, carry, g, masked):
    dk, dv = carry
    q_slice = pl.ds(qb * bq, bq)
    if g is None:  # no GQA: the head axis is squeezed out of the blocks
      q, do = q_ref[q_slice, :], do_ref[q_slice, :]  # [bq, Dp]
      lse2, delta = _safe_lse2(lse_ref[q_slice]), delta_ref[q_slice]
    else:
      q, do = q_ref[q_slice, g, :], do_ref[q_slice, g, :]
      lse2, delta = _safe_lse2(lse_ref[g, q_slice]), delta_ref[g, q_slice]
    # Transposed scores [bk, bq] so that dK and dV are plain (not transposed) dots.
    s_t = _dot(k, q, trans_b=True) * qk_scale
    p_t = jnp.exp2(s_t - lse2[None, :])
    if masked:
      q_pos = qb * bq + jnp.arange(bq)
      q_seg = q_seg_ref[q_slice] if spec.segmented else None
      mask = element_mask(spec, q_pos[None, :], kv_pos[:, None],
                          None if q_seg is None else q_seg[None, :],
                          None if kv_seg is None else kv_seg[:, None])
      p_t = jnp.where(mask, p_t, 0.0)
    dv = dv + _dot(p_t.astype(do.dtype), do)
    dp_t = _dot(v, do, trans_b=True)
    ds_t = p_t * (dp_t - delta[None, :])
    dk = dk + _dot(ds_t.astype(q.dtype), q)
    return dk, dv

  def group_body(g, carry):
    carry = lax.fori_loop(lo, full_lo, functools.partial(body, g=g, masked=True), carry)
    carry = lax.fori_loop(full_lo, full_hi, functools.partial(body, g=g, masked=False),
                          carry)
    return lax.fori_loop(full_hi, hi, functools.partial(body, g=g, masked=True), carry)

  zeros = jnp.zeros((bk, d_pad), jnp.float32)
  if problem.groups == 1:
    dk, dv = group_body(None, (zeros, zeros))
  else:
    dk, dv = lax.fori_loop(0, problem.groups, group_body, (zeros, zeros))
  dk_ref[...] = (dk * problem.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, lse_ref, delta_ref, do_ref,
               dq_ref, *, problem: flash.Problem):
  spec, blocks = problem.mask, problem.blocks
  bq, bk = blocks.block_q_dq, blocks.block_k_dq
  qi = pl.program_id(0)
  q = q_ref[...]
  do = do_ref[...]
  d_pad = q.shape[-1]
  lse2 = _safe_lse2(lse_ref[...])
  delta = delta_ref[...]
  q_pos = qi * bq + jnp.arange(bq)
  q_seg = q_seg_ref[pl.ds(qi * bq, bq)] if spec.segmented else None
  qk_scale = problem.scale * LOG2_E

  def body(kb, dq, masked):
    kv_slice = pl.ds(kb * bk, bk)
    k = k_ref[kv_slice, :]
    v = v_ref[kv_slice, :]
    s = _dot(q, k, trans_b=True) * qk_scale
    p = jnp.exp2(s - lse2[:, None])
    if masked:
      p = jnp.where(_tile_mask(spec, q_pos, q_seg, kv_seg_ref, kb, bk), p, 0.0)
    dp = _dot(do, v, trans_b=True)
    ds = p * (dp - delta[:, None])
    return dq + _dot(ds.astype(k.dtype), k)

  lo, full_lo, full_hi, hi = kv_blocks_for_q_block(spec, qi, bq, bk)
  dq = jnp.zeros((bq, d_pad), jnp.float32)
  dq = lax.fori_loop(lo, full_lo, functools.partial(body, masked=True), dq)
  dq = lax.fori_loop(full_lo, full_hi, functools.partial(body, masked=False), dq)
  dq = lax.fori_loop(full_hi, hi, functools.partial(body, masked=True), dq)
  dq_ref[...] = (dq * problem.scale).astype(dq_ref.dtype)


def _backward(q, k, v, q_seg, kv_seg, lse, delta, dout, problem: flash.Problem):
  B, Tp, H, Dp = q.shape
  Sp, K = k.shape[1], k.shape[2]
  G = problem.groups
  blocks = problem.blocks
  segmented = problem.mask.segmented
  params = plgpu.CompilerParams(num_warps=blocks.num_warps_bwd,
                                num_stages=blocks.num_stages)

  # dK/dV: one program per (batch, kv head, key block); its q heads are the G
  # consecutive heads h = kv_head * G + g, read as one [Tp, G, Dp] block.
  bk = blocks.block_k_dkv
  seg_specs = ([pl.BlockSpec((None, Tp), lambda b, kh, j: (b, 0)),
                pl.BlockSpec((None, Sp), lambda b, kh, j: (b, 0))]
               if segmented else [None, None])
  # Without GQA the head axis is squeezed out (no loop over a single head).
  heads = None if G == 1 else G
  group_q = pl.BlockSpec((None, Tp, heads, Dp), lambda b, kh, j: (b, 0, kh, 0))
  group_rows = pl.BlockSpec((None, heads, Tp), lambda b, kh, j: (b, kh, 0))
  kv_block = pl.BlockSpec((None, bk, None, Dp), lambda b, kh, j: (b, j, kh, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, problem=problem),
      grid=(B, K, Sp // bk),
      in_specs=[group_q, kv_block, kv_block, *seg_specs, group_rows, group_rows, group_q],
      out_specs=[kv_block, kv_block],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=params,
      interpret=problem.interpret,
      name="phijax_flash_bwd_dkv",
  )(q, k, v, q_seg, kv_seg, lse, delta, dout)

  # dQ: one program per (query block, batch, q head).
  bq = blocks.block_q_dq
  seg_specs = ([pl.BlockSpec((None, Tp), lambda i, b, h: (b, 0)),
                pl.BlockSpec((None, Sp), lambda i, b, h: (b, 0))]
               if segmented else [None, None])
  q_block = pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0))
  row_block = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
  full_kv = pl.BlockSpec((None, Sp, None, Dp), lambda i, b, h: (b, 0, lax.div(h, G), 0))
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, problem=problem),
      grid=(Tp // bq, B, H),
      in_specs=[q_block, full_kv, full_kv, *seg_specs, row_block, row_block, q_block],
      out_specs=q_block,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params,
      interpret=problem.interpret,
      name="phijax_flash_bwd_dq",
  )(q, k, v, q_seg, kv_seg, lse, delta, dout)
  return dq, dk, dv


BACKEND = flash.Backend(
    name="pallas_gpu",
    dtypes=(jnp.float32, jnp.bfloat16, jnp.float16),
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
  """GPU flash attention; see ``phijax.kernels.flash.flash_attention``."""
  return flash.flash_attention(BACKEND, q, k, v, causal=causal, segment_ids=segment_ids,
                               window=window, scale=scale, block_sizes=block_sizes,
                               interpret=interpret, return_lse=return_lse)


def unsupported_reason(q, k, v, *, window=None, segment_ids=None, block_sizes=None):
  """Why this kernel cannot take the call (one line), or None."""
  return flash.unsupported_reason(BACKEND, q, k, v, window=window,
                                  segment_ids=segment_ids, block_sizes=block_sizes)

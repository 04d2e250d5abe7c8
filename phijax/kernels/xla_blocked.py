"""Causal self-attention in plain XLA, laid out for CPU caches: the ``xla`` impl.

Two ideas of the Pallas kernels, in jnp ops that XLA:CPU runs well:

- **Query blocks over their visible keys only.** Rows ``[a, b)`` see keys ``[lo, b)``
  (causal, and the window's left edge): the score blocks above the diagonal are never
  formed, about 40% less work at T=256 and half for long rows.
- **A few sequences at a time** (on CPU). ``lax.map`` walks the batch in groups whose score
  tensors fit in cache (``SCORE_BYTES``), so the softmax's passes (mask, max, exp, sum)
  and the backward's re-read the scores from cache, not memory. On a 2-core CPU this,
  not the FLOPs, decided the time: fwd+bwd 52 -> 38 ms at the tiny config's shape
  (``benchmarks/xla_attention_cpu.py``).

The backward is written out (``custom_vjp``) as flash attention's: the scores are
recomputed from q and k with the saved log-sum-exp instead of being kept, and
``dS = P * (dP - rowsum(dO * O))`` replaces autodiff's reduction over the keys by one
over the head dim. Residuals are q, k, v, the output and the log-sum-exp: no
``[B, H, T, T]`` array outlives the forward.

Layout inside is heads-major, ``q [B, K, G, T, D]`` and ``k, v [B, K, T, D]`` (K kv
heads, G query heads per kv head), so every einsum is a plain batched matmul.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

# Query blocks: at least this many rows each, at most this many blocks (each block is
# its own few ops, unrolled in the graph).
BLOCK_MIN_ROWS = 64
BLOCK_MAX_COUNT = 8
# The batch is walked in groups of sequences whose float32 scores take at most this
# many bytes (at least one sequence per group): about a CPU core's L2 plus its share
# of L3. 1.5 MB (one tiny-config sequence, 6 heads x 256 x 256) measured best there.
SCORE_BYTES = 2 << 20

# Added to masked scores: finite (no inf - inf), exp(score + _NEG - max) is exactly 0.
_NEG = -1e30


def causal_blocks(T, window=None):
  """``[(q_start, q_end, k_start), ...]``: query rows ``[q_start, q_end)`` see keys
  ``[k_start, q_end)`` only (causal, and the window's left edge when set)."""
  rows = max(BLOCK_MIN_ROWS, -(-T // BLOCK_MAX_COUNT))
  return [(a, min(a + rows, T), 0 if window is None else max(0, a - int(window) + 1))
          for a in range(0, T, rows)]


def group_size(B, H, T, mesh_batch_ways=1, platform=None):
  """Sequences per ``lax.map`` step: the largest divisor of B whose scores fit
  ``SCORE_BYTES``. The whole batch at once under a mesh that splits it
  (``mesh_batch_ways`` > 1: a loop over a sharded axis would gather it) and on GPU or
  TPU (``platform``, default JAX's backend), where one large batched matmul is what
  keeps the chip busy and the caches are not the point."""
  if mesh_batch_ways > 1 or (platform or jax.default_backend()) != "cpu":
    return B
  fit = max(1, SCORE_BYTES // (4 * H * T * T))
  return max(d for d in range(1, min(B, fit) + 1) if B % d == 0)


def _mask_bias(T, seg, window):
  """``[B or 1, T, T]`` float32: 0 where query i may see key j, ``_NEG`` elsewhere.
  Made once per group of sequences; each block adds its slice to its scores."""
  q_pos, kv_pos = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
  mask = kv_pos <= q_pos
  if window is not None:
    mask = mask & (kv_pos > q_pos - window)
  mask = mask[None]
  if seg is not None:
    mask = mask & (seg[:, :, None] == seg[:, None, :])
  return jnp.where(mask, 0.0, _NEG).astype(jnp.float32)


def _scores(q, k, bias, a, b, lo, scale):
  """Masked float32 scores ``[B, K, G, b-a, b-lo]`` of query rows [a, b)."""
  B, K, G, _, D = q.shape
  # The G query heads of a kv head as extra rows of one [B, K] batch of matmuls.
  rows = q[:, :, :, a:b].reshape(B, K, G * (b - a), D)
  s = jnp.einsum("bkrd,bksd->bkrs", rows, k[:, :, lo:b], preferred_element_type=jnp.float32)
  s = s.reshape(B, K, G, b - a, b - lo) * scale
  return s + bias[:, None, None, a:b, lo:b]


def _forward(q, k, v, seg, window, scale):
  """``(out [B, K, G, T, D] f32, lse [B, K, G, T, 1] f32)``."""
  outs, lses = [], []
  bias = _mask_bias(q.shape[3], seg, window)
  for a, b, lo in causal_blocks(q.shape[3], window):
    s = _scores(q, k, bias, a, b, lo, scale)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    # Normalise the [.., D] output, not the [.., S] probabilities: D << S.
    o = jnp.einsum("bkgts,bksd->bkgtd", e.astype(v.dtype), v[:, :, lo:b],
                   preferred_element_type=jnp.float32) / total
    outs.append(o)
    lses.append(m + jnp.log(total))
  return jnp.concatenate(outs, axis=3), jnp.concatenate(lses, axis=3)


def _backward(q, k, v, seg, delta, lse, d_out, window, scale):
  """``(dq, dk, dv)`` in float32 for one group of sequences; ``delta`` is
  ``rowsum(dO * O)`` (``_row_dot``)."""
  T = q.shape[3]
  dq, dk, dv = [], 0.0, 0.0
  bias = _mask_bias(T, seg, window)
  for a, b, lo in causal_blocks(T, window):
    p = jnp.exp(_scores(q, k, bias, a, b, lo, scale) - lse[:, :, :, a:b])
    do = d_out[:, :, :, a:b]
    pad = ((0, 0), (0, 0), (lo, T - b), (0, 0))  # key rows [lo, b) of a [B, K, T, D] sum
    dv = dv + jnp.pad(jnp.einsum("bkgts,bkgtd->bksd", p.astype(v.dtype), do.astype(v.dtype),
                                 preferred_element_type=jnp.float32), pad)
    dp = jnp.einsum("bkgtd,bksd->bkgts", do.astype(v.dtype), v[:, :, lo:b],
                    preferred_element_type=jnp.float32)
    ds = (p * (dp - delta[:, :, :, a:b]) * scale).astype(q.dtype)
    dq.append(jnp.einsum("bkgts,bksd->bkgtd", ds, k[:, :, lo:b],
                         preferred_element_type=jnp.float32))
    dk = dk + jnp.pad(jnp.einsum("bkgts,bkgtd->bksd", ds, q[:, :, :, a:b],
                                 preferred_element_type=jnp.float32), pad)
  return jnp.concatenate(dq, axis=3), dk, dv


def _row_dot(d_out, out):
  """``rowsum(dO * O) = rowsum(P * dP)``, ``[..., T, 1]``, for the whole batch at once.
  Written as a contraction, not ``sum(d_out * out, -1)``: XLA:CPU (jax 0.10) hands
  that reduction over the 32-wide head dim to a library fusion that took 3.0 ms at the
  tiny config's shape against 0.16 ms for the contraction
  (``benchmarks/xla_attention_cpu.py`` times the whole attention)."""
  # HIGHEST: exact float32 on GPU/TPU too (their default dot passes are TF32 / bf16);
  # dS = P * (dP - delta) subtracts nearly equal numbers.
  delta = jnp.einsum("...d,...d->...", d_out, out, precision=jax.lax.Precision.HIGHEST)
  return delta[..., None]


def _grouped(fn, group, *arrays):
  """``fn`` over the batch in groups of ``group`` sequences (``lax.map``), outputs
  re-joined along the batch; one call when the group is the whole batch."""
  B = arrays[0].shape[0]
  if group >= B:
    return fn(*arrays)
  split = lambda x: None if x is None else x.reshape(B // group, group, *x.shape[1:])  # noqa: E731
  outs = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in arrays))
  return tuple(y.reshape(B, *y.shape[2:]) for y in outs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, seg, window, scale, group):
  return _grouped(lambda q, k, v, s: _forward(q, k, v, s, window, scale), group,
                  q, k, v, seg)[0]


def _attention_fwd(q, k, v, seg, window, scale, group):
  out, lse = _grouped(lambda q, k, v, s: _forward(q, k, v, s, window, scale), group,
                      q, k, v, seg)
  return out, (q, k, v, seg, out, lse)


def _attention_bwd(window, scale, group, res, d_out):
  q, k, v, seg, out, lse = res
  dq, dk, dv = _grouped(
      lambda q, k, v, s, dl, l, do: _backward(q, k, v, s, dl, l, do, window, scale),
      group, q, k, v, seg, _row_dot(d_out, out), lse, d_out)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


def causal_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, *, segment_ids=None, window=None,
                     scale=None, mesh_batch_ways=1):
  """Causal self-attention over ``[B, T, H, D]`` q and ``[B, T, K, D]`` k/v (K divides
  H); ``segment_ids`` one ``[B, T]`` array or None. Equals the dense reference
  ``phijax.model.attention.xla_attention`` to float rounding, gradients included. Every
  query sees at least itself, so no row needs an empty-row guard."""
  B, T, H, D = q_BxTxHxD.shape
  K = k_BxTxKxD.shape[2]
  scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
  window = None if window is None else int(window)
  q = q_BxTxHxD.reshape(B, T, K, H // K, D).transpose(0, 2, 3, 1, 4)
  k, v = k_BxTxKxD.transpose(0, 2, 1, 3), v_BxTxKxD.transpose(0, 2, 1, 3)
  out = _attention(q, k, v, segment_ids, window, scale,
                   group_size(B, H, T, mesh_batch_ways))
  return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H, D).astype(q_BxTxHxD.dtype)

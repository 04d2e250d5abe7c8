"""One door for attention: ``dot_product_attention`` and its XLA reference.

Layout is ``[batch, length, heads, head_dim]`` everywhere. Grouped-query attention
(kv heads dividing q heads) is computed by grouping q heads, never by repeating k/v.
The implementation is picked by ``impl``; ``xla`` is the plain-jnp reference that
every kernel is tested against.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

IMPLS = ("xla",)


def _split_segment_ids(segment_ids):
  """Accepts one ``[B, T]`` array (self-attention) or a ``(q, kv)`` pair."""
  if segment_ids is None:
    return None, None
  if isinstance(segment_ids, (tuple, list)):
    q_seg, kv_seg = segment_ids
    return q_seg, kv_seg
  return segment_ids, segment_ids


def check_shapes(q, k, v):
  """Raises a clear ValueError for q/k/v shapes attention cannot take."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
        f"attention expects [batch, length, heads, head_dim] q/k/v, got shapes "
        f"{q.shape}, {k.shape}, {v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"attention: k {k.shape} and v {v.shape} must have the same shape")
  if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
    raise ValueError(
        f"attention: q {q.shape} and k {k.shape} must agree on batch and head_dim")
  if q.shape[2] % k.shape[2]:
    raise ValueError(
        f"attention: kv heads ({k.shape[2]}) must divide q heads ({q.shape[2]}) for "
        "grouped-query attention")


def attention_mask(q_len, kv_len, *, causal, q_segment_ids=None, kv_segment_ids=None,
                   window=None, q_offset=0):
  """Boolean ``[B or 1, q_len, kv_len]`` mask: True where query i may see key j.

  ``window`` follows Phi-3: key j is visible to query i iff ``j > i - window``
  (``window`` keys including the query itself). ``q_offset`` places the queries at
  absolute positions ``q_offset + i`` (used when decoding with a cache).
  """
  q_pos = jnp.arange(q_len)[:, None] + q_offset
  kv_pos = jnp.arange(kv_len)[None, :]
  mask = jnp.ones((q_len, kv_len), dtype=bool)
  if causal:
    mask = mask & (kv_pos <= q_pos)
  if window is not None:
    mask = mask & (kv_pos > q_pos - window)
  mask = mask[None]
  if q_segment_ids is not None:
    mask = mask & (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])
  return mask


def xla_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, *, causal=True, segment_ids=None,
                  window=None, scale=None, return_lse=False):
  """Reference attention in plain jnp; softmax in float32.

  Returns ``out [B, T, H, D]`` in q's dtype, and with ``return_lse`` also the
  natural-log sum-exp of the scaled scores ``[B, H, T]`` (float32).
  """
  B, T, H, D = q_BxTxHxD.shape
  S, K = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
  G = H // K
  scale = 1.0 / math.sqrt(D) if scale is None else scale
  q_seg, kv_seg = _split_segment_ids(segment_ids)
  q_BxTxKxGxD = q_BxTxHxD.reshape(B, T, K, G, D)
  s_BxKxGxTxS = jnp.einsum(
      "btkgd,bskd->bkgts", q_BxTxKxGxD, k_BxSxKxD,
      preferred_element_type=jnp.float32) * scale
  mask_BxTxS = attention_mask(T, S, causal=causal, q_segment_ids=q_seg,
                              kv_segment_ids=kv_seg, window=window)
  mask = mask_BxTxS[:, None, None]
  # A finite fill and jax.nn.softmax (whose custom JVP keeps the max out of the
  # backward pass) run the backward about 1.8x faster on CPU than exp/sum by hand.
  s_BxKxGxTxS = jnp.where(mask, s_BxKxGxTxS, jnp.finfo(jnp.float32).min)
  p = jax.nn.softmax(s_BxKxGxTxS, axis=-1)
  # Rows with no visible key (only possible with odd segment layouts) give zeros.
  visible = jnp.any(mask, axis=-1, keepdims=True)
  p = jnp.where(visible, p, 0.0)
  out_BxTxKxGxD = jnp.einsum("bkgts,bskd->btkgd", p.astype(v_BxSxKxD.dtype), v_BxSxKxD,
                             preferred_element_type=jnp.float32)
  out = out_BxTxKxGxD.reshape(B, T, H, D).astype(q_BxTxHxD.dtype)
  if return_lse:
    lse = jax.nn.logsumexp(s_BxKxGxTxS, axis=-1)
    lse_BxKxGxT = jnp.where(visible[..., 0], lse, -jnp.inf)
    return out, lse_BxKxGxT.reshape(B, H, T)
  return out


def dot_product_attention(q, k, v, *, causal=True, segment_ids=None, window=None,
                          scale=None, impl="xla", interpret=None):
  """Attention over ``[B, T, H, D]`` q and ``[B, S, K, D]`` k/v (K divides H).

  Args:
    causal: mask keys after the query.
    segment_ids: ``[B, T]`` ints (packed documents attend only within their own
      segment), or a ``(q_segment_ids, kv_segment_ids)`` pair.
    window: sliding window size in keys (Phi-3 convention), or None.
    scale: softmax scale, default ``1/sqrt(D)``.
    impl: one of ``IMPLS``.
    interpret: run Pallas kernels in interpret mode (CPU testing).
  """
  check_shapes(q, k, v)
  if impl == "xla":
    return xla_attention(q, k, v, causal=causal, segment_ids=segment_ids,
                         window=window, scale=scale)
  raise ValueError(f"unknown attention impl {impl!r}; choose one of {IMPLS}")

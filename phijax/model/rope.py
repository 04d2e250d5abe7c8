"""Rotary position embeddings: partial rotary (phi) and LongRoPE (phi-3).

NeoX "rotate half" layout: the first ``rotary_dim`` dims of each head are split in
two halves that rotate together; the remaining dims pass through unchanged.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from phijax.model.config import ModelConfig


def inv_frequencies(rotary_dim: int, theta: float, ext_factors=None) -> np.ndarray:
  """``1 / (ext * theta^(2i/dim))`` in float32, computed on the host once."""
  exponents = np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)
  base = np.float32(theta) ** exponents
  if ext_factors is not None:
    base = np.asarray(ext_factors, np.float32) * base
  return (1.0 / base).astype(np.float32)


def longrope_attention_factor(cfg: ModelConfig) -> float:
  """LongRoPE's cos/sin multiplier: ``sqrt(1 + ln(s)/ln(orig))`` with s = max/orig."""
  rs = cfg.rope_scaling
  if rs.get("attention_factor") is not None:
    return float(rs["attention_factor"])
  orig = rs["original_max_position_embeddings"]
  factor = rs.get("factor") or cfg.max_position_embeddings / orig
  if factor <= 1.0:
    return 1.0
  return math.sqrt(1.0 + math.log(factor) / math.log(orig))


def cos_sin(cfg: ModelConfig, positions_BxT, long_rope_B=None):
  """float32 ``cos, sin`` of shape ``[B, T, rotary_dim]`` for the given positions.

  With LongRoPE the long factors are used for the whole batch once any position
  reaches past ``original_max_position_embeddings`` (as Hugging Face does), so a
  cache built with short factors is not valid past that length. ``long_rope_B``
  (bool ``[B]``) decides per row instead: the decoder passes it, so that a row's
  factors depend on that row's length only (not on padding or its batch-mates).
  """
  r = cfg.rotary_dim
  pos = positions_BxT.astype(jnp.float32)[..., None]
  scale = 1.0
  if cfg.rope_scaling is None:
    freqs = pos * jnp.asarray(inv_frequencies(r, cfg.rope_theta))
  else:
    rs = cfg.rope_scaling
    short = jnp.asarray(inv_frequencies(r, cfg.rope_theta, rs["short_factor"]))
    long = jnp.asarray(inv_frequencies(r, cfg.rope_theta, rs["long_factor"]))
    if long_rope_B is None:
      use_long = jnp.max(positions_BxT) + 1 > rs["original_max_position_embeddings"]
    else:
      use_long = jnp.asarray(long_rope_B, bool)[:, None, None]
    freqs = pos * jnp.where(use_long, long, short)
    scale = longrope_attention_factor(cfg)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def apply_rotary(x_BxTxHxD, cos_BxTxR, sin_BxTxR):
  """Rotates the first R dims of every head; the rest pass through."""
  r = cos_BxTxR.shape[-1]
  if r == 0:
    return x_BxTxHxD
  dtype = x_BxTxHxD.dtype
  x_rot, x_pass = x_BxTxHxD[..., :r], x_BxTxHxD[..., r:]
  half = r // 2
  rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
  cos = cos_BxTxR[:, :, None, :].astype(dtype)
  sin = sin_BxTxR[:, :, None, :].astype(dtype)
  x_rot = x_rot * cos + rotated * sin
  return jnp.concatenate([x_rot, x_pass], axis=-1)

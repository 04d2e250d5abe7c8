"""Rotary position embeddings: partial rotary (phi), and the context-extension types of
``rope_scaling`` (linear, YaRN, LongRoPE: ``phijax.model.rope_scaling``).

NeoX "rotate half" layout: the first ``rotary_dim`` dims of each head are split in
two halves that rotate together; the remaining dims pass through unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp

from phijax.model import rope_scaling as scaling
from phijax.model.config import ModelConfig
from phijax.model.rope_scaling import inv_frequencies  # noqa: F401  (re-exported)


def cos_sin(cfg: ModelConfig, positions_BxT, long_rope_B=None):
  """float32 ``cos, sin`` of shape ``[B, T, rotary_dim]`` for the given positions,
  times the scaling type's attention factor (YaRN, LongRoPE; 1 otherwise).

  With LongRoPE the long factors are used for the whole batch once any position
  reaches past ``original_max_position_embeddings`` (as Hugging Face does), so a
  cache built with short factors is not valid past that length. ``long_rope_B``
  (bool ``[B]``) decides per row instead: the decoder passes it, so that a row's
  factors depend on that row's length only (not on padding or its batch-mates).
  The other types' frequencies do not depend on the length (``long_rope_B`` is
  ignored): a cache stays valid at any length.
  """
  rs = cfg.rope_scaling
  pos = positions_BxT.astype(jnp.float32)[..., None]
  table = scaling.frequency_table(cfg.rotary_dim, cfg.rope_theta, rs)
  inv_freq = jnp.asarray(table["short"])
  if "long" in table:
    if long_rope_B is None:
      use_long = jnp.max(positions_BxT) + 1 > rs["original_max_position_embeddings"]
    else:
      use_long = jnp.asarray(long_rope_B, bool)[:, None, None]
    inv_freq = jnp.where(use_long, jnp.asarray(table["long"]), inv_freq)
  scale = 1.0 if rs is None else scaling.attention_factor(rs, cfg.max_position_embeddings)
  freqs = pos * inv_freq
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

"""Cross entropy with a mask, and the z-loss, in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_losses(logits_BxTxV, targets_BxT, z_loss: float = 0.0):
  """Per-token ``-log p(target)`` (+ ``z_loss * logsumexp^2``), float32 ``[B, T]``."""
  logits = logits_BxTxV.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  nll = lse - target_logit
  if z_loss:
    return nll, nll + z_loss * jnp.square(lse)
  return nll, nll


def masked_sum(x_BxT, mask_BxT):
  return jnp.sum(x_BxT * mask_BxT.astype(jnp.float32))

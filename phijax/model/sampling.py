"""Picking the next token from logits: greedy, temperature, top-k, top-p (nucleus).

The settings are traced scalars, so changing them never recompiles; a row's draw for
position p uses ``fold_in(key_b, p)``, so a seed gives the same text however rows are
batched (``phijax.model.decode`` samples with these).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pick_token(logits, key, temperature, top_k, top_p):
  """One token id from ``[vocab]`` logits. ``temperature`` 0 is greedy (argmax);
  otherwise a draw from softmax(logits / temperature) restricted to the ``top_k``
  most likely ids (0 = all) and to the smallest set whose probability reaches
  ``top_p`` (1 = all). All three are traced scalars: changing them never recompiles."""
  logits = logits.astype(jnp.float32)
  greedy_id = jnp.argmax(logits)
  scaled = logits / jnp.maximum(temperature, 1e-6)
  order = jnp.argsort(-scaled)
  sorted_logits = scaled[order]
  rank = jnp.arange(scaled.shape[0])
  probs = jax.nn.softmax(sorted_logits)
  before = jnp.cumsum(probs) - probs  # probability of the ids ranked above this one
  keep = rank < jnp.where(top_k > 0, top_k, scaled.shape[0])
  keep &= (before < top_p) | (top_p >= 1.0)
  keep = keep.at[0].set(True)  # the most likely id always stays
  drawn = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf))
  return jnp.where(temperature > 0, order[drawn], greedy_id).astype(jnp.int32)


def pick_tokens(logits_BxV, keys_B, positions_B, temperature, top_k, top_p):
  """``pick_token`` per row; row b's draw for position p uses ``fold_in(keys[b], p)``.
  Greedy batches skip the sort altogether."""
  def sampled(_):
    keys = jax.vmap(jax.random.fold_in)(keys_B, positions_B)
    return jax.vmap(pick_token, in_axes=(0, 0, None, None, None))(
        logits_BxV, keys, temperature, top_k, top_p)

  def greedy(_):
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

  return jax.lax.cond(temperature > 0, sampled, greedy, None)

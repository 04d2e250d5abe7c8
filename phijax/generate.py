"""Decoding for samples: greedy, or sampling with temperature / top-k / top-p from a
key. A full forward per token over a fixed-size buffer, so it compiles once; a
KV-cache generator is on the roadmap."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from phijax.model import Transformer


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


@functools.lru_cache(maxsize=8)
def _next_token_fn(model_cfg):
  model = Transformer(model_cfg)

  @jax.jit
  def next_token(params, buf, i, key, temperature, top_k, top_p, allowed):
    logits = model.apply({"params": params}, buf)  # causal: pads after i are unseen
    logits = jnp.where(allowed, logits[0, i - 1], -jnp.inf)
    return pick_token(logits, jax.random.fold_in(key, i), temperature, top_k, top_p)

  return next_token


def sample(model_cfg, params, prompt_ids: list[int], max_new_tokens: int, *,
           key=None, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
           stop_id: int | None = None, first_allowed=None) -> list[int]:
  """Returns the generated ids after ``prompt_ids`` (stops early at ``stop_id``).

  ``temperature`` 0 decodes greedily (``key`` unused); above 0 it samples, the draw
  at position i from ``fold_in(key, i)``, so the same key gives the same text.
  ``first_allowed`` (bool ``[vocab]``) limits the first new token, e.g. to pieces
  that start with the space a prompt ended in (see ``train.write_samples``).
  """
  if temperature > 0 and key is None:
    raise ValueError("sampling with temperature > 0 needs a key")
  key = jax.random.key(0) if key is None else key
  total = len(prompt_ids) + max_new_tokens
  length = min(model_cfg.max_position_embeddings, 1 << (total - 1).bit_length())
  if len(prompt_ids) >= length:
    raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in "
                     f"{length} positions")
  next_token = _next_token_fn(model_cfg)
  settings = (jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p))
  buf = np.zeros((1, length), np.int32)
  buf[0, :len(prompt_ids)] = prompt_ids
  any_id = jnp.ones((model_cfg.vocab_size,), bool)
  first = any_id if first_allowed is None else jnp.asarray(first_allowed, bool)
  out = []
  for i in range(len(prompt_ids), min(total, length)):
    allowed = first if i == len(prompt_ids) else any_id
    t = int(next_token(params, jnp.asarray(buf), i, key, *settings, allowed))
    if stop_id is not None and t == stop_id:
      break
    buf[0, i] = t
    out.append(t)
  return out


def greedy(model_cfg, params, prompt_ids: list[int], max_new_tokens: int,
           stop_id: int | None = None) -> list[int]:
  """``sample`` with temperature 0: the most likely id at every position."""
  return sample(model_cfg, params, prompt_ids, max_new_tokens, stop_id=stop_id)

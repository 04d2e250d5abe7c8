"""Greedy decoding for samples (a full forward per token over a fixed-size buffer,
so it compiles once; a KV-cache generator is on the roadmap)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from phijax.model import Transformer


@functools.lru_cache(maxsize=8)
def _next_token_fn(model_cfg):
  model = Transformer(model_cfg)

  @jax.jit
  def next_token(params, buf, i):
    logits = model.apply({"params": params}, buf)  # causal: pads after i are unseen
    return jnp.argmax(logits[0, i - 1]).astype(jnp.int32)

  return next_token


def greedy(model_cfg, params, prompt_ids: list[int], max_new_tokens: int,
           stop_id: int | None = None) -> list[int]:
  """Returns the generated ids after ``prompt_ids`` (stops early at ``stop_id``)."""
  total = len(prompt_ids) + max_new_tokens
  length = min(model_cfg.max_position_embeddings, 1 << (total - 1).bit_length())
  if len(prompt_ids) >= length:
    raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in "
                     f"{length} positions")
  next_token = _next_token_fn(model_cfg)
  buf = np.zeros((1, length), np.int32)
  buf[0, :len(prompt_ids)] = prompt_ids
  out = []
  for i in range(len(prompt_ids), min(total, length)):
    t = int(next_token(params, jnp.asarray(buf), i))
    if stop_id is not None and t == stop_id:
      break
    buf[0, i] = t
    out.append(t)
  return out

"""Streaming generation with attention sinks (StreamingLLM: Xiao et al. 2023, "Efficient
Streaming Language Models with Attention Sinks", arXiv 2309.17453): a KV cache of
S + W slots that keeps the first S tokens (the sinks) and a rolling window of the last
W, so decoding goes on past the model's trained length with constant memory.

    outs = Generator(cfg, params).generate(prompts, max_new_tokens=20_000,
                                           sink_tokens=4, window=1020)

Layout: row b's token t < S lives in slot t, a token t >= S in ring slot
``S + (t - S) % W``: each new token overwrites the one that just left the window, one
slot per step, and nothing moves.

Positions, as the paper defines them: rotary positions are positions *within the
cache*, not in the text. The sinks sit at 0..S-1 and the window follows them in text
order, so the newest token is at ``min(t, S + W - 1)`` and the model never sees a
position (or a query-key distance) of S + W or more. Every shift of the window moves
every window key one position down, so keys are cached *un-rotated* and rotated at
attention time with their slot's current position (the paper's own code does this;
HF's SinkCache instead stores rotated keys and re-rotates the whole cache at each
shift). Rotating at read time costs one elementwise pass over the visible keys per
layer and step, touches nothing else in the model (the normal path still caches
rotated keys), and rotates each raw key once from its current position: a decode
step's scores are exactly those of a forward pass over the cache's tokens at
positions 0..S+W-1, with no rounding drift from thousands of re-rotations.

What a token sees: the sinks plus itself and the W - 1 tokens before it. Its keys
and values are computed once, when it is fed (as in any KV cache), so a token's
deeper-layer keys carry the context it had then. For a one-layer model (keys and
values depend on the token alone) step n's logits equal a plain forward over
``[sinks] + [last W tokens]`` at positions 0..S+W-1; deeper models equal feeding the
text one token at a time with that cache (``tests/test_streaming.py`` checks both).

Prefill: a prompt's first S + W tokens are an ordinary causal prefill (they all fit);
a longer prompt continues in chunks of ``chunk`` (at most W) tokens, each query
attending to the old cache plus the chunk so that it sees what it would one token at
a time. Within such a chunk the window keys are rotated at positions ``t - base``
(``base`` per row) and each query at ``its position - base``, which keeps every
query-key distance what the cache positions give (rotary scores depend on the
distance alone; the positions themselves may reach S + W + chunk), while the sinks
are scored with the query rotated at its cache position S + W - 1.

LongRoPE switches factors once a sequence passes ``original_max_position_embeddings``;
a cache longer than that would switch mid-stream (transformers rebuilds the cache
from the text, which a rolling cache has dropped), so S + W must stay within it and
the short factors are used throughout.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from phijax.model import attention as attention_lib, rope

PREFILL_CHUNK = 512  # longest prompt chunk past the first S + W tokens
_CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")  # transformer.CACHE_AXES


@dataclasses.dataclass(frozen=True)
class Rolling:
  """A streaming cache's shape: ``sinks`` first tokens plus the last ``window``."""
  sinks: int
  window: int

  @property
  def slots(self) -> int:
    return self.sinks + self.window

  @property
  def chunk(self) -> int:
    """Prompt chunk past the first S + W tokens: at most W, so one chunk's tokens
    land in distinct ring slots."""
    return min(self.window, PREFILL_CHUNK)


def rolling(cfg, sink_tokens: int | None, window: int | None) -> Rolling | None:
  """The checked setting (None: keep every token), or a one-line ValueError."""
  if window is None:
    if sink_tokens:
      raise ValueError(f"sink_tokens={sink_tokens} needs a window: the streaming cache "
                       "keeps the sinks plus the last `window` tokens")
    return None
  sinks = int(sink_tokens or 0)
  if window < 1:
    raise ValueError(f"window must be at least 1 token, got {window}")
  if sinks < 0:
    raise ValueError(f"sink_tokens must be 0 or more, got {sink_tokens}")
  n = cfg.max_position_embeddings
  if sinks + window > n:
    raise ValueError(f"sink_tokens + window = {sinks + window} is more than the model's {n} "
                     "positions (max_position_embeddings): the cache positions would pass "
                     "what it was trained on")
  rs = cfg.rope_scaling
  if rs is not None and rs.get("type", "longrope") == "longrope":
    orig = int(rs["original_max_position_embeddings"])
    if sinks + window > orig:
      raise ValueError(f"sink_tokens + window = {sinks + window} is more than LongRoPE's "
                       f"original_max_position_embeddings ({orig}): a streaming cache keeps "
                       "the short factors, so it must fit them")
  return Rolling(sinks, window)


@flax.struct.dataclass
class Stream:
  """One call's place in a streaming cache (``Transformer(..., cache=, stream=)``):
  row b already holds ``filled_B[b]`` tokens (its new tokens are text positions
  ``filled_B[b] + 0..T-1``), and only its first ``new_B[b]`` new tokens are real (the
  rest are padding: never written, never seen by a real token). ``in_place``: the
  tokens evict nothing their own queries see (one token, or all within the first
  S + W positions), so they are written first and attention reads the cache alone."""
  filled_B: jax.Array
  new_B: jax.Array
  rolling: Rolling = flax.struct.field(pytree_node=False)
  in_place: bool = flax.struct.field(pytree_node=False, default=False)


@flax.struct.dataclass
class Plan:
  """What every layer's attention needs, computed once per forward (``plan``)."""
  write_BxT: jax.Array  # each new token's slot (S + W: not written)
  mask_BxTxM: jax.Array  # query i may see key column m
  q_cos: jax.Array  # [B, T, R]: queries against the window keys
  q_sin: jax.Array
  k_cos: jax.Array  # [B, M, R]: the key columns
  k_sin: jax.Array
  qs_cos: jax.Array | None  # [B, T, R]: queries against the sinks (None: the same)
  qs_sin: jax.Array | None
  sinks: int = flax.struct.field(pytree_node=False)
  visible: int | None = flax.struct.field(pytree_node=False)  # None: not in place


def slot_of(t, sinks: int, window: int):
  """The slot of text position ``t``."""
  return jnp.where(t < sinks, t, sinks + jnp.remainder(t - sinks, window))


def held_tokens(count_B, sinks: int, window: int):
  """``[B, S + W]``: the text position each slot holds once ``count_B`` tokens have
  been written (-1: empty)."""
  j = jnp.arange(sinks + window)[None]
  last = count_B[:, None] - 1
  ring = last - jnp.remainder(last - j, window)  # the newest t <= last in slot j
  t = jnp.where(j < sinks, j, jnp.where(ring >= sinks, ring, -1))
  return jnp.where(t <= last, t, -1)


def plan(cfg, stream: Stream, T: int, visible: int | None = None) -> Plan:
  """Slots, masks and rotations of a call with T new tokens per row. In place (a
  decode step, the prompt's first chunk) attention reads the cache after the write,
  its first ``visible`` slots only; otherwise the cache before the write followed by
  the T new keys."""
  S, W = stream.rolling.sinks, stream.rolling.window
  N = S + W
  B = stream.filled_B.shape[0]
  filled = stream.filled_B.astype(jnp.int32)[:, None]
  i = jnp.arange(T, dtype=jnp.int32)[None]
  c_BxT = filled + i  # the new tokens' text positions
  write = jnp.where(i < stream.new_B[:, None], slot_of(c_BxT, S, W), N)
  in_place = T == 1 or stream.in_place
  if in_place:
    held = held_tokens(filled[:, 0] + T, S, W)[:, :visible or N]
  else:  # padding keys sit past every real query: unseen, but padding queries see them
    held = jnp.concatenate([held_tokens(filled[:, 0], S, W), c_BxT], axis=1)
  t = held[:, None, :]
  c = c_BxT[:, :, None]
  cache_pos = jnp.minimum(c, N - 1)  # a query's position within the cache
  sink = t < S
  mask = (t >= 0) & (t <= c) & (sink | (c - t < W))
  if cfg.sliding_window is not None:  # the model's own window, over cache positions
    mask &= jnp.where(sink, cache_pos - t, c - t) < cfg.sliding_window
  base = jnp.maximum(filled - (N - 1), 0)  # 0 until the cache is full
  key_pos = jnp.maximum(jnp.where(held < S, held, held - base), 0)
  long = None if cfg.rope_scaling is None else jnp.zeros((B,), bool)  # see the docstring
  k_cos, k_sin = rope.cos_sin(cfg, key_pos, long)
  q_cos, q_sin = rope.cos_sin(cfg, c_BxT - base, long)  # = cache_pos when in place
  qs_cos = qs_sin = None
  if not in_place:
    qs_cos, qs_sin = rope.cos_sin(cfg, cache_pos[..., 0], long)
  return Plan(write, mask, q_cos, q_sin, k_cos, k_sin, qs_cos, qs_sin, S,
              (visible or N) if in_place else None)


def _write(cache_BxNxKxE, new_BxTxKxE, slots_BxT):
  rows = jnp.arange(cache_BxNxKxE.shape[0])[:, None]
  out = cache_BxNxKxE.at[rows, slots_BxT].set(new_BxTxKxE.astype(cache_BxNxKxE.dtype),
                                              mode="drop")
  return nn.with_logical_constraint(out, _CACHE_AXES)


def attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, cache, p: Plan):
  """Attention of un-rotated q/k over a streaming cache; ``(out, new cache)``."""
  B, T, H, E = q_BxTxHxE.shape
  K = k_BxTxKxE.shape[2]
  new_cache = {"k": _write(cache["k"], k_BxTxKxE, p.write_BxT),
               "v": _write(cache["v"], v_BxTxKxE, p.write_BxT)}
  if p.visible is not None:  # in place: the new tokens are in the cache now
    keys, values = new_cache["k"][:, :p.visible], new_cache["v"][:, :p.visible]
  else:  # a chunk: later tokens overwrite slots that earlier ones still see
    keys = jnp.concatenate([cache["k"], k_BxTxKxE.astype(cache["k"].dtype)], axis=1)
    values = jnp.concatenate([cache["v"], v_BxTxKxE.astype(cache["v"].dtype)], axis=1)
  keys = rope.apply_rotary(keys, p.k_cos, p.k_sin)
  q = rope.apply_rotary(q_BxTxHxE, p.q_cos, p.q_sin).reshape(B, T, K, H // K, E)
  scale = 1.0 / math.sqrt(E)
  if p.qs_cos is None:  # as attention.cached_attention computes it
    probs, _, _ = attention_lib._attend(q, keys, values, p.mask_BxTxM, scale)
  else:
    q_sink = rope.apply_rotary(q_BxTxHxE, p.qs_cos, p.qs_sin).reshape(q.shape)
    s = jnp.concatenate([
        jnp.einsum("btkgd,bskd->bkgts", q_sink, keys[:, :p.sinks],
                   preferred_element_type=jnp.float32),
        jnp.einsum("btkgd,bskd->bkgts", q, keys[:, p.sinks:],
                   preferred_element_type=jnp.float32)], axis=-1) * scale
    s = jnp.where(p.mask_BxTxM[:, None, None], s, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(s, axis=-1)
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(values.dtype), values,
                   preferred_element_type=jnp.float32)
  return out.reshape(B, T, H, E).astype(q_BxTxHxE.dtype), new_cache


# --- the generator's side: a prompt in chunks -----------------------------------------

def chunk_fn(model, r: Rolling, params, cache, tokens_BxT, filled_B, lengths_B, logits_BxV,
             first=False):
  """Feeds tokens ``filled..filled+T-1`` of every row (those before its length);
  ``logits`` take the chunk's logits at a row's last prompt token if it is here.
  ``first`` (static): the prompt's first chunk, inside the first S + W positions."""
  T = tokens_BxT.shape[1]
  last = lengths_B - 1 - filled_B
  stream = Stream(filled_B, jnp.clip(lengths_B - filled_B, 0, T), r, in_place=first)
  out, cache = model.apply({"params": params}, tokens_BxT, cache=cache, stream=stream,
                           logits_at_B=jnp.clip(last, 0, T - 1))
  here = ((last >= 0) & (last < T))[:, None]
  return jnp.where(here, out[:, 0], logits_BxV), cache


def prefill_steps(model, r: Rolling, batch: int, cache_sharding, logits_sharding,
                  init_cache):
  """``(rolling, init, chunk)``, jitted: what ``prefill`` runs. ``init_cache``:
  ``transformer.init_cache`` (passed in: the transformer imports this module)."""

  def init():
    return (init_cache(model.cfg, batch, r.slots),
            jnp.zeros((batch, model.cfg.vocab_size), jnp.float32))

  chunk = jax.jit(functools.partial(chunk_fn, model, r), donate_argnums=(1,),
                  static_argnames=("first",), out_shardings=(logits_sharding, cache_sharding))
  return r, jax.jit(init, out_shardings=(cache_sharding, logits_sharding)), chunk


def prefill(steps, params, tokens, lengths, first: int, run, put):
  """The cache and each row's last-prompt-token logits after feeding the prompts
  (host ``tokens [B, >= longest]``): the first ``first`` (<= S + W) positions in one
  chunk, the rest in chunks of ``rolling.chunk``. ``steps``: ``prefill_steps``;
  ``run`` calls a step under the mesh; ``put`` places a host array's rows."""
  r, init, chunk = steps
  longest = int(lengths.max())
  cache, logits = run(init)
  lengths_dev = put(lengths)
  for start in [0, *range(r.slots, longest, r.chunk)]:
    T = first if start == 0 else r.chunk
    part = np.zeros((tokens.shape[0], T), np.int32)
    got = tokens[:, start:start + T]
    part[:, :got.shape[1]] = got
    step = functools.partial(chunk, first=start == 0)
    logits, cache = run(step, params, cache, put(part),
                        put(np.full(len(lengths), start, np.int32)), lengths_dev, logits)
  return logits, cache

"""Text generation with a KV cache: prefill the prompts once, then one jitted step per
token that reads and writes the cache.

    gen = Generator(model_cfg, params)                    # places params on a mesh
    outs = gen.generate([ids_a, ids_b], max_new_tokens=64, eos_id=tok.eos_id)
    texts = gen.complete(tok, ["def fib(n):"], n=4, temperature=0.8, stop=["\\ndef"])

How it works:
- The cache is one ``{"k", "v"}`` pair of ``[batch, cache_len, kv_heads, head_dim]``
  arrays per layer (``model.init_cache``), slot = absolute position. Prompts of
  different lengths share it left-aligned: row b's token at position p lives in slot
  p, and a query at position p sees slots ``<= p`` only, so no row ever sees padding
  (its own or another row's), and rows decode in lockstep at their own positions.
- Shapes are bucketed (batch and cache length to powers of two, at least 16
  positions): one compile per (batch, cache length) bucket, never per token. The
  sampling settings are traced scalars: changing them never recompiles.
- Each step is dispatched before the previous step's token is read back, so the
  host's bookkeeping (EOS, stop strings) overlaps the device's work.
- LongRoPE (phi-3): a row whose length grows past ``original_max_position_embeddings``
  switches to the long factors. Its cached keys were rotated with the short ones, so,
  as Hugging Face's ``Phi3ForCausalLM.prepare_inputs_for_generation`` does, the cache
  is rebuilt once by a full prefill at that step. The switch is per row (HF decides
  for the padded batch), so a row's tokens never depend on its batch-mates.
- Sampling: temperature 0 is greedy; otherwise softmax(logits / temperature) cut to
  the ``top_k`` most likely ids and to the smallest set whose probability reaches
  ``top_p``. The draw for row b at position p uses ``fold_in(key_b, p)``: a seed
  gives the same text however the rows are batched.
- Streaming (``sink_tokens=S, window=W``; StreamingLLM, ``phijax.model.streaming``): a
  cache of S + W slots keeps the first S tokens and the last W, rotary positions
  within the cache, so text of any length decodes with constant memory.
- Under a mesh the parameters take the training sharding (the config's logical axis
  rules: heads over ``tensor``); the batch and the cache are split over ``data`` and
  ``fsdp``, and the cache's kv heads over ``tensor``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from phijax.model import transformer as model_lib, sharding, streaming
from phijax.model.config import as_model_config
from phijax.model.sampling import pick_token, pick_tokens  # noqa: F401  (decode.pick_token)

log = logging.getLogger("phijax")

MIN_CACHE = 16  # smallest cache / prefill bucket: tiny prompts share one compile


def bucket(n: int, cap: int | None = None) -> int:
  """The power of two at or above ``max(n, MIN_CACHE)``, at most ``cap``."""
  b = 1 << max(int(n) - 1, MIN_CACHE - 1).bit_length()
  return b if cap is None else min(b, cap)


@dataclasses.dataclass
class Output:
  """One generated continuation. ``ids`` are the new tokens (an EOS that ended the
  row is not included); ``finish`` says why it ended: ``eos``, ``stop`` (a stop string
  appeared; ``text`` is cut before it), ``length`` (max_new_tokens) or ``cache`` (the
  model's ``max_position_embeddings`` was reached; never when streaming)."""
  ids: list
  finish: str
  text: str | None = None
  logits: np.ndarray | None = None  # [new tokens, vocab] with return_logits=True


def default_mesh(devices: int | None = None) -> Mesh:
  """This process's devices (or the first ``devices`` of them), all on the ``data``
  axis: rows are spread over them."""
  devices = jax.local_devices()[:devices]
  return Mesh(np.asarray(devices).reshape(len(devices), 1, 1), sharding.MESH_AXES)


class Generator:
  """KV-cache decoding for one model's parameters on one mesh.

  ``mesh`` / ``rules`` default to this process's devices on ``data`` and the default
  logical axis rules; pass a run's mesh and ``config.mesh.rules`` to decode with
  its tensor parallelism. Compiled steps are kept per shape bucket.
  """

  def __init__(self, model_cfg, params, *, mesh: Mesh | None = None, rules=None):
    self.cfg = as_model_config(model_cfg)
    self.mesh = default_mesh() if mesh is None else mesh
    self.rules = list(sharding.DEFAULT_RULES if rules is None else rules)
    self.model = model_lib.Transformer(self.cfg)
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                    params)
    self.param_shardings = sharding.logical_sharding(
        self.mesh, self.rules, model_lib.param_axes(self.cfg), shapes)
    self.params = jax.device_put(params, self.param_shardings)
    self.batch_divisor = sharding.batch_divisor(self.mesh, self.rules)
    self._rows = self._sharding(("batch",))
    self._steps = {}  # (batch, cache length, streaming) -> (prefill, decode), jitted
    self._pick_first_jit = jax.jit(self._pick_first, out_shardings=self._rows)

  def _sharding(self, names):
    return NamedSharding(self.mesh, nn.logical_to_mesh_axes(names, self.rules))

  def steps(self, batch: int, cache_len: int, rolling: streaming.Rolling | None = None):
    """The jitted (prefill, decode) pair of one (batch, cache length) bucket (streaming:
    prefill is ``(rolling, init, chunk)`` for ``streaming.prefill``). Explicit
    output shardings keep the step's inputs identical from one token to the next, so
    prefill compiles once per prompt-length bucket and decode once per power-of-two
    visible length (attention over the filled part of the cache only: 1.3-1.6x faster
    decoding than attending to all of it, benchmarks/generate.py)."""
    key = (batch, cache_len, rolling)
    if key not in self._steps:
      cache_shapes = jax.eval_shape(lambda: model_lib.init_cache(self.cfg, batch, cache_len))
      cache_sh = sharding.logical_sharding(self.mesh, self.rules, _cache_axes(cache_shapes),
                                           cache_shapes)
      rows, logits = self._rows, self._sharding(("batch", "vocab"))
      if rolling is None:
        prefill = jax.jit(functools.partial(self._prefill_fn, cache_len),
                          out_shardings=(rows, logits, cache_sh))
      else:  # the prompt in chunks: streaming.prefill
        prefill = streaming.prefill_steps(self.model, rolling, batch, cache_sh, logits,
                                          model_lib.init_cache)
      decode = jax.jit(functools.partial(self._decode_fn, rolling), static_argnums=(0,),
                       donate_argnums=(2,), out_shardings=(rows, logits, cache_sh, rows))
      self._steps[key] = (prefill, decode)
    return self._steps[key]

  # --- the two jitted steps -------------------------------------------------------

  def _prefill_fn(self, cache_len, params, tokens_BxT, lengths_B, keys_B, settings,
                  allowed_BxV):
    """A fresh cache from the prompts, and each row's first new token."""
    B, T = tokens_BxT.shape
    long_B = lengths_B > _longrope_original_length(self.cfg)
    cache = model_lib.init_cache(self.cfg, B, cache_len)
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    logits, cache = self.model.apply({"params": params}, tokens_BxT, positions,
                                     cache=cache, long_rope_B=long_B,
                                     logits_at_B=lengths_B - 1)
    logits = logits[:, 0]
    return self._pick_first(logits, keys_B, lengths_B, settings, allowed_BxV), logits, cache

  def _pick_first(self, logits_BxV, keys_B, lengths_B, settings, allowed_BxV):
    allowed_BxV &= _below(settings[3], logits_BxV.shape[-1])
    return pick_tokens(jnp.where(allowed_BxV, logits_BxV, -jnp.inf), keys_B, lengths_B,
                       *settings[:3])

  def _decode_fn(self, rolling, visible, params, cache, ids_B, positions_B, keys_B,
                 settings):
    """Feeds each row's token at ``positions`` and picks the one after it; returns the
    next positions too, so the loop never sends positions to the device. Attention
    reads the cache's first ``visible`` slots only (static: above every position)."""
    if rolling is None:
      kw = dict(long_rope_B=positions_B + 1 > _longrope_original_length(self.cfg))
    else:
      kw = dict(stream=streaming.Stream(positions_B, jnp.ones_like(positions_B), rolling))
    logits, cache = self.model.apply({"params": params}, ids_B[:, None],
                                     positions_B[:, None], cache=cache,
                                     cache_visible=visible, **kw)
    logits = logits[:, 0]
    nxt = positions_B + 1
    usable = jnp.where(_below(settings[3], logits.shape[-1]), logits, -jnp.inf)
    return pick_tokens(usable, keys_B, nxt, *settings[:3]), logits, cache, nxt

  def _run(self, fn, *args):
    with sharding.mesh_context(self.mesh), nn.logical_axis_rules(self.rules):
      return fn(*args)

  def _put(self, x):
    return jax.device_put(np.asarray(x), self._rows)

  # --- the host loop --------------------------------------------------------------

  def cache_len(self, longest_prompt: int, max_new_tokens: int) -> int:
    return bucket(longest_prompt + max_new_tokens, self.cfg.max_position_embeddings)

  def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               seed: int = 0, keys=None, eos_id: int | None = None, tokenizer=None,
               stop: Sequence[str] = (), first_allowed=None, id_limit: int | None = None,
               return_logits: bool = False, sink_tokens: int | None = None,
               window: int | None = None) -> list[Output]:
    """Continues every prompt (lists of token ids); one ``Output`` per prompt.

    ``keys``: one PRNG key per prompt (default ``fold_in(key(seed), i)``).
    ``stop``: strings that end a row (needs ``tokenizer`` to read the text; the text
    is cut before the stop string). ``first_allowed``: bool ``[vocab]`` (or one row
    per prompt, None for no limit), the ids the first new token may take.
    ``id_limit``: ids at or above it are never generated (default: ``tokenizer``'s
    vocabulary size, else the model's): a model whose embedding is padded past its
    tokenizer (phi-2: 51,200 rows, 50,295 tokens) must not emit ids that mean no text.
    ``return_logits``: each Output keeps its logits (float32 ``[new tokens, vocab]``,
    as the model gives them; for tests and probes).
    ``window`` (with ``sink_tokens``, default 0): stream (``phijax.model.streaming``):
    keep the first ``sink_tokens`` tokens and the last ``window`` in a cache of that many
    slots, so prompt and continuation may be any length.
    """
    cfg = self.cfg
    rows = len(prompts)
    if rows == 0:
      return []
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if stop and tokenizer is None:
      raise ValueError("stop strings need the tokenizer to read the generated text")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
      raise ValueError(f"sampling needs temperature >= 0, 0 < top_p <= 1, top_k >= 0; got "
                       f"temperature={temperature}, top_p={top_p}, top_k={top_k}")
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    for i, p in enumerate(prompts):
      if len(p) == 0:
        raise ValueError(f"prompt {i} is empty: decoding needs at least one token")
      if max(p) >= cfg.vocab_size or min(p) < 0:
        raise ValueError(f"prompt {i} has token id {max(p)} outside the model's "
                         f"vocabulary of {cfg.vocab_size}: not this model's tokenizer?")
    rolling = streaming.rolling(cfg, sink_tokens, window)
    S = self.cache_len(int(lengths.max()), max_new_tokens) if rolling is None else (
        rolling.slots)
    if rolling is None and lengths.max() >= S:
      raise ValueError(f"a prompt of {lengths.max()} tokens does not fit the cache: the "
                       f"model takes {cfg.max_position_embeddings} positions "
                       "(max_position_embeddings), so at most "
                       f"{cfg.max_position_embeddings - 1} prompt tokens; shorten the prompt")

    B = _round_up(1 << (rows - 1).bit_length(), self.batch_divisor)
    pad = B - rows  # extra rows copy row 0; their tokens are dropped
    lengths = np.concatenate([lengths, np.full(pad, lengths[0], np.int32)])
    tokens = np.zeros((B, S if rolling is None else max(S, int(lengths.max()))), np.int32)
    for i in range(B):
      p = prompts[i] if i < rows else prompts[0]
      tokens[i, :len(p)] = p
    if keys is None:
      base = jax.random.key(seed)
      keys = [jax.random.fold_in(base, i) for i in range(rows)]
    elif len(keys) != rows:
      raise ValueError(f"{len(keys)} keys for {rows} prompts")
    keys = jnp.stack(list(keys) + [keys[0]] * pad)
    keys = jax.device_put(keys, self._rows)
    if id_limit is None:
      id_limit = getattr(tokenizer, "vocab_size", None) or cfg.vocab_size
    if not 0 < id_limit <= cfg.vocab_size:
      raise ValueError(f"id_limit={id_limit} must be in 1..{cfg.vocab_size} (the model's "
                       "vocabulary)")
    settings = (jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p),
                jnp.int32(id_limit))
    any_id = np.ones((B, cfg.vocab_size), bool)
    allowed = any_id.copy()
    if first_allowed is not None:
      per_row = (first_allowed if len(first_allowed) == rows and not np.isscalar(
          first_allowed[0]) else [first_allowed] * rows)
      for i, a in enumerate(per_row):
        if a is not None:
          allowed[i] = np.asarray(a, bool)
    # A streaming cache keeps LongRoPE's short factors: no rebuild.
    orig = _longrope_original_length(cfg) if rolling is None else np.iinfo(np.int32).max
    params = self.params
    prefill_step, decode_step = self.steps(B, S, rolling)

    def prefill(seq_lengths, allowed_ids):
      if rolling is not None:
        logits, cache = streaming.prefill(prefill_step, params, tokens, seq_lengths,
                                          bucket(int(seq_lengths.max()), S), self._run,
                                          self._put)
        seq_lengths = self._put(seq_lengths)
        ids = self._run(self._pick_first_jit, logits, keys, seq_lengths, settings,
                        self._put(allowed_ids))
        return ids, logits, cache, seq_lengths
      T = bucket(int(seq_lengths.max()), S)
      seq_lengths = self._put(seq_lengths)
      out = self._run(prefill_step, params, self._put(tokens[:, :T]), seq_lengths,
                      keys, settings, self._put(allowed_ids))
      return (*out, seq_lengths)

    ids_dev, logits_dev, cache, positions_dev = prefill(lengths, allowed)
    out = [[] for _ in range(rows)]
    kept_logits = [[] for _ in range(rows)]
    finish = [None] * rows
    texts = [None] * rows
    for step in range(max_new_tokens):
      positions = lengths + step  # where the tokens in ids_dev go
      nxt = None
      if step + 1 < max_new_tokens:
        # Decoding the token at position p makes the sequence p + 1 long.
        rebuild = (positions == orig) & (lengths <= orig)
        if rebuild[:rows].any():
          tokens[np.arange(B), np.minimum(positions, S - 1)] = np.asarray(ids_dev)
          nxt = prefill(np.minimum(positions + 1, S), any_id)
        else:
          visible = bucket(int(positions.max()) + 1, S)
          nxt = self._run(decode_step, visible, params, cache, ids_dev, positions_dev,
                          keys, settings)
      ids = np.asarray(ids_dev)
      tokens[np.arange(B), np.minimum(positions, S - 1)] = ids
      if return_logits:
        step_logits = np.asarray(logits_dev)
      for b in range(rows):
        if finish[b] is not None:
          continue
        if return_logits:
          kept_logits[b].append(step_logits[b])
        if eos_id is not None and ids[b] == eos_id:
          finish[b] = "eos"
          continue
        out[b].append(int(ids[b]))
        if stop:
          text = tokenizer.decode(out[b])
          cut = _first_stop(text, stop)
          if cut is not None:
            finish[b], texts[b] = "stop", text[:cut]
            continue
        if len(out[b]) == max_new_tokens:
          finish[b] = "length"
        elif positions[b] + 1 >= S and rolling is None:
          finish[b] = "cache" if S == cfg.max_position_embeddings else "length"
      if all(f is not None for f in finish) or nxt is None:
        break
      ids_dev, logits_dev, cache, positions_dev = nxt
    finish = [f or "length" for f in finish]
    results = []
    for b in range(rows):
      text = texts[b]
      if text is None and tokenizer is not None:
        text = tokenizer.decode(out[b])
      results.append(Output(out[b], finish[b], text,
                            np.stack(kept_logits[b]) if return_logits else None))
    return results

  def complete(self, tokenizer, prompts: Sequence[str], *, n: int = 1,
               max_new_tokens: int = 128, batch_size: int = 32, stop: Sequence[str] = (),
               seed: int = 0, key_ids: Sequence[int] | None = None, progress=None,
               **sampling) -> list[list[Output]]:
    """``n`` continuations of each text prompt, in batches of at most ``batch_size``
    rows. Sample j of prompt i draws from ``fold_in(fold_in(key(seed), key_ids[i]), j)``
    (``key_ids`` default ``0, 1, ...``), so the result does not depend on
    ``batch_size``. ``progress(done, total)`` is called after each batch. ``sampling``:
    ``generate``'s settings (temperature, top_k, top_p, id_limit, sink_tokens, window).
    """
    if n < 1 or batch_size < 1:
      raise ValueError(f"n and batch_size must be at least 1, got n={n}, "
                       f"batch_size={batch_size}")
    base = jax.random.key(seed)
    key_ids = list(range(len(prompts))) if key_ids is None else list(key_ids)
    rows = [(i, j) for i in range(len(prompts)) for j in range(n)]
    encoded = [tokenizer.encode(p) for p in prompts]
    results: list[list[Output]] = [[None] * n for _ in prompts]
    for start in range(0, len(rows), batch_size):
      chunk = rows[start:start + batch_size]
      keys = [jax.random.fold_in(jax.random.fold_in(base, key_ids[i]), j) for i, j in chunk]
      outs = self.generate([encoded[i] for i, _ in chunk], keys=keys,
                           max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                           tokenizer=tokenizer, stop=stop, **sampling)
      for (i, j), o in zip(chunk, outs):
        results[i][j] = o
      if progress is not None:
        progress(min(start + batch_size, len(rows)), len(rows))
    return results


def _below(id_limit, vocab: int):
  """``[vocab]`` bool: the ids under ``id_limit`` (traced: no recompile per limit)."""
  return jnp.arange(vocab) < id_limit


def _cache_axes(cache):
  """The cache's logical names, as a tree of PartitionSpecs (what flax maps)."""
  return jax.tree_util.tree_map(lambda _: PartitionSpec(*model_lib.CACHE_AXES), cache)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _longrope_original_length(cfg) -> int:
  """Past this length LongRoPE uses its long factors; no LongRoPE: never."""
  if cfg.rope_scaling is None:
    return np.iinfo(np.int32).max
  return int(cfg.rope_scaling["original_max_position_embeddings"])


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
  hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
  return min(hits) if hits else None

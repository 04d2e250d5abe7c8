"""The Phi transformer as one Flax Linen module.

Two block variants, chosen by ``cfg.arch``:

- ``phi`` (phi-1, phi-1.5, phi-2): ``h = x + attn(LN(x)) + mlp(LN(x))``, one shared
  LayerNorm with bias, biased q/k/v/o, partial rotary, ``gelu_new`` MLP, final
  LayerNorm, untied ``lm_head`` with bias, optional per-head q/k LayerNorm.
- ``phi3`` (phi-3, phi-4): sequential pre-norm with RMSNorm, q/k/v and gate/up
  without bias, GQA, SwiGLU, LongRoPE, optional sliding window, ``lm_head`` without bias.

Hugging Face fuses q/k/v (phi3) and gate/up; here they are separate parameters so
that every tensor has clean logical axes for tensor parallelism. ``phijax.convert``
splits and fuses. Parameters are float32; ``cfg.dtype`` is the compute dtype;
normalisation statistics, softmax and logits are float32.

Tensor names carry their shapes: B batch, T length, D embed, H heads, K kv heads,
E head_dim, F mlp, V vocab.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from phijax.model import attention, lora, quant, rope, streaming
from phijax.model.config import ModelConfig, as_model_config

Partitioned = nn.with_logical_partitioning
constrain = nn.with_logical_constraint


def _dtype(name):
  return jnp.dtype(name)


def _normal(cfg, names):
  return Partitioned(nn.initializers.normal(cfg.init_std), names)


def _zeros(names):
  return Partitioned(nn.initializers.zeros_init(), names)


def _ones(names):
  return Partitioned(nn.initializers.ones_init(), names)


class LayerNorm(nn.Module):
  """LayerNorm with bias, statistics in float32, output in the compute dtype."""
  eps: float
  dtype: jnp.dtype
  names: tuple = ("embed",)

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param("scale", _ones(self.names), (d,), jnp.float32)
    bias = self.param("bias", _zeros(self.names), (d,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * scale + bias).astype(self.dtype)


class RMSNorm(nn.Module):
  """Phi-3 RMSNorm: normalise in float32, cast back, then multiply by the weight."""
  eps: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", _ones(("embed",)), (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (scale * y.astype(self.dtype)).astype(self.dtype)


class Dense(nn.Module):
  """Linear map contracting the last ``n_in`` dims of x into ``features``.

  Like ``nn.DenseGeneral`` but the kernel is created in its final shape, so the
  logical-partitioning constraint applies to the real parameter (DenseGeneral
  initialises a flattened kernel and reshapes it). With ``lora`` (a ``LoraConfig``)
  targeting this matrix's path, a LoRA adapter adds its low-rank term
  (``phijax.model.lora``).
  """
  features: tuple
  names: tuple  # logical names of the kernel: input dims then output dims
  use_bias: bool
  n_in: int
  dtype: jnp.dtype
  init_std: float
  lora: Any = None  # the model's LoraConfig when it has adapters, else None
  deterministic: bool = True  # the adapter's dropout is off

  def base_kernel(self, shape):
    """The base weight in float32: the one read of it. QLoRA (``lora.quantize``): the
    frozen base stored quantized, dequantized here (``phijax.model.quant``)."""
    if self.lora is not None and self.lora.quantize:
      kind = self.lora.quantize
      return quant.QuantizedKernel(kind, tuple(shape), self.names, self.init_std,
                                   name=quant.node_name(kind))()
    return self.param("kernel", Partitioned(nn.initializers.normal(self.init_std),
                                            self.names), shape, jnp.float32)

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.n_in:]
    kernel = self.base_kernel((*in_shape, *self.features))
    # One 2-D matmul, [tokens, fan_in] x [fan_in, fan_out]: XLA:CPU hands 2-D dots to
    # its fast library kernels, while a dot contracting several dims (the weight
    # gradient over batch and length) falls back to a generic one about 2x slower.
    lead = x.shape[:x.ndim - self.n_in]
    fan_in, fan_out = math.prod(in_shape), math.prod(self.features)
    x_NxI = x.astype(self.dtype).reshape(-1, fan_in)
    # float32 accumulation whatever the compute dtype: more exact in bfloat16, and on
    # CPUs with AVX512-BF16 about 2x faster than a bfloat16-output dot.
    y = jax.lax.dot_general(x_NxI, kernel.astype(self.dtype).reshape(fan_in, fan_out),
                            (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    y = y.reshape(*lead, *self.features)
    if self.use_bias:
      bias = self.param("bias", _zeros(self.names[self.n_in:]), self.features, jnp.float32)
      y = y + bias
    # Created after the base's parameters: a model with adapters draws the same base.
    if lora.targeted(self.lora, self.scope.path):
      delta = lora.Adapter(self.lora, tuple(in_shape), tuple(self.features), self.names,
                           self.dtype, name=lora.ADAPTER)(x_NxI, self.deterministic)
      y = y + delta.reshape(y.shape)
    return y.astype(self.dtype)


def _dense(cfg, features, names, name, use_bias, n_in=1, deterministic=True):
  features = (features,) if isinstance(features, int) else tuple(features)
  # Only block matrices come through here: under muP they start at hidden_init_std.
  return Dense(features, names, use_bias, n_in, _dtype(cfg.dtype), cfg.hidden_init_std,
               cfg.lora if cfg.lora.rank else None, deterministic, name=name)


def _attention_with_dropout(q, k, v, *, segment_ids, window, rate, rng):
  """XLA attention with dropout on the probabilities (training with attention_dropout).

  Fused kernels have no dropout, so this path is always plain XLA.
  """
  B, T, H, E = q.shape
  K = k.shape[2]
  q5 = q.reshape(B, T, K, H // K, E)
  s = jnp.einsum("btkge,bske->bkgts", q5, k, preferred_element_type=jnp.float32)
  s = s * (E ** -0.5)
  mask = attention.attention_mask(T, T, causal=True, q_segment_ids=segment_ids,
                                  kv_segment_ids=segment_ids, window=window)
  s = jnp.where(mask[:, None, None], s, -jnp.inf)
  p = jax.nn.softmax(s, axis=-1)
  keep = jax.random.bernoulli(rng, 1.0 - rate, p.shape)
  p = jnp.where(keep, p / (1.0 - rate), 0.0).astype(v.dtype)
  out = jnp.einsum("bkgts,bske->btkge", p, v, preferred_element_type=jnp.float32)
  return out.reshape(B, T, H, E).astype(q.dtype)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, cos, sin, segment_ids, deterministic, cache=None,
               positions_BxT=None, cache_visible=None, stream_plan=None):
    cfg = self.cfg
    H, K, E = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    bias = cfg.arch == "phi"
    dense = functools.partial(_dense, cfg, deterministic=deterministic)
    q = dense((H, E), ("embed", "heads", "head_dim"), "q_proj", bias)(x_BxTxD)
    k = dense((K, E), ("embed", "kv_heads", "head_dim"), "k_proj", bias)(x_BxTxD)
    v = dense((K, E), ("embed", "kv_heads", "head_dim"), "v_proj", bias)(x_BxTxD)
    if cfg.qk_layernorm:
      q = LayerNorm(cfg.layer_norm_eps, q.dtype, ("head_dim",), name="q_norm")(q)
      k = LayerNorm(cfg.layer_norm_eps, k.dtype, ("head_dim",), name="k_norm")(k)
    if stream_plan is None:  # a streaming cache keeps keys un-rotated (phijax.model.streaming)
      q = rope.apply_rotary(q, cos, sin)
      k = rope.apply_rotary(k, cos, sin)
    q = constrain(q, ("batch", "length", "heads", "head_dim"))
    k = constrain(k, ("batch", "length", "kv_heads", "head_dim"))
    v = constrain(v, ("batch", "length", "kv_heads", "head_dim"))
    new_cache = None
    if stream_plan is not None:
      o, new_cache = streaming.attention(q, k, v, cache, stream_plan)
    elif cache is not None:  # decoding: keys and values live at their absolute positions
      k_cache, v_cache = write_cache(cache["k"], k, positions_BxT), write_cache(
          cache["v"], v, positions_BxT)
      new_cache = {"k": k_cache, "v": v_cache}
      if cache_visible is not None:  # slots past every query stay masked: skip them
        k_cache, v_cache = k_cache[:, :cache_visible], v_cache[:, :cache_visible]
      o = attention.cached_attention(q, k_cache, v_cache, positions_BxT,
                                     window=cfg.sliding_window)
    elif cfg.attention_dropout > 0 and not deterministic:
      o = _attention_with_dropout(q, k, v, segment_ids=segment_ids,
                                  window=cfg.sliding_window, rate=cfg.attention_dropout,
                                  rng=self.make_rng("dropout"))
    else:
      o = attention.dot_product_attention(
          q, k, v, causal=True, segment_ids=segment_ids, window=cfg.sliding_window,
          impl=cfg.attention_impl)
    o = constrain(o, ("batch", "length", "heads", "head_dim"))
    out = dense(cfg.hidden_size, ("heads", "head_dim", "embed"), "o_proj", bias, n_in=2)(o)
    return out if cache is None else (out, new_cache)


CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")


def write_cache(cache_BxSxKxE, new_BxTxKxE, positions_BxT):
  """The cache with row b's new entries written at slots ``positions[b]``.

  Slots are absolute positions, so rows of different lengths share one cache;
  positions past the cache's end are dropped (a finished row may run on).
  """
  B = cache_BxSxKxE.shape[0]
  rows = jnp.arange(B)[:, None]
  out = cache_BxSxKxE.at[rows, positions_BxT].set(new_BxTxKxE.astype(cache_BxSxKxE.dtype),
                                                  mode="drop")
  return constrain(out, CACHE_AXES)


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool = True):
    cfg = self.cfg
    F = cfg.mlp_dim
    dense = functools.partial(_dense, cfg, deterministic=deterministic)
    if cfg.arch == "phi":
      h = dense(F, ("embed", "mlp"), "fc1", True)(x_BxTxD)
      h = jax.nn.gelu(h, approximate=True)  # HF "gelu_new"
      h = constrain(h, ("batch", "length", "mlp"))
      return dense(cfg.hidden_size, ("mlp", "embed"), "fc2", True)(h)
    gate = dense(F, ("embed", "mlp"), "gate_proj", False)(x_BxTxD)
    up = dense(F, ("embed", "mlp"), "up_proj", False)(x_BxTxD)
    h = constrain(up * jax.nn.silu(gate), ("batch", "length", "mlp"))
    return dense(cfg.hidden_size, ("mlp", "embed"), "down_proj", False)(h)


class Block(nn.Module):
  cfg: ModelConfig
  resid_pdrop: float

  @nn.compact
  def __call__(self, x_BxTxD, cos, sin, segment_ids, deterministic, cache=None,
               positions_BxT=None, cache_visible=None, stream_plan=None):
    cfg = self.cfg
    dtype = _dtype(cfg.dtype)
    drop = nn.Dropout(self.resid_pdrop)

    def branch(y):  # a residual branch as it is added; muP scales it (MiniCPM)
      y = drop(y, deterministic=deterministic)
      return y * cfg.residual_scale if cfg.mup else y

    attn = Attention(cfg, name="attn")
    norm = LayerNorm if cfg.arch == "phi" else RMSNorm
    h = norm(cfg.layer_norm_eps, dtype, name="input_norm")(x_BxTxD)
    a = attn(h, cos, sin, segment_ids, deterministic, cache, positions_BxT, cache_visible,
             stream_plan)
    if cache is not None:
      a, cache = a
    if cfg.arch == "phi":
      m = Mlp(cfg, name="mlp")(h, deterministic)
      out = x_BxTxD + branch(a) + branch(m)
    else:
      x = x_BxTxD + branch(a)
      h = RMSNorm(cfg.layer_norm_eps, dtype, name="post_attention_norm")(x)
      out = x + branch(Mlp(cfg, name="mlp")(h, deterministic))
    out = constrain(out.astype(dtype), ("batch", "length", "embed"))
    return out if cache is None else (out, cache)


_REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def residual_dropout_rates(cfg: ModelConfig) -> list[float]:
  """Per-layer residual dropout; ``linear`` rises from 0 (bottom) to p (top), as LIMA."""
  L, p = cfg.num_layers, cfg.resid_pdrop
  if cfg.resid_pdrop_schedule == "linear" and L > 1:
    return [p * i / (L - 1) for i in range(L)]
  return [p] * L


class Transformer(nn.Module):
  """``logits = Transformer(cfg).apply({"params": p}, tokens, positions, segment_ids)``.

  ``cfg`` is a ``ModelConfig`` (or a dict / ``config.model`` ConfigDict).
  ``positions`` default to ``0..T-1``; packed rows pass per-document positions and
  ``segment_ids`` so documents neither see each other nor share positions.
  Dropout is active with ``deterministic=False`` and a ``dropout`` rng.
  Returns float32 logits ``[B, T, V]``.

  Decoding (``phijax.model.decode``) passes ``cache``: one ``{"k", "v"}`` dict of
  ``[B, S, K, E]`` arrays per layer (``init_cache``). ``positions`` are then each
  token's absolute slot in the cache; new keys/values are written there and queries
  attend to the slots at or before their own (and inside the sliding window). It
  returns ``(logits, new_cache)``; ``cache_visible`` (a static int above every
  position) limits attention to the cache's first slots. ``long_rope_B`` picks
  LongRoPE factors per row. ``stream`` (a ``streaming.Stream``) makes ``cache`` a
  streaming one: the first tokens plus a rolling window, rotary positions within the
  cache, ``positions`` unused. ``logits_at_B`` keeps only position ``logits_at_B[b]`` of
  each row (``[B, 1, V]``). ``head_inputs=True`` returns ``(x, lm_head, lm_head_bias or
  None)`` instead of logits: the final hidden states and the head's parameters, for a
  loss that applies the head chunk by chunk (``phijax.model.head_loss``).

  With ``cfg.random_position_offset`` and ``deterministic=False`` (training) each
  row's positions are shifted by one random offset (``random_position_offsets``, drawn
  from the ``dropout`` rng, so the train step's per-step key makes a resume exact).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT=None, segment_ids_BxT=None, *,
               deterministic: bool = True, cache=None, cache_visible=None, long_rope_B=None,
               logits_at_B=None, head_inputs: bool = False, stream=None):
    cfg = as_model_config(self.cfg)
    dtype = _dtype(cfg.dtype)
    B, T = tokens_BxT.shape
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    if cfg.random_position_offset and not deterministic and cache is None:
      positions_BxT = positions_BxT + random_position_offsets(
          self.make_rng("dropout"), B, T, cfg.max_position_embeddings)
      self.sow("intermediates", "positions", positions_BxT)  # for tests and probes
    embed = self.param("embed", _normal(cfg, ("vocab", "embed")),
                       (cfg.vocab_size, cfg.hidden_size), jnp.float32)
    x = jnp.take(embed, tokens_BxT, axis=0).astype(dtype)
    if cfg.mup:  # MiniCPM's scale_emb
      x = x * cfg.mup_scale_emb
    if cfg.arch == "phi":  # HF Phi3 accepts embd_pdrop but never applies it
      x = nn.Dropout(cfg.embd_pdrop)(x, deterministic=deterministic)
    x = constrain(x, ("batch", "length", "embed"))
    self.sow("intermediates", "embedding", x)  # for phijax.mup_check; else a no-op
    if stream is None:
      cos, sin = rope.cos_sin(cfg, positions_BxT, long_rope_B)
    elif cache is None:
      raise ValueError("stream describes a streaming cache: pass the cache too")
    else:  # each layer rotates by position within the cache: one plan for them all
      cos = sin = None
      stream = streaming.plan(cfg, stream, T, cache_visible)

    if cache is not None:
      if segment_ids_BxT is not None:
        raise ValueError("decoding with a cache takes no segment_ids (one sequence per row)")
      new_cache = []
      for i, (p, layer_cache) in enumerate(zip(residual_dropout_rates(cfg), cache)):
        x, layer_cache = Block(cfg, p, name=f"layers_{i}")(
            x, cos, sin, None, deterministic, layer_cache, positions_BxT, cache_visible,
            stream)
        new_cache.append(layer_cache)
    else:
      block_cls = Block
      if cfg.remat != "none":
        block_cls = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], static_argnums=(5,))
      for i, p in enumerate(residual_dropout_rates(cfg)):
        x = block_cls(cfg, p, name=f"layers_{i}")(x, cos, sin, segment_ids_BxT, deterministic)
    if logits_at_B is not None:  # only the rows' last positions need the vocab matmul
      x = jnp.take_along_axis(x, jnp.asarray(logits_at_B)[:, None, None], axis=1)

    if cfg.arch == "phi":
      x = LayerNorm(cfg.layer_norm_eps, dtype, name="final_norm")(x)
    else:
      x = RMSNorm(cfg.layer_norm_eps, dtype, name="final_norm")(x)
    if cfg.mup:
      # MiniCPM divides the hidden states (not the bias) by width_mult; lm_head keeps
      # the plain init_std and learning rate, as muP's readout (and MiniCPM's lm_head,
      # tied to the embedding) does: this division alone keeps its updates' effect
      # on the logits flat in width.
      x = x / cfg.width_mult
    w = self.param("lm_head", _normal(cfg, ("embed", "vocab")),
                   (cfg.hidden_size, cfg.vocab_size), jnp.float32)
    b = None
    if cfg.arch == "phi":
      b = self.param("lm_head_bias", _zeros(("vocab",)), (cfg.vocab_size,), jnp.float32)
    if head_inputs:  # the caller applies the head itself (phijax.model.head_loss)
      return x, w, b
    logits = jnp.einsum("btd,dv->btv", x, w.astype(dtype),
                        preferred_element_type=jnp.float32)
    if b is not None:
      logits = logits + b
    logits = constrain(logits, ("batch", "length", "vocab"))
    return logits if cache is None else (logits, tuple(new_cache))


def random_position_offsets(rng, batch: int, length: int, max_positions: int):
  """``[B, 1]`` int32 offsets, uniform in ``[0, max_positions - length]``: a row's
  positions (each below ``length``) stay below ``max_positions``."""
  return jax.random.randint(rng, (batch, 1), 0, max(max_positions - length, 0) + 1,
                            dtype=jnp.int32)


def init_cache(cfg, batch_size: int, max_len: int):
  """An empty decoding cache: per layer ``{"k", "v"}`` zeros ``[B, max_len, K, E]`` in the
  compute dtype (GQA-sized: kv heads, not q heads)."""
  cfg = as_model_config(cfg)
  shape = (batch_size, max_len, cfg.kv_heads, cfg.dim_per_head)
  return tuple({"k": jnp.zeros(shape, _dtype(cfg.dtype)),
                "v": jnp.zeros(shape, _dtype(cfg.dtype))} for _ in range(cfg.num_layers))


def init_params(cfg, rng, batch_size=1, length=8):
  """Unboxed float32 parameters (logical names dropped; see ``param_axes``)."""
  model = Transformer(as_model_config(cfg))
  tokens = jnp.zeros((batch_size, length), jnp.int32)
  return nn.unbox(model.init(rng, tokens)["params"])


def abstract_params(cfg):
  """Shapes of the boxed parameters via ``jax.eval_shape``: no memory allocated."""
  model = Transformer(as_model_config(cfg))
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  return jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]


def param_axes(cfg):
  """The pytree of logical axis names (``nn.LogicallyPartitioned`` boxes' names)."""
  boxed = abstract_params(cfg)
  return nn.get_partition_spec(boxed)


def count_params(cfg) -> int:
  return _count_params(as_model_config(cfg))


@functools.lru_cache(maxsize=32)
def _count_params(cfg: ModelConfig) -> int:
  # Cached: tracing the model's init takes ~70 ms, and the training loop asks at every
  # logged step (MFU).
  return quant.parameter_count(nn.unbox(abstract_params(cfg)))

"""One door for attention: ``dot_product_attention`` and its XLA reference.

Layout is ``[batch, length, heads, head_dim]`` everywhere. Grouped-query attention
(kv heads dividing q heads) is computed by grouping q heads, never by repeating k/v.
The implementation is picked by ``impl``:

  xla         plain jnp: causal self-attention by query blocks that skip the masked
              upper triangle, a few sequences at a time, with a flash-style backward
              (``phijax/kernels/xla_blocked.py``); otherwise the dense reference
              ``xla_attention`` every kernel is tested against
  pallas_gpu  our Pallas flash attention, Triton lowering (phijax/kernels/gpu_triton.py)
  pallas_tpu  our Pallas flash attention, Mosaic TPU (phijax/kernels/tpu_mosaic.py)
  cudnn       jax.nn.dot_product_attention(implementation="cudnn")
  auto        pallas_gpu on GPU, pallas_tpu on TPU, xla elsewhere; a case the
              kernel cannot take falls back to xla with one warning
  reference   always the dense ``xla_attention``, differentiated by autodiff through
              every op: for forward-mode and higher derivatives (the sharpness probe's
              Hessian-vector products), which the other impls' custom VJPs refuse

Under a multi-device mesh the kernels (and cudnn) run once per shard through
``shard_map`` (``phijax/kernels/per_shard.py``): batch split like the rules' ``batch``,
heads like ``heads``/``kv_heads``; a layout they cannot take per shard (e.g. a tensor
axis that does not divide the kv heads) is one more unsupported case.

An explicit impl that cannot take a case raises ``UnsupportedAttention`` (a
ValueError) naming the reason. Pallas kernels run on CPU in interpret mode: pass
``interpret=True``, or set ``PHIJAX_PALLAS_INTERPRET=1``, or wrap the code (the
tracing of a jitted function, e.g. ``Transformer.apply``) in ``interpret_mode()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings

import jax
import jax.numpy as jnp

from phijax.kernels.flash import UnsupportedAttention  # no Pallas import: stays light

IMPLS = ("xla", "pallas_gpu", "pallas_tpu", "cudnn", "auto", "reference")
INTERPRET_ENV = "PHIJAX_PALLAS_INTERPRET"

_interpret_override = contextvars.ContextVar("phijax_pallas_interpret", default=None)
_warned: set = set()


@contextlib.contextmanager
def interpret_mode(enabled: bool = True):
  """Runs Pallas impls in interpret mode (CPU) when ``interpret`` is left None.

  The flag is read when attention is traced, so enter it around the first call
  (the trace) of a jitted function; a cached trace keeps the mode it was traced in.
  """
  token = _interpret_override.set(bool(enabled))
  try:
    yield
  finally:
    _interpret_override.reset(token)


def _resolve_interpret(interpret):
  if interpret is not None:
    return bool(interpret)
  override = _interpret_override.get()
  if override is not None:
    return override
  return os.environ.get(INTERPRET_ENV, "").strip().lower() not in ("", "0", "false", "no")


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


def _attend(q_BxTxKxGxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS, scale):
  """Masked softmax of grouped-q scores: ``(probs, masked scores [B,K,G,T,S] f32, mask)``."""
  s_BxKxGxTxS = jnp.einsum(
      "btkgd,bskd->bkgts", q_BxTxKxGxD, k_BxSxKxD,
      preferred_element_type=jnp.float32) * scale
  mask = mask_BxTxS[:, None, None]
  # A finite fill and jax.nn.softmax (whose custom JVP keeps the max out of the
  # backward pass) run the backward about 1.8x faster on CPU than exp/sum by hand.
  s_BxKxGxTxS = jnp.where(mask, s_BxKxGxTxS, jnp.finfo(jnp.float32).min)
  p = jax.nn.softmax(s_BxKxGxTxS, axis=-1)
  return p, s_BxKxGxTxS, mask


def xla_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, *, causal=True, segment_ids=None,
                  window=None, scale=None, return_lse=False):
  """Reference attention in plain jnp over the whole score matrix; softmax in float32.

  Returns ``out [B, T, H, D]`` in q's dtype, and with ``return_lse`` also the
  natural-log sum-exp of the scaled scores ``[B, H, T]`` (float32).
  """
  B, T, H, D = q_BxTxHxD.shape
  S, K = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
  G = H // K
  scale = 1.0 / math.sqrt(D) if scale is None else scale
  q_seg, kv_seg = _split_segment_ids(segment_ids)
  mask_BxTxS = attention_mask(T, S, causal=causal, q_segment_ids=q_seg,
                              kv_segment_ids=kv_seg, window=window)
  p, s_BxKxGxTxS, mask = _attend(q_BxTxHxD.reshape(B, T, K, G, D), k_BxSxKxD, v_BxSxKxD,
                                 mask_BxTxS, scale)
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


def cached_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, q_positions_BxT, *, window=None,
                     scale=None):
  """Queries at absolute positions ``q_positions`` over a decoding cache of S slots.

  Slot j is visible to a query at position i iff ``j <= i`` (and ``j > i - window``):
  slots past a row's current position hold padding or stale entries and stay unseen.
  Plain XLA: a decode step is one query row per sequence, a matrix-vector product
  that fused kernels would not speed up.
  """
  B, T, H, D = q_BxTxHxD.shape
  S, K = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
  scale = 1.0 / math.sqrt(D) if scale is None else scale
  q_pos = q_positions_BxT[:, :, None]
  kv_pos = jnp.arange(S)[None, None, :]
  mask_BxTxS = kv_pos <= q_pos
  if window is not None:
    mask_BxTxS = mask_BxTxS & (kv_pos > q_pos - window)
  p, _, _ = _attend(q_BxTxHxD.reshape(B, T, K, H // K, D), k_BxSxKxD, v_BxSxKxD,
                    mask_BxTxS, scale)
  out = jnp.einsum("bkgts,bskd->btkgd", p.astype(v_BxSxKxD.dtype), v_BxSxKxD,
                   preferred_element_type=jnp.float32)
  return out.reshape(B, T, H, D).astype(q_BxTxHxD.dtype)


def _xla_impl(q, k, v, *, causal, segment_ids, window, scale):
  """The ``xla`` impl: causal self-attention by cache-sized query blocks
  (``phijax/kernels/xla_blocked.py``), anything else by the dense reference."""
  if causal and q.shape[1] == k.shape[1] and not isinstance(segment_ids, (tuple, list)):
    from phijax.kernels import per_shard, xla_blocked
    ways = per_shard.batch_ways(per_shard.layout())
    return xla_blocked.causal_attention(q, k, v, segment_ids=segment_ids, window=window,
                                        scale=scale, mesh_batch_ways=ways)
  return xla_attention(q, k, v, causal=causal, segment_ids=segment_ids, window=window,
                       scale=scale)


def _platform():
  """The default JAX backend: "cpu", "gpu" or "tpu" (a function so tests can patch it)."""
  return jax.default_backend()


def _kernel_module(impl):
  # Imported on first use: `import phijax.model.attention` stays light.
  if impl == "pallas_gpu":
    from phijax.kernels import gpu_triton
    return gpu_triton
  from phijax.kernels import tpu_mosaic
  return tpu_mosaic


def _cudnn_unsupported_reason(q, k, v, *, causal, window):
  device = jax.devices()[0]
  if device.platform != "gpu":
    return f"needs an NVIDIA GPU (the default device is {device.platform})"
  if q.dtype not in (jnp.bfloat16, jnp.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
    return f"needs bfloat16 or float16 q/k/v, got {q.dtype}, {k.dtype}, {v.dtype}"
  D = q.shape[-1]
  hopper = float(getattr(device, "compute_capability", "0") or 0) >= 9.0
  max_d = 256 if hopper else 128
  if D % 8 or D > max_d:
    return f"needs head_dim a multiple of 8 and <= {max_d} on this GPU, got {D}"
  if window is not None and not causal:
    return "supports a sliding window only together with causal masking"
  return None


def _unsupported_reason(impl, q, k, v, *, causal, segment_ids, window, interpret):
  """Why ``impl`` cannot run this call on this machine and mesh (one line), or None."""
  from phijax.kernels import per_shard
  if impl == "cudnn":
    reason = _cudnn_unsupported_reason(q, k, v, causal=causal, window=window)
  else:
    want = "gpu" if impl == "pallas_gpu" else "tpu"
    if not interpret and _platform() != want:
      return (f"needs a {want.upper()} (the default backend is {_platform()}); to run it "
              f"on CPU use interpret=True, {INTERPRET_ENV}=1 or attention.interpret_mode()")
    reason = _kernel_module(impl).unsupported_reason(q, k, v, window=window,
                                                     segment_ids=segment_ids)
  if reason is None:
    reason = per_shard.unsupported_reason(q, k)
    if reason is not None:
      reason = f"cannot run per shard under this mesh: {reason}"
  return reason


def _choose_impl(impl, q, k, v, *, causal, segment_ids, window, interpret):
  """The impl that will run: ``auto`` resolved, unsupported cases handled."""
  if impl not in IMPLS:
    raise ValueError(f"unknown attention impl {impl!r}; choose one of {IMPLS}")
  if impl in ("xla", "reference"):
    return impl
  explicit = impl != "auto"
  if impl == "auto":
    impl = {"gpu": "pallas_gpu", "tpu": "pallas_tpu"}.get(_platform(), "xla")
    if impl == "xla":
      return impl
  reason = _unsupported_reason(impl, q, k, v, causal=causal, segment_ids=segment_ids,
                               window=window, interpret=interpret)
  if reason is None:
    return impl
  if explicit:
    raise UnsupportedAttention(f"attention impl {impl!r}: {reason}")
  message = f"attention impl 'auto' -> {impl!r} cannot take this case ({reason}); using xla"
  if message not in _warned:
    _warned.add(message)
    warnings.warn(message, stacklevel=3)
  return "xla"


def _cudnn_attention(q, k, v, *, causal, segment_ids, window, scale):
  mask = None
  q_seg, kv_seg = _split_segment_ids(segment_ids)
  if q_seg is not None:  # cuDNN takes packed documents as a [B, 1, T, S] mask
    mask = (q_seg[:, :, None] == kv_seg[:, None, :])[:, None]
  return jax.nn.dot_product_attention(
      q, k, v, mask=mask, scale=scale, is_causal=causal,
      local_window_size=None if window is None else (window - 1, 0),
      implementation="cudnn")


def dot_product_attention(q, k, v, *, causal=True, segment_ids=None, window=None,
                          scale=None, impl="auto", interpret=None):
  """Attention over ``[B, T, H, D]`` q and ``[B, S, K, D]`` k/v (K divides H).

  Args:
    causal: mask keys after the query.
    segment_ids: ``[B, T]`` ints (packed documents attend only within their own
      segment), or a ``(q_segment_ids, kv_segment_ids)`` pair.
    window: sliding window size in keys (Phi-3 convention), or None.
    scale: softmax scale, default ``1/sqrt(D)``.
    impl: one of ``IMPLS`` (see the module docstring).
    interpret: run Pallas kernels in interpret mode (CPU testing); None reads
      ``interpret_mode()`` and then ``$PHIJAX_PALLAS_INTERPRET``.
  """
  check_shapes(q, k, v)
  interpret = _resolve_interpret(interpret)
  impl = _choose_impl(impl, q, k, v, causal=causal, segment_ids=segment_ids,
                      window=window, interpret=interpret)
  if impl == "reference":
    return xla_attention(q, k, v, causal=causal, segment_ids=segment_ids, window=window,
                         scale=scale)
  if impl == "xla":
    return _xla_impl(q, k, v, causal=causal, segment_ids=segment_ids, window=window,
                     scale=scale)
  from phijax.kernels import per_shard  # kernels run per shard under a mesh
  if impl == "cudnn":
    fn = lambda q, k, v, ids: _cudnn_attention(  # noqa: E731
        q, k, v, causal=causal, segment_ids=ids, window=window, scale=scale)
  else:
    fn = per_shard.kernel_call(_kernel_module(impl), causal=causal, window=window,
                               scale=scale, interpret=interpret)
  return per_shard.call(fn, q, k, v, segment_ids)


def dot_product_attention_with_lse(q, k, v, *, causal=True, segment_ids=None,
                                   window=None, scale=None, impl="auto", interpret=None):
  """Like ``dot_product_attention`` but returns ``(out, lse)``.

  ``lse [B, H, T]`` float32 is the natural-log sum-exp of the scaled scores over
  the visible keys (``-inf`` where a query sees none); gradients flow through
  both. cuDNN does not return it, so ``impl="cudnn"`` is refused.
  """
  check_shapes(q, k, v)
  if impl == "cudnn":
    raise UnsupportedAttention("attention impl 'cudnn' does not return the log-sum-exp; "
                               "use xla, pallas_gpu, pallas_tpu or auto")
  interpret = _resolve_interpret(interpret)
  impl = _choose_impl(impl, q, k, v, causal=causal, segment_ids=segment_ids,
                      window=window, interpret=interpret)
  if impl in ("xla", "reference"):
    return xla_attention(q, k, v, causal=causal, segment_ids=segment_ids,
                         window=window, scale=scale, return_lse=True)
  from phijax.kernels import per_shard
  fn = per_shard.kernel_call(_kernel_module(impl), causal=causal, window=window,
                             scale=scale, interpret=interpret, return_lse=True)
  return per_shard.call(fn, q, k, v, segment_ids, return_lse=True)

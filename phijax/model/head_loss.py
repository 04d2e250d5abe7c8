"""The language-model head and its weighted cross entropy, a chunk of positions at a
time, gradients included: the ``[B, T, V]`` logits never exist whole.

    loss_sum, nll_sum = head_loss_sums(x, w, b, targets, weights, z_loss=0.0)

is ``sum_t weights_t * (nll_t + z_loss * lse_t^2)`` (and ``sum_t weights_t * nll_t``)
for ``logits = x @ w + b``. The weights (the loss mask) take no gradient, so the
gradient of the loss with respect to each chunk's logits,
``weights * (softmax * (1 + 2 z_loss lse) - onehot)``, is known in the forward pass:
each chunk's logits are made, reduced and turned into ``dx``, ``dw`` and ``db``
while they are still in cache, and the backward only scales those by the incoming
cotangent. Fused linear cross entropy: one pass over the logits where autodiff
makes five (the matmul's output, the bias add, the log-sum-exp, the softmax, the
bias gradient's reduction) through memory, and no ``[B, T, V]`` float32 buffer, which
for phi-1.5 at 8 x 2048 is 3.4 GB.

``nll_sum`` is a metric: it carries no gradient. ``token_nll(x, w, b, targets)`` is
the forward alone, per token and without gradient, by the same chunks: evaluation
and Rho-1's token scores (the model's and the reference's) use it, and Rho-1 then
trains through ``head_loss_sums`` with its selection as the weights. DPO's sequence
log-probabilities still use the model's logits and ``phijax.train.losses``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Positions per chunk: as many as keep a chunk's float32 logits (all rows of the
# batch) within this many bytes. On CPU, cache-sized: 4 MB measured best on a 2-core
# CPU for the tiny config (16 rows x 8192 vocab: 8 positions a chunk; 1.9x faster
# than the whole logits at once for the head's forward and backward). On GPU and TPU
# the chunks only bound memory and must stay large matmuls: 1 GiB (phi-1.5 at
# 8 x 2048: 4 chunks of 4,096 tokens; not yet timed on an accelerator).
CHUNK_BYTES = {"cpu": 4 << 20}
ACCELERATOR_CHUNK_BYTES = 1 << 30


def chunk_positions(B, T, V, platform=None) -> int:
  """Positions per chunk: the largest divisor of T whose logits fit the platform's
  chunk bytes (``platform`` defaults to JAX's default backend)."""
  platform = platform or jax.default_backend()
  fit = max(1, CHUNK_BYTES.get(platform, ACCELERATOR_CHUNK_BYTES) // (4 * B * V))
  return max(c for c in range(1, min(T, fit) + 1) if T % c == 0)


def _logits_nll(x_BxCxD, w_DxV, b_V, targets_BxC):
  """One chunk's float32 ``(probs, lse, nll)``."""
  logits = jnp.einsum("bcd,dv->bcv", x_BxCxD, w_DxV.astype(x_BxCxD.dtype),
                      preferred_element_type=jnp.float32)
  if b_V is not None:
    logits = logits + b_V
  m = jnp.max(logits, axis=-1, keepdims=True)
  e = jnp.exp(logits - m)
  total = jnp.sum(e, axis=-1, keepdims=True)
  lse = (m + jnp.log(total))[..., 0]
  nll = lse - jnp.take_along_axis(logits, targets_BxC[..., None], axis=-1)[..., 0]
  return e / total, lse, nll


def _chunk(x_BxCxD, w_DxV, b_V, targets_BxC, weights_BxC, z_loss):
  """One chunk: ``(loss_sum, nll_sum, dx [B, C, D] f32, dw [D, V] f32, db [V] f32)``."""
  p, lse, nll = _logits_nll(x_BxCxD, w_DxV, b_V, targets_BxC)
  loss = nll + z_loss * jnp.square(lse) if z_loss else nll
  onehot = jnp.arange(p.shape[-1], dtype=targets_BxC.dtype) == targets_BxC[..., None]
  if z_loss:
    p = p * (1.0 + 2.0 * z_loss * lse)[..., None]
  d = (p - onehot) * weights_BxC[..., None]  # d loss_sum / d logits
  dc = d.astype(x_BxCxD.dtype)
  dx = jnp.einsum("bcv,dv->bcd", dc, w_DxV.astype(x_BxCxD.dtype),
                  preferred_element_type=jnp.float32)
  dw = jnp.einsum("bcd,bcv->dv", x_BxCxD, dc, preferred_element_type=jnp.float32)
  db = None if b_V is None else jnp.sum(d, axis=(0, 1))
  return jnp.sum(loss * weights_BxC), jnp.sum(nll * weights_BxC), dx, dw, db


def _to_chunks(a, c):
  """``[B, T, ...]`` -> ``[T // c, B, c, ...]``: chunks of ``c`` positions, leading."""
  B, T = a.shape[:2]
  return jnp.moveaxis(a.reshape(B, T // c, c, *a.shape[2:]), 1, 0)


def _from_chunks(a):
  """The inverse of ``_to_chunks``."""
  n, B, c = a.shape[:3]
  return jnp.moveaxis(a, 0, 1).reshape(B, n * c, *a.shape[3:])


def _per_chunk(fn, x, w, b, targets):
  """``fn(x_chunk, w, b, targets_chunk) -> [B, C, ...]`` over the length in chunks (one
  call when one chunk holds it all; ``lax.map`` keeps one chunk's logits live at a
  time), re-joined to ``[B, T, ...]``."""
  B, T, _ = x.shape
  c = chunk_positions(B, T, w.shape[1])
  if c == T:
    return fn(x, w, b, targets)
  return _from_chunks(jax.lax.map(lambda xs: fn(xs[0], w, b, xs[1]),
                                  (_to_chunks(x, c), _to_chunks(targets, c))))


def _nll_and_loss(x_c, w, b, t_c, z_loss):
  """One chunk's float32 ``[B, C, 2]``: nll and nll + z_loss * lse^2, forward only."""
  _, lse, nll = _logits_nll(x_c, w, b, t_c)
  return jnp.stack([nll, nll + z_loss * jnp.square(lse) if z_loss else nll], axis=-1)


def token_nll(x_BxTxD, w_DxV, b_V, targets_BxT):
  """Per-token ``nll [B, T]`` (float32) of the logits ``x @ w (+ b)``, by the same
  chunks as ``head_loss_sums`` and without gradient: evaluation, and token scores."""
  x, w, b = jax.lax.stop_gradient((x_BxTxD, w_DxV, b_V))
  return _per_chunk(lambda *a: _logits_nll(*a)[2], x, w, b, targets_BxT)


def _sums_and_grads(x, w, b, targets, weights, z_loss):
  B, T, D = x.shape
  c = chunk_positions(B, T, w.shape[1])

  def body(carry, xs):
    loss, nll, dw, db = carry
    x_c, t_c, w_c = xs
    l, n_, dx, dw_c, db_c = _chunk(x_c, w, b, t_c, w_c, z_loss)
    db = db if db_c is None else db + db_c
    return (loss + l, nll + n_, dw + dw_c, db), dx

  if c == T:  # one chunk (small vocabularies and batches): no loop to compile
    loss, nll, dx, dw, db = _chunk(x, w, b, targets, weights.astype(jnp.float32), z_loss)
    return loss, nll, (dx.reshape(B, T, D), dw, db)
  zero = jnp.zeros((), jnp.float32)
  db0 = jnp.zeros((0,), jnp.float32) if b is None else jnp.zeros(b.shape, jnp.float32)
  (loss, nll, dw, db), dx = jax.lax.scan(
      body, (zero, zero, jnp.zeros(w.shape, jnp.float32), db0),
      (_to_chunks(x, c), _to_chunks(targets, c), _to_chunks(weights.astype(jnp.float32), c)))
  return loss, nll, (_from_chunks(dx), dw, None if b is None else db)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _head_loss(x, w, b, targets, weights, z_loss, dtypes):
  # Outside differentiation (a value alone): the forward, no gradients made.
  del dtypes
  both = _per_chunk(functools.partial(_nll_and_loss, z_loss=z_loss), x, w, b, targets)
  weights = weights.astype(jnp.float32)
  return jnp.sum(both[..., 1] * weights), jnp.sum(both[..., 0] * weights)


def _head_loss_fwd(x, w, b, targets, weights, z_loss, dtypes):
  del dtypes
  loss, nll, grads = _sums_and_grads(x, w, b, targets, weights, z_loss)
  return (loss, nll), grads


def _head_loss_bwd(z_loss, dtypes, grads, cotangents):
  del z_loss
  dx, dw, db = grads
  x_dtype, w_dtype, b_dtype = dtypes
  g_loss, _ = cotangents  # nll_sum is stop_gradient'ed by head_loss_sums
  return ((g_loss * dx).astype(x_dtype), (g_loss * dw).astype(w_dtype),
          None if db is None else (g_loss * db).astype(b_dtype), None, None)


_head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)


def head_loss_sums(x_BxTxD, w_DxV, b_V, targets_BxT, weights_BxT, z_loss: float = 0.0):
  """``(sum_t weights_t * (nll_t + z_loss * lse_t^2), sum_t weights_t * nll_t)`` over
  the logits ``x @ w (+ b)`` in float32, computed chunk by chunk (module docstring).
  ``x`` is in the compute dtype, ``w`` ``[D, V]`` and ``b`` ``[V]`` (or None) are the
  float32 parameters; ``targets`` lie in ``[0, V)`` (as for ``losses.nll_and_lse``:
  masked positions too). Differentiable in x, w and b through the first sum only."""
  dtypes = (jnp.dtype(x_BxTxD.dtype).name, jnp.dtype(w_DxV.dtype).name,
            None if b_V is None else jnp.dtype(b_V.dtype).name)
  loss, nll = _head_loss(x_BxTxD, w_DxV, b_V, targets_BxT, weights_BxT, float(z_loss),
                         dtypes)
  return loss, jax.lax.stop_gradient(nll)

"""The cross entropy's hand-written backward against autodiff of a plain log-softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phijax.train import losses


def _plain(logits, targets, z_loss):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  lse = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
  return nll, nll + z_loss * lse ** 2


@pytest.mark.parametrize("z_loss,dtype,tol", [(0.0, jnp.float32, 1e-6),
                                              (1e-2, jnp.float32, 1e-6),
                                              (1e-4, jnp.bfloat16, 1e-2)])
def test_token_losses_value_and_grad_match_autodiff(z_loss, dtype, tol):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(3 * rng.standard_normal((2, 5, 37)), dtype)
  targets = jnp.asarray(rng.integers(0, 37, (2, 5)), jnp.int32)
  mask = jnp.asarray(rng.random((2, 5)) < 0.7, jnp.float32)

  def total(fn, x):
    nll, obj = fn(x, targets, z_loss)
    return losses.masked_sum(obj, mask) + 0.5 * losses.masked_sum(nll, 1 - mask)

  got_nll, _ = losses.token_losses(logits, targets, z_loss)
  want_nll, _ = _plain(logits, targets, z_loss)
  np.testing.assert_allclose(got_nll, want_nll, rtol=1e-6, atol=1e-6)
  got = jax.grad(lambda x: total(losses.token_losses, x))(logits)
  want = jax.grad(lambda x: total(_plain, x))(logits)
  assert got.dtype == dtype
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             atol=tol)
  assert float(jnp.abs(want).max()) > 0.1  # the check has something to compare


@pytest.mark.parametrize("bias,z_loss,dtype,chunk_bytes,tol", [
    (True, 0.0, jnp.float32, 1, 2e-5),  # one position per chunk, the scan's many steps
    (False, 1e-2, jnp.float32, 4 << 20, 2e-5),  # one chunk, z-loss, no bias (phi3)
    (True, 1e-4, jnp.bfloat16, 3000, 3e-2),  # bf16 compute, 2 positions per chunk
])
def test_head_loss_sums_match_autodiff_of_the_plain_head(monkeypatch, bias, z_loss, dtype,
                                                         chunk_bytes, tol):
  from phijax.model import head_loss
  monkeypatch.setattr(head_loss, "CHUNK_BYTES", {"cpu": chunk_bytes})
  rng = np.random.default_rng(1)
  B, T, D, V = 3, 6, 8, 41
  x = jnp.asarray(rng.standard_normal((B, T, D)), dtype)
  w = jnp.asarray(rng.standard_normal((D, V)), jnp.float32)
  b = jnp.asarray(rng.standard_normal(V), jnp.float32) if bias else None
  targets = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
  mask = jnp.asarray(rng.random((B, T)) < 0.7, jnp.float32)

  def plain(x, w, b):
    logits = jnp.einsum("btd,dv->btv", x, w.astype(dtype), preferred_element_type=jnp.float32)
    logits = logits if b is None else logits + b
    nll, obj = _plain(logits, targets, z_loss)
    return losses.masked_sum(obj, mask), losses.masked_sum(nll, mask)

  def fused(x, w, b):
    return head_loss.head_loss_sums(x, w, b, targets, mask, z_loss)

  (want, want_nll), want_g = jax.value_and_grad(plain, argnums=(0, 1, 2), has_aux=True)(x, w, b)
  (got, got_nll), got_g = jax.value_and_grad(fused, argnums=(0, 1, 2), has_aux=True)(x, w, b)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got_nll, want_nll, rtol=1e-5)
  for g, h in zip(jax.tree_util.tree_leaves(got_g), jax.tree_util.tree_leaves(want_g)):
    assert g.dtype == h.dtype
    scale = float(jnp.abs(h.astype(jnp.float32)).max())
    assert scale > 0.1  # the check has something to compare
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(h, np.float32),
                               atol=tol * scale)
  # The metric takes no gradient; the loss's cotangent scales the gradients.
  g_nll = jax.grad(lambda x: fused(x, w, b)[1])(x)
  assert float(jnp.abs(g_nll.astype(jnp.float32)).max()) == 0.0
  g3 = jax.grad(lambda x: 3.0 * fused(x, w, b)[0])(x)
  np.testing.assert_allclose(np.asarray(g3, np.float32),
                             3.0 * np.asarray(got_g[0], np.float32), rtol=tol / 3, atol=1e-6)
  # The value alone (no differentiation: the forward only, no gradients made).
  value, value_nll = jax.jit(fused)(x, w, b)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(value_nll, want_nll, rtol=1e-5)
  # Per-token losses by the same chunks, without gradient (evaluation, Rho-1's scores).
  logits = jnp.einsum("btd,dv->btv", x, w.astype(dtype), preferred_element_type=jnp.float32)
  want_tok = _plain(logits if b is None else logits + b, targets, 0.0)[0]
  np.testing.assert_allclose(head_loss.token_nll(x, w, b, targets), want_tok, rtol=1e-5,
                             atol=1e-5)
  assert float(jnp.abs(jax.grad(lambda x: head_loss.token_nll(x, w, b, targets).sum())(
      x).astype(jnp.float32)).max()) == 0.0


def test_head_chunks_divide_the_length():
  from phijax.model import head_loss
  assert head_loss.chunk_positions(16, 256, 8192, "cpu") == 8  # 8 x 16 x 8192 x 4 B = 4 MiB
  assert head_loss.chunk_positions(16, 250, 8192, "cpu") == 5  # largest divisor of 250 <= 8
  assert head_loss.chunk_positions(64, 256, 51200, "cpu") == 1
  assert head_loss.chunk_positions(8, 2048, 51200, "gpu") == 512  # phi-1.5: 4 x 4096 tokens

"""The cross entropy's hand-written backward against autodiff of a plain log-softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phijax import losses


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

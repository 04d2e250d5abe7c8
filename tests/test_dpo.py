"""The DPO loss against a numpy computation from per-sequence log-probabilities."""

import jax.numpy as jnp
import numpy as np

from phijax import losses


def _np_log_softmax(x):
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_sequence_logprobs_sum_the_masked_token_logprobs():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (3, 5))
  mask = rng.random((3, 5)) < 0.6
  logp = _np_log_softmax(logits.astype(np.float64))
  expected = [sum(logp[b, t, targets[b, t]] for t in range(5) if mask[b, t])
              for b in range(3)]
  got = losses.sequence_logprobs(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_dpo_loss_equals_numpy():
  rng = np.random.default_rng(1)
  pc, pr, rc, rr = (rng.normal(-20, 5, 6) for _ in range(4))
  beta = 0.1
  margin = beta * ((pc - rc) - (pr - rr))
  expected = np.log1p(np.exp(-margin))  # -log sigmoid(margin)
  loss, m = losses.dpo_loss(*(jnp.asarray(x, jnp.float32) for x in (pc, pr, rc, rr)), beta)
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(m["reward_margin"]), margin, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(m["reward_accuracy"]), (margin > 0).astype(float))
  # Policy equal to the reference: every reward 0, loss log 2.
  loss0, m0 = losses.dpo_loss(*(jnp.asarray(pc, jnp.float32),) * 4, beta)
  np.testing.assert_allclose(np.asarray(loss0), np.log(2.0), rtol=1e-6)

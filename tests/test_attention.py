"""The attention door: the XLA reference against plain numpy, and impl dispatch.

Kernel numerics are in tests/test_kernels.py; here are the reference itself (a
float64 numpy loop over heads and rows is the oracle), ``auto`` selection and its
one-warning fallback, the interpret-mode routes, and the clear errors.
"""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from phijax.model import attention
from phijax.model.attention import UnsupportedAttention
from phijax.kernels import xla_blocked


def _numpy_attention(q, k, v, *, causal, q_seg, kv_seg, window, scale):
  """float64 loops, written from the definition (GQA head h reads kv head h // G)."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  B, T, H, D = q.shape
  S, K = k.shape[1], k.shape[2]
  out = np.zeros((B, T, H, D))
  lse = np.full((B, H, T), -np.inf)
  for b in range(B):
    for h in range(H):
      kh = h // (H // K)
      for i in range(T):
        seen = [j for j in range(S)
                if (not causal or j <= i) and (window is None or j > i - window)
                and (q_seg is None or q_seg[b, i] == kv_seg[b, j])]
        if not seen:
          continue
        s = np.array([q[b, i, h] @ k[b, j, kh] for j in seen]) * scale
        m = s.max()
        e = np.exp(s - m)
        out[b, i, h] = e @ v[b, seen, kh] / e.sum()
        lse[b, h, i] = m + np.log(e.sum())
  return out, lse


@pytest.mark.parametrize("causal,window,segmented,H,K", [
    (True, None, False, 4, 4),
    (True, 3, True, 4, 2),  # Phi-3 window, packed documents, GQA
    (False, 4, True, 6, 1),  # not causal, MQA
])
def test_xla_reference_matches_numpy(causal, window, segmented, H, K):
  rng = np.random.default_rng(0)
  B, T, D = 2, 11, 8
  q = rng.standard_normal((B, T, H, D)).astype(np.float32)
  k = rng.standard_normal((B, T, K, D)).astype(np.float32)
  v = rng.standard_normal((B, T, K, D)).astype(np.float32)
  seg = np.array([[1] * 4 + [2] * 7, [5] * 6 + [6] * 2 + [7] * 3]) if segmented else None
  out, lse = attention.xla_attention(q, k, v, causal=causal, window=window,
                                     segment_ids=None if seg is None else jnp.asarray(seg),
                                     scale=0.3, return_lse=True)
  want_out, want_lse = _numpy_attention(q, k, v, causal=causal, q_seg=seg, kv_seg=seg,
                                        window=window, scale=0.3)
  np.testing.assert_allclose(out, want_out, atol=2e-6)
  np.testing.assert_allclose(lse, want_lse, atol=2e-6)


def test_query_that_sees_no_key_gives_zeros_and_neg_inf_lse():
  rng = np.random.default_rng(1)
  q = rng.standard_normal((1, 5, 2, 8)).astype(np.float32)
  kv = rng.standard_normal((1, 6, 2, 8)).astype(np.float32)
  q_seg = np.array([[1, 1, 9, 2, 2]])  # segment 9 has no keys
  kv_seg = np.array([[1, 1, 1, 2, 2, 2]])
  out, lse = attention.dot_product_attention_with_lse(
      q, kv, kv, causal=False, segment_ids=(jnp.asarray(q_seg), jnp.asarray(kv_seg)),
      impl="xla")
  want_out, want_lse = _numpy_attention(q, kv, kv, causal=False, q_seg=q_seg,
                                        kv_seg=kv_seg, window=None, scale=8 ** -0.5)
  np.testing.assert_allclose(out, want_out, atol=2e-6)
  np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(want_lse))
  assert np.all(np.asarray(out)[0, 2] == 0) and np.all(np.isneginf(np.asarray(lse)[0, :, 2]))


def _qkv(dtype=jnp.float32, T=32, D=16):
  rng = np.random.default_rng(2)
  return tuple(jnp.asarray(rng.standard_normal((1, T, h, D)), dtype) for h in (4, 2, 2))


def test_auto_on_cpu_is_the_xla_reference_without_warning():
  q, k, v = _qkv()
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = attention.dot_product_attention(q, k, v, window=5, impl="auto")
  np.testing.assert_allclose(got, attention.xla_attention(q, k, v, window=5), atol=2e-6)


@pytest.mark.parametrize("T,window,segmented,H,K,rows", [
    (37, None, False, 4, 4, 8),  # last block short
    (40, 6, True, 4, 2, 8),  # window cuts the key range's left edge, GQA, documents
    (24, 30, True, 6, 1, 5),  # window wider than the row, MQA, uneven blocks
    (256, None, True, 2, 2, None),  # the library's own block size (64 rows)
])
def test_blocked_causal_attention_equals_numpy_and_dense_grads(
    monkeypatch, T, window, segmented, H, K, rows):
  import jax
  if rows is not None:
    monkeypatch.setattr(xla_blocked, "BLOCK_MIN_ROWS", rows)
    monkeypatch.setattr(xla_blocked, "SCORE_BYTES", 1)  # one sequence per lax.map step
  assert len(xla_blocked.causal_blocks(T, window)) > 1
  rng = np.random.default_rng(3)
  B, D = 2, 8
  q = jnp.asarray(rng.standard_normal((B, T, H, D)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((B, T, K, D)), jnp.float32) for _ in "kv")
  seg = (np.cumsum(rng.random((B, T)) < 0.1, axis=1) if segmented
         else None)
  seg_j = None if seg is None else jnp.asarray(seg, jnp.int32)
  got = attention.dot_product_attention(q, k, v, segment_ids=seg_j, window=window,
                                        scale=0.4, impl="xla")
  if T <= 40:
    want, _ = _numpy_attention(q, k, v, causal=True, q_seg=seg, kv_seg=seg, window=window,
                               scale=0.4)
    np.testing.assert_allclose(got, want, atol=2e-6)
  # Gradients through the blocked path (its own VJP) equal autodiff of the dense
  # reference's.
  w = jnp.asarray(rng.standard_normal((B, T, H, D)), jnp.float32)
  grads = [jax.grad(lambda q, k, v: jnp.sum(w * f(q, k, v)), argnums=(0, 1, 2))(q, k, v)
           for f in (lambda q, k, v: attention.dot_product_attention(
                         q, k, v, segment_ids=seg_j, window=window, scale=0.4, impl="xla"),
                     lambda q, k, v: attention.xla_attention(
                         q, k, v, segment_ids=seg_j, window=window, scale=0.4))]
  for g_blocked, g_dense in zip(*grads):
    np.testing.assert_allclose(g_blocked, g_dense, atol=2e-5)


def test_blocks_and_sequence_groups():
  assert len(xla_blocked.causal_blocks(64)) == 1
  assert xla_blocked.causal_blocks(300, window=100)[-1] == (256, 300, 157)
  # Groups of sequences whose scores fit SCORE_BYTES, dividing the batch; the whole
  # batch under a mesh that splits it.
  assert xla_blocked.group_size(16, 6, 256) == 1
  assert xla_blocked.group_size(10, 2, 256) == 2  # 4 fit (512 KiB each), 2 divides 10
  assert xla_blocked.group_size(16, 6, 256, mesh_batch_ways=2) == 16
  assert xla_blocked.group_size(16, 6, 256, platform="gpu") == 16


def test_auto_falls_back_to_xla_with_one_warning(monkeypatch):
  monkeypatch.setattr(attention, "_platform", lambda: "tpu")
  monkeypatch.setattr(attention, "_warned", set())
  q, k, v = _qkv(jnp.float16)  # the TPU kernel takes float32 and bfloat16 only
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = attention.dot_product_attention(q, k, v, impl="auto", interpret=True)
    attention.dot_product_attention(q, k, v, impl="auto", interpret=True)
  messages = [str(w.message) for w in caught]
  assert len(messages) == 1 and "pallas_tpu" in messages[0] and "float16" in messages[0]
  np.testing.assert_allclose(first, attention.xla_attention(q, k, v), atol=2e-3)  # float16 rounding
  with pytest.raises(UnsupportedAttention, match="dtype float16"):  # explicit: an error
    attention.dot_product_attention(q, k, v, impl="pallas_tpu", interpret=True)


def test_auto_on_gpu_runs_the_pallas_kernel(monkeypatch):
  from phijax.kernels import gpu_triton
  calls = []
  real = gpu_triton.flash_attention
  monkeypatch.setattr(gpu_triton, "flash_attention",
                      lambda *a, **kw: calls.append(kw) or real(*a, **kw))
  monkeypatch.setattr(attention, "_platform", lambda: "gpu")
  q, k, v = _qkv()
  seg = jnp.asarray([[0] * 20 + [1] * 12], jnp.int32)
  window = np.int64(9)  # config values may arrive as numpy ints
  with attention.interpret_mode():
    got = attention.dot_product_attention(q, k, v, segment_ids=seg, window=window,
                                          impl="auto")
  assert len(calls) == 1 and calls[0]["interpret"] is True
  want = attention.xla_attention(q, k, v, segment_ids=seg, window=9)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_interpret_routes_and_their_precedence(monkeypatch):
  monkeypatch.delenv(attention.INTERPRET_ENV, raising=False)
  assert attention._resolve_interpret(None) is False
  monkeypatch.setenv(attention.INTERPRET_ENV, "1")
  assert attention._resolve_interpret(None) is True
  with attention.interpret_mode(False):  # the context manager beats the env var
    assert attention._resolve_interpret(None) is False
    assert attention._resolve_interpret(True) is True  # an explicit argument beats both
  monkeypatch.setenv(attention.INTERPRET_ENV, "0")
  with attention.interpret_mode():
    assert attention._resolve_interpret(None) is True
  assert attention._resolve_interpret(None) is False


def test_env_var_runs_pallas_tpu_on_cpu(monkeypatch):
  monkeypatch.setenv(attention.INTERPRET_ENV, "1")
  q, k, v = _qkv()
  out, lse = attention.dot_product_attention_with_lse(q, k, v, window=7,
                                                      impl="pallas_tpu")
  want_out, want_lse = attention.xla_attention(q, k, v, window=7, return_lse=True)
  np.testing.assert_allclose(out, want_out, atol=1e-5)
  np.testing.assert_allclose(lse, want_lse, atol=1e-5)


@pytest.mark.parametrize("impl,message", [
    ("pallas_gpu", "needs a GPU (the default backend is cpu); to run it on CPU use "
                   "interpret=True"),
    ("pallas_tpu", "needs a TPU"),
    ("cudnn", "needs an NVIDIA GPU"),
    ("flash", "unknown attention impl 'flash'"),
])
def test_explicit_impl_that_cannot_run_raises_clearly(monkeypatch, impl, message):
  monkeypatch.delenv(attention.INTERPRET_ENV, raising=False)
  q, k, v = _qkv()
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    attention.dot_product_attention(q, k, v, impl=impl)


def test_cudnn_has_no_lse():
  q, k, v = _qkv(jnp.bfloat16)
  with pytest.raises(UnsupportedAttention, match="log-sum-exp"):
    attention.dot_product_attention_with_lse(q, k, v, impl="cudnn")


@pytest.mark.parametrize("shapes,message", [
    (((1, 8, 4, 16), (1, 8, 3, 16), (1, 8, 3, 16)), "must divide q heads"),
    (((8, 4, 16), (1, 8, 2, 16), (1, 8, 2, 16)), "expects \\[batch, length, heads"),
    (((1, 8, 4, 16), (1, 8, 2, 8), (1, 8, 2, 8)), "agree on batch and head_dim"),
])
def test_bad_shapes_are_named(shapes, message):
  q, k, v = (jnp.zeros(s) for s in shapes)
  with pytest.raises(ValueError, match=message):
    attention.dot_product_attention(q, k, v, impl="xla")

"""Pallas flash-attention kernels (GPU Triton and TPU Mosaic) in interpret mode on CPU.

Oracles: the XLA reference ``phijax.model.attention.xla_attention`` (itself checked
against plain numpy in tests/test_attention.py) for outputs, log-sum-exp and
gradients; a brute-force numpy enumeration of (query, key) pairs for the block
ranges the kernels skip or mask; the model run with ``attention_impl="xla"``.
Small block sizes make every case span several blocks, partial blocks and (GPU)
query blocks that are entirely padding.
"""

import dataclasses
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phijax.model import attention
from phijax.kernels import geometry, gpu_triton, tpu_mosaic
from phijax.kernels.flash import UnsupportedAttention

KERNELS = {
    # Fwd q/k blocks 32/16, dK/dV 16/32, dQ 64/16: T=200 pads to 256, so the
    # forward's last q block is all padding.
    "pallas_gpu": (gpu_triton, gpu_triton.BlockSizes(32, 16, 16, 32, 64, 16)),
    "pallas_tpu": (tpu_mosaic, tpu_mosaic.BlockSizes(128, 128, 128, 128, 128, 128)),
}
TOL = {"float32": 1e-5, "bfloat16": 2e-2}


@dataclasses.dataclass(frozen=True)
class Case:
  B: int
  T: int
  H: int
  K: int
  D: int
  causal: bool
  segments: int  # 1 = unpacked
  window: int | None
  dtype: str
  S: int | None = None  # kv length when it differs from T
  orphan_queries: bool = False  # q segment ids absent from kv: rows that see nothing

  def __str__(self):
    return (f"B{self.B}-T{self.T}{'' if self.S is None else f'-S{self.S}'}-H{self.H}:"
            f"{self.K}-D{self.D}-{'causal' if self.causal else 'full'}-seg{self.segments}"
            f"-w{self.window}-{self.dtype}{'-orphans' if self.orphan_queries else ''}")


CASES = [
    Case(1, 128, 8, 2, 64, True, 1, None, "float32"),  # GQA 8:2
    Case(2, 200, 8, 1, 80, True, 2, None, "float32"),  # GQA 8:1, T not a block multiple
    Case(1, 512, 2, 2, 128, True, 3, 100, "bfloat16"),  # three documents, window
    Case(1, 200, 4, 2, 64, False, 1, None, "float32"),  # not causal
    Case(1, 200, 8, 2, 80, True, 1, 37, "bfloat16"),  # window, bf16 GQA
    Case(1, 128, 2, 1, 96, False, 2, 50, "float32", S=200, orphan_queries=True),
]


def _segment_ids(rng, B, n, length):
  """[B, length] ids 0..n-1 in contiguous runs (packed documents)."""
  if n == 1:
    return None
  rows = []
  for _ in range(B):
    cuts = np.sort(rng.choice(np.arange(1, length), n - 1, replace=False))
    rows.append(np.searchsorted(cuts, np.arange(length), side="right"))
  return jnp.asarray(np.stack(rows), jnp.int32)


def _inputs(case):
  rng = np.random.default_rng(zlib.crc32(str(case).encode()))
  S = case.S or case.T
  dtype = jnp.dtype(case.dtype)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  q, k, v = normal(case.B, case.T, case.H, case.D), normal(case.B, S, case.K, case.D), \
      normal(case.B, S, case.K, case.D)
  dout = normal(case.B, case.T, case.H, case.D)
  dlse = jnp.asarray(rng.standard_normal((case.B, case.H, case.T)), jnp.float32)
  segment_ids = _segment_ids(rng, case.B, case.segments, case.T)
  if case.S is not None and segment_ids is not None:
    kv_seg = _segment_ids(rng, case.B, case.segments, S)
    if case.orphan_queries:  # id 7 never occurs in kv: those queries see no key
      segment_ids = segment_ids.at[:, 5:9].set(7)
    segment_ids = (segment_ids, kv_seg)
  return q, k, v, dout, dlse, segment_ids


def _value_and_grads(fn, q, k, v, dout, dlse):
  """(out, lse, dq, dk, dv) of ``fn(q, k, v) -> (out, lse)`` under one jit."""
  def run(q, k, v, dout, dlse):
    (out, lse), vjp = jax.vjp(fn, q, k, v)
    return (out, lse, *vjp((dout, dlse)))
  return jax.jit(run)(q, k, v, dout, dlse)


def _assert_close(name, got, want, tol):
  got = np.asarray(got, np.float32)
  want = np.asarray(want, np.float32)
  assert np.array_equal(np.isinf(got), np.isinf(want)), f"{name}: -inf rows differ"
  finite = np.isfinite(want)
  assert np.all(np.isfinite(got[finite])), f"{name}: non-finite values"
  err = np.max(np.abs(got[finite] - want[finite]), initial=0.0)
  scale = max(1.0, float(np.max(np.abs(want[finite]), initial=0.0)))
  assert err <= tol * scale, f"{name}: max error {err:.2e} > {tol:.0e} * {scale:.2f}"


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("impl", list(KERNELS))
def test_kernel_matches_xla_reference(impl, case):
  module, blocks = KERNELS[impl]
  q, k, v, dout, dlse, segment_ids = _inputs(case)
  opts = dict(causal=case.causal, segment_ids=segment_ids, window=case.window)
  got = _value_and_grads(
      lambda q, k, v: module.flash_attention(q, k, v, **opts, block_sizes=blocks,
                                             interpret=True, return_lse=True),
      q, k, v, dout, dlse)
  # The reference runs in float32 on the same (bf16-rounded) inputs.
  f32 = lambda x: x.astype(jnp.float32)
  want = _value_and_grads(
      lambda q, k, v: attention.xla_attention(q, k, v, **opts, return_lse=True),
      f32(q), f32(k), f32(v), f32(dout), dlse)
  for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), got, want):
    _assert_close(f"{impl} {case} {name}", g, w, TOL[case.dtype])
  if case.orphan_queries:  # rows that see no key: zero output, -inf lse
    assert np.all(np.asarray(got[0])[:, 5:9] == 0)
    assert np.all(np.isneginf(np.asarray(got[1])[:, :, 5:9]))


# ------------------------------------------------------------------- block geometry

def _brute_force_pairs(spec, q_rows, kv_cols):
  q = np.asarray(q_rows)[:, None]
  kv = np.asarray(kv_cols)[None, :]
  vis = (kv < spec.kv_len) & (q >= 0)  # [rows, cols]
  if spec.causal:
    vis &= kv <= q
  if spec.window is not None:
    vis &= kv > q - spec.window
  return vis


GEOMETRY = [
    # (causal, window, q_len, kv_len, block_q, block_k, padded multiple of q)
    (True, None, 200, 200, 32, 16, 64),
    (True, 37, 200, 200, 16, 32, 64),
    (False, 50, 128, 200, 32, 64, 32),
    (False, None, 130, 130, 16, 16, 64),
    (True, 5, 64, 64, 16, 16, 16),
]


@pytest.mark.parametrize("causal,window,T,S,bq,bk,mult", GEOMETRY)
@pytest.mark.parametrize("segmented", [False, True])
def test_block_ranges_match_brute_force(causal, window, T, S, bq, bk, mult, segmented):
  spec = geometry.MaskSpec(causal=causal, window=window, q_len=T, kv_len=S,
                           segmented=segmented)
  Tp = -(-T // mult) * mult
  Sp = -(-S // bk) * bk
  for qi in range(Tp // bq):
    rows = [r for r in range(qi * bq, (qi + 1) * bq) if r < T]
    lo, full_lo, full_hi, hi = geometry.kv_blocks_for_q_block(spec, qi, bq, bk)
    seen = [kb for kb in range(Sp // bk) if rows and
            _brute_force_pairs(spec, rows, range(kb * bk, (kb + 1) * bk)).any()]
    assert (lo, hi) == ((seen[0], seen[-1] + 1) if seen else (lo, lo)), (qi, lo, hi, seen)
    for kb in range(full_lo, full_hi):  # full blocks need no element mask
      assert not segmented
      assert _brute_force_pairs(spec, rows, range(kb * bk, (kb + 1) * bk)).all()
    if not segmented and rows:
      n_full = sum(_brute_force_pairs(spec, rows, range(kb * bk, (kb + 1) * bk)).all()
                   for kb in range(Sp // bk))
      assert full_hi - full_lo == n_full  # and none is masked needlessly
  for kj in range(Sp // bk):
    cols = [c for c in range(kj * bk, (kj + 1) * bk) if c < S]
    lo, full_lo, full_hi, hi = geometry.q_blocks_for_kv_block(spec, kj, bq, bk)
    seen = [qb for qb in range(Tp // bq) if cols and
            _brute_force_pairs(spec, [r for r in range(qb * bq, (qb + 1) * bq) if r < T],
                               cols).any()]
    assert (lo, hi) == ((seen[0], seen[-1] + 1) if seen else (lo, lo)), (kj, lo, hi, seen)
    for qb in range(full_lo, full_hi):
      assert not segmented
      rows = range(qb * bq, (qb + 1) * bq)  # padded rows too: they must be harmless
      assert _brute_force_pairs(spec, rows, range(kj * bk, (kj + 1) * bk)).all()


# ------------------------------------------------------------- real-backend lowering

def _lowers(probe):
  try:
    probe()
    return True
  except Exception:  # a jaxlib without that platform's lowering: skip, not fail
    return False


def _probe_gpu():
  from jax.experimental.pallas.ops.gpu import attention as shipped
  x = jax.ShapeDtypeStruct((1, 128, 2, 64), jnp.bfloat16)
  jax.jit(lambda q: shipped.mha(q, q, q, None)).trace(x).lower(
      lowering_platforms=("cuda",))


def _probe_tpu():
  from jax.experimental.pallas.ops.tpu import flash_attention as shipped
  x = jax.ShapeDtypeStruct((1, 2, 128, 128), jnp.bfloat16)
  jax.jit(lambda q: shipped.flash_attention(q, q, q)).trace(x).lower(
      lowering_platforms=("tpu",))


@pytest.mark.parametrize("impl,platform,probe", [
    ("pallas_gpu", "cuda", _probe_gpu), ("pallas_tpu", "tpu", _probe_tpu)])
@pytest.mark.parametrize("shape,causal,segmented,window,dtype", [
    ((2, 200, 8, 2, 80), True, True, 64, jnp.bfloat16),
    ((1, 300, 4, 4, 128), False, False, None, jnp.float32),
    ((1, 256, 4, 1, 96), True, False, None, jnp.float16),
])
def test_kernels_lower_for_the_real_backend(impl, platform, probe, shape, causal,
                                            segmented, window, dtype):
  """Forward and backward lower to Triton IR / Mosaic MLIR without the hardware.

  This catches what interpret mode does not check: power-of-two tensor shapes and
  tl.dot sizes (Triton), block tiling and supported ops (Mosaic).
  """
  module, _ = KERNELS[impl]
  if impl == "pallas_tpu" and dtype == jnp.float16:
    dtype = jnp.bfloat16  # float16 is refused on TPU (tested below)
  if not _lowers(probe):
    pytest.skip(f"this jaxlib cannot lower Pallas for {platform} on CPU")
  B, T, H, K, D = shape
  q = jax.ShapeDtypeStruct((B, T, H, D), dtype)
  kv = jax.ShapeDtypeStruct((B, T, K, D), dtype)
  seg = jax.ShapeDtypeStruct((B, T), jnp.int32) if segmented else None

  def loss(q, k, v, seg):
    out, lse = module.flash_attention(q, k, v, causal=causal, segment_ids=seg,
                                      window=window, return_lse=True)
    return out.astype(jnp.float32).sum() + lse.sum()

  text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv, seg).lower(
      lowering_platforms=(platform,)).as_text()
  marker = "__gpu$xla.gpu.triton" if platform == "cuda" else "tpu_custom_call"
  assert text.count(marker) == 3  # forward, dK/dV, dQ


# ------------------------------------------------------------------- clear refusals

@pytest.mark.parametrize("impl,kwargs,dtype,D,message", [
    ("pallas_gpu", dict(block_sizes=gpu_triton.BlockSizes(block_q=48)), "float32", 64,
     "powers of two"),
    ("pallas_gpu", {}, "float32", 320, "head_dim 320"),
    ("pallas_tpu", dict(block_sizes=tpu_mosaic.BlockSizes(block_k=64)), "float32", 64,
     "multiples of 128"),
    ("pallas_tpu", {}, "float16", 64, "dtype float16"),
    ("pallas_gpu", dict(segment_ids=jnp.zeros((1, 7), jnp.int32)), "float32", 64,
     "segment ids must be [batch, length]"),
    ("pallas_tpu", dict(window=0), "float32", 64, "window must be a positive int"),
])
def test_unsupported_inputs_are_refused_clearly(impl, kwargs, dtype, D, message):
  module, _ = KERNELS[impl]
  q = jnp.zeros((1, 16, 2, D), dtype)
  with pytest.raises(UnsupportedAttention, match=re.escape(message)):
    module.flash_attention(q, q, q, interpret=True, **kwargs)


# ---------------------------------------------------------------------- whole model

def _tiny_configs():
  from phijax.model.config import ModelConfig
  return {
      "phi": ModelConfig(arch="phi", vocab_size=64, hidden_size=64, num_layers=1,
                         num_heads=4, intermediate_size=64, partial_rotary_factor=0.5),
      "phi3": ModelConfig(arch="phi3", vocab_size=64, hidden_size=64, num_layers=1,
                          num_heads=4, num_kv_heads=2, intermediate_size=64,
                          sliding_window=9),
  }


@pytest.mark.parametrize("impl", list(KERNELS))
@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_model_logits_and_gradients_match_xla(arch, impl):
  from phijax import model
  from phijax.model import Transformer
  cfg = _tiny_configs()[arch]
  params = model.init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(0, 64, (2, 40)), jnp.int32)
  segment_ids = jnp.asarray(np.repeat([[1] * 25 + [2] * 15], 2, axis=0), jnp.int32)
  positions = jnp.asarray(np.repeat([list(range(25)) + list(range(15))], 2, axis=0),
                          jnp.int32)
  weights = jnp.asarray(rng.standard_normal((2, 40, 64)), jnp.float32)

  def logits_and_grads(cfg):
    def loss(p):
      logits = Transformer(cfg).apply({"params": p}, tokens, positions, segment_ids)
      return jnp.sum(logits * weights), logits
    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads

  want_logits, want_grads = logits_and_grads(cfg)
  with attention.interpret_mode():  # the route the model takes on CPU
    got_logits, got_grads = logits_and_grads(dataclasses.replace(cfg, attention_impl=impl))
  _assert_close("logits", got_logits, want_logits, 1e-5)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got_grads),
                          jax.tree_util.tree_leaves(want_grads)):
    _assert_close(f"grad {jax.tree_util.keystr(path)}", g, w, 1e-5)

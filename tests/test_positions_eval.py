"""Held-out loss by position bucket (``python -m phijax.evaluate --task=positions``)
equals a direct per-token computation from the model's full logits."""

import jax
import numpy as np
from flax import linen as nn

from phijax.model import Transformer, abstract_params
from phijax.model.config import ModelConfig
from phijax.train import perplexity

CFG = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, max_position_embeddings=64, partial_rotary_factor=0.5,
                  rope_scaling=dict(type="yarn", factor=2.0, original_max_position_embeddings=16))


def _params(cfg, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      nn.unbox(abstract_params(cfg)))


def _batch(rng, rows=3, length=40):
  """Row 0: one document; row 1: two (positions restart at 25); row 2: a document of 30
  tokens and 10 of padding (loss_mask 0, no bytes)."""
  segments = np.ones((rows, length), np.int32)
  positions = np.tile(np.arange(length, dtype=np.int32), (rows, 1))
  segments[1, 25:] = 2
  positions[1, 25:] = np.arange(length - 25)
  segments[2, 30:] = 0
  positions[2, 30:] = 0
  mask = (segments > 0).astype(np.float32)
  return {"inputs": rng.integers(0, CFG.vocab_size, (rows, length)).astype(np.int32),
          "targets": rng.integers(0, CFG.vocab_size, (rows, length)).astype(np.int32),
          "positions": positions, "segment_ids": segments, "loss_mask": mask,
          "bytes": (rng.integers(1, 5, (rows, length)) * mask).astype(np.int32)}


def test_loss_by_position_equals_a_direct_per_token_computation():
  params = _params(CFG)
  rng = np.random.default_rng(0)
  batches = [_batch(rng), _batch(rng)]
  width = 16
  nll_sum, count, nbytes = np.zeros(3), np.zeros(3), np.zeros(3)
  for b in batches:  # full [B, T, V] logits, float64 log-softmax, one token at a time
    logits = np.asarray(Transformer(CFG).apply({"params": params}, b["inputs"],
                                               b["positions"], b["segment_ids"]), np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    for i, t in zip(*np.nonzero(b["loss_mask"])):
      k = min(b["positions"][i, t] // width, 2)
      nll_sum[k] += lse[i, t] - logits[i, t, b["targets"][i, t]]
      count[k] += 1
      nbytes[k] += b["bytes"][i, t]
  rows = perplexity.loss_by_position(CFG, params, batches, width)
  assert [(r["start"], r["end"]) for r in rows] == [(0, 16), (16, 32), (32, 40)]
  # Bucket 0: rows 0 and 2, and both documents of row 1 (16 + 15 positions).
  assert [r["tokens"] for r in rows] == count.tolist() == [2 * (16 + 16 + 15 + 16),
                                                           2 * (16 + 9 + 14), 2 * 8]
  np.testing.assert_allclose([r["loss"] for r in rows], nll_sum / count, rtol=1e-5)
  np.testing.assert_allclose([r["bpb"] for r in rows], nll_sum / np.log(2) / nbytes, rtol=1e-5)


def test_an_empty_bucket_has_no_loss():
  rng = np.random.default_rng(1)
  b = _batch(rng)
  b["loss_mask"][(b["positions"] >= 16) & (b["positions"] < 32)] = 0
  rows = perplexity.loss_by_position(CFG, _params(CFG), [b], 16)
  assert rows[1]["tokens"] == 0 and rows[1]["loss"] is None and rows[1]["bpb"] is None
  assert rows[0]["loss"] > 0 and rows[2]["loss"] > 0

"""Streaming generation with attention sinks (StreamingLLM, arXiv 2309.17453): while the
text fits, the streaming cache equals the full one; past it, every step's logits equal
a plain-numpy StreamingLLM (each token fed once into a cache of the first S tokens and
the last W, rotary positions 0..n-1 within the cache) with a cache of S + W slots and
a bounded number of compiles; ragged rows are independent; bad settings are one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from phijax.model import Transformer, abstract_params, decode, streaming
from phijax.model.config import ModelConfig

PHI = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, max_position_embeddings=64,
                  partial_rotary_factor=0.5)
PHI3 = ModelConfig(arch="phi3", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                   num_kv_heads=2, intermediate_size=64, max_position_embeddings=64,
                   sliding_window=24)


def _random_params(cfg, seed=0):
  rng = np.random.default_rng(seed)  # random weights without compiling the init
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      nn.unbox(abstract_params(cfg)))


def _oracle_logits(cfg, params, tokens, sinks, window):
  """StreamingLLM by its definition, in float64 numpy, for phi models: tokens are fed
  one at a time; each layer appends the token's (un-rotated) key and value to its
  cache and drops the oldest non-sink entry past ``sinks + window``; the n cached keys
  are rotated at positions 0..n-1 and the query at n - 1. Row t: the logits after
  token t."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  E = cfg.dim_per_head
  R = cfg.rotary_dim
  inv = 1.0 / cfg.rope_theta ** (np.arange(0, R, 2) / R)

  def ln(x, w):
    mu, var = x.mean(), x.var()
    return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * w["scale"] + w["bias"]

  def rotate(x_HxE, pos):
    ang = np.concatenate([pos * inv, pos * inv])
    r = x_HxE[:, :R]
    half = np.concatenate([-r[:, R // 2:], r[:, :R // 2]], axis=1)
    return np.concatenate([r * np.cos(ang) + half * np.sin(ang), x_HxE[:, R:]], axis=1)

  def proj(h, w):
    return np.einsum("d,dhe->he", h, w["kernel"]) + w["bias"]

  caches = [[] for _ in range(cfg.num_layers)]
  out = []
  for tok in tokens:
    x = p["embed"][tok]
    for layer, cache in enumerate(caches):
      w = p[f"layers_{layer}"]
      h = ln(x, w["input_norm"])
      a = w["attn"]
      cache.append((proj(h, a["k_proj"]), proj(h, a["v_proj"])))
      if len(cache) > sinks + window:
        del cache[sinks]  # the oldest token that is not a sink leaves
      n = len(cache)
      keys = np.stack([rotate(k, i) for i, (k, _) in enumerate(cache)])  # [n, H, E]
      values = np.stack([v for _, v in cache])
      q = rotate(proj(h, a["q_proj"]), n - 1)
      s = np.einsum("he,nhe->hn", q, keys) / np.sqrt(E)
      prob = np.exp(s - s.max(axis=1, keepdims=True))
      prob /= prob.sum(axis=1, keepdims=True)
      o = np.einsum("hn,nhe->he", prob, values)
      attn = np.einsum("he,hed->d", o, a["o_proj"]["kernel"]) + a["o_proj"]["bias"]
      f = h @ w["mlp"]["fc1"]["kernel"] + w["mlp"]["fc1"]["bias"]
      f = 0.5 * f * (1 + np.tanh(np.sqrt(2 / np.pi) * (f + 0.044715 * f ** 3)))
      x = x + attn + f @ w["mlp"]["fc2"]["kernel"] + w["mlp"]["fc2"]["bias"]
    out.append(ln(x, p["final_norm"]) @ p["lm_head"] + p["lm_head_bias"])
  return np.stack(out)


# 11 + 20 = 31 tokens: 32 slots hold them all (the full cache's own size).
@pytest.mark.parametrize("cfg,sinks,window", [(PHI, 4, 28), (PHI3, 4, 28)],
                         ids=["phi", "phi3_gqa_sliding_window"])
def test_while_the_text_fits_streaming_equals_the_full_cache(cfg, sinks, window):
  gen = decode.Generator(cfg, _random_params(cfg))
  rng = np.random.default_rng(1)
  prompts = [rng.integers(0, 64, n).tolist() for n in (5, 11)]
  full = gen.generate(prompts, max_new_tokens=20, return_logits=True)
  stream = gen.generate(prompts, max_new_tokens=20, return_logits=True, sink_tokens=sinks,
                        window=window)
  for a, b in zip(full, stream):
    assert a.ids == b.ids and b.finish == "length"
    # Keys are rotated when read rather than when written: XLA fuses that rotation
    # differently, a float32 ulp or two.
    np.testing.assert_allclose(b.logits, a.logits, atol=2e-6, rtol=0)


def _recording(gen, batch, slots, rolling):
  """Wraps the decode step of one bucket to record the cache it is handed."""
  prefill, step = gen.steps(batch, slots, rolling)
  seen = []

  def decode_step(visible, params, cache, *rest):
    seen.append({(x.shape, x.nbytes) for x in jax.tree.leaves(cache)})
    return step(visible, params, cache, *rest)

  gen._steps[(batch, slots, rolling)] = (prefill, decode_step)
  return seen, step


def test_ten_windows_run_in_constant_memory_and_equal_numpy_streaming_llm():
  sinks, window = 4, 12
  gen = decode.Generator(PHI, params := _random_params(PHI))
  seen, step = _recording(gen, 1, sinks + window, streaming.Rolling(sinks, window))
  prompt = [5, 9, 2, 33, 17]
  out, = gen.generate([prompt], max_new_tokens=10 * window, return_logits=True,
                      sink_tokens=sinks, window=window)
  # 125 tokens, twice the model's 64 positions, through 16 slots.
  assert len(out.ids) == 120 and out.finish == "length"
  E = PHI.dim_per_head
  slot_bytes = {((1, 16, 4, E), 16 * 4 * E * 4)}
  assert len(seen) == 119 and all(s == slot_bytes for s in seen)
  assert step._cache_size() == 1  # one decode compile: never one per token
  oracle = _oracle_logits(PHI, params, prompt + out.ids, sinks, window)
  np.testing.assert_allclose(out.logits, oracle[len(prompt) - 1:-1], atol=1e-4, rtol=0)


# phi3: GQA, and a sliding window (8) shorter than the cache: the sinks drop out of
# sight once the newest token's cache position is 8 past them, as in the full forward.
@pytest.mark.parametrize("cfg", [PHI.replace(num_layers=1),
                                 PHI3.replace(num_layers=1, sliding_window=8)],
                         ids=["phi", "phi3_gqa_sliding_window"])
def test_one_layer_equals_a_forward_over_the_sinks_and_the_window(cfg):
  """With one layer a token's key and value depend on the token alone, so each step
  equals a plain forward over [the S sinks] + [the last W tokens] at positions
  0..S+W-1: the paper's definition, checked with the model's own full forward."""
  sinks, window = 3, 9
  params = _random_params(cfg, seed=4)
  gen = decode.Generator(cfg, params)
  prompt = np.random.default_rng(5).integers(0, 64, 30).tolist()  # longer than S + W
  out, = gen.generate([prompt], max_new_tokens=40, return_logits=True, sink_tokens=sinks,
                      window=window)
  seq = prompt + out.ids
  apply = jax.jit(lambda x: Transformer(cfg).apply({"params": params}, x))
  for i, logits in enumerate(out.logits):
    t = len(prompt) - 1 + i  # these logits follow token t
    kept = seq[:min(sinks, t + 1)] + seq[max(sinks, t + 1 - window):t + 1]
    padded = np.zeros((1, sinks + window), np.int32)  # causal: the end's padding is unseen
    padded[0, :len(kept)] = kept
    want = np.asarray(apply(jnp.asarray(padded)))[0, len(kept) - 1]
    np.testing.assert_allclose(logits, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sinks,window", [(4, 12), (0, 7)])
def test_long_prompts_and_ragged_rows_equal_each_row_alone_and_the_oracle(sinks, window):
  """Prompts of 3, 50 and 17 tokens: the 50 fills 16 (or 7) slots and goes on in
  chunks; the rows pass S + W at different steps and are independent."""
  gen = decode.Generator(PHI, params := _random_params(PHI, seed=2))
  rng = np.random.default_rng(3)
  prompts = [rng.integers(0, 64, n).tolist() for n in (3, 50, 17)]
  kw = dict(max_new_tokens=30, return_logits=True, sink_tokens=sinks, window=window)
  together = gen.generate(prompts, **kw)
  for prompt, row in zip(prompts, together):
    alone, = gen.generate([prompt], **kw)
    assert row.ids == alone.ids and len(row.ids) == 30
    np.testing.assert_allclose(row.logits, alone.logits, atol=1e-5, rtol=0)
    oracle = _oracle_logits(PHI, params, prompt + row.ids, sinks, window)
    np.testing.assert_allclose(row.logits, oracle[len(prompt) - 1:-1], atol=1e-4, rtol=0)


def test_bad_streaming_settings_are_one_line_errors():
  gen = decode.Generator(PHI, _random_params(PHI))
  cases = [(dict(window=0), "window must be at least 1 token, got 0"),
           (dict(sink_tokens=4), "sink_tokens=4 needs a window"),
           (dict(sink_tokens=-1, window=8), "sink_tokens must be 0 or more"),
           (dict(sink_tokens=4, window=61), "sink_tokens \\+ window = 65 is more than the "
            "model's 64 positions")]
  for kw, message in cases:
    with pytest.raises(ValueError, match=message) as e:
      gen.generate([[1, 2]], max_new_tokens=2, **kw)
    assert "\n" not in str(e.value)
  longrope = PHI3.replace(sliding_window=None, rope_scaling={
      "type": "longrope", "original_max_position_embeddings": 16,
      "short_factor": [1.0] * 4, "long_factor": [2.0] * 4})
  with pytest.raises(ValueError, match="more than LongRoPE's original_max_position"):
    streaming.rolling(longrope, 4, 13)
  assert streaming.rolling(longrope, 4, 12).slots == 16


class _Letters:
  """Ids 0..25 are a..z; no end-of-text: a row runs to max_new_tokens."""
  eos_id = None
  vocab_size = 64

  def decode(self, ids):
    return "".join(chr(97 + i) for i in ids if i < 26)

  def encode(self, text):
    return [ord(c) - 97 for c in text]


def test_the_command_streams_past_the_models_positions(monkeypatch, tmp_path, capsys):
  from phijax.evals import generate, model_source
  loaded = model_source.Loaded(PHI, _random_params(PHI), _Letters(), "test", str(tmp_path))
  monkeypatch.setattr(model_source, "load", lambda args: loaded)
  base = [f"--params_dir={tmp_path}", "--prompt=" + "abcdefghij" * 8, "--json"]
  with pytest.raises(SystemExit) as e:  # 80 letters: more than the model's 64 positions
    generate.run(base)
  assert e.value.code == 2 and "or stream (--window)" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    generate.run(base + ["--sink_tokens=4"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and "needs a window" in err and len(err.strip().splitlines()) == 1
  generate.run(base + ["--sink_tokens=4", "--window=12", "--max_new_tokens=100"])
  row = __import__("json").loads(capsys.readouterr().out)
  assert row["finish"] == "length" and row["tokens"] == 100

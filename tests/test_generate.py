"""KV-cache decoding: greedy tokens equal Hugging Face ``generate``, cached logits equal a
full forward over the same prefix, ragged batches equal single rows, sampling rules."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from phijax.model import Transformer, abstract_params, decode
from phijax.model.config import ModelConfig
from tests.devices import xla_flags
from tests.test_model_hf import PHI3_CASES, PHI_CASES, _convert

CASES = [("phi", "rotary0.4_qkln"), ("phi", "gqa4:2"), ("phi3", "gqa4:2"),
         ("phi3", "gqa4:1_window"), ("phi3", "longrope")]
NEW = 40  # > 32 new tokens; crosses the window (5) and LongRoPE's 16 original positions


def _hf_case(arch, name, max_positions=None):
  from tests.hf_utils import hf_model
  kw = dict((PHI_CASES if arch == "phi" else PHI3_CASES)[name])
  if max_positions and "max_position_embeddings" not in kw:
    kw["max_position_embeddings"] = max_positions
  model = hf_model(arch, **kw)
  model.generation_config.eos_token_id = None  # random weights: never stop early
  model.generation_config.pad_token_id = 0
  return model, kw


def _prefix_logits(cfg, params, seq, start):
  """Row i: the logits a full forward over ``seq[:start + i + 1]`` gives at its last
  position. Causal, so one forward serves every prefix, except that LongRoPE prefixes
  up to the original length use the short factors: one forward over those."""
  apply = jax.jit(lambda p, x: Transformer(cfg).apply({"params": p}, x))  # one compile
  fwd = lambda s: np.array(apply(params, np.asarray(s)[None]))[0]
  full = fwd(seq)
  if cfg.rope_scaling is not None:
    orig = cfg.rope_scaling["original_max_position_embeddings"]
    full[:orig] = fwd(seq[:orig])
  return full[start - 1:-1]


def _prefix_logits_rows(cfg, params, seqs, starts):
  """``_prefix_logits`` of each sequence, all in one forward: the rows are padded at
  the end, which no earlier position of a causal model sees; every row is longer than
  LongRoPE's original length, so a full forward over it or over the padded batch uses
  the same (long) factors."""
  padded = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
  for i, s in enumerate(seqs):
    padded[i, :len(s)] = s
  apply = jax.jit(lambda p, x: Transformer(cfg).apply({"params": p}, x))  # one compile
  fwd = lambda x: np.array(apply(params, x))
  full = fwd(padded)
  if cfg.rope_scaling is not None:
    orig = cfg.rope_scaling["original_max_position_embeddings"]
    assert min(map(len, seqs)) > orig
    full[:, :orig] = fwd(padded[:, :orig])
  return [full[i, start - 1:len(s) - 1] for i, (s, start) in enumerate(zip(seqs, starts))]


@pytest.mark.parametrize("arch,name", CASES)
def test_greedy_equals_hf_generate_and_cached_logits_equal_full_forward(arch, name):
  torch = pytest.importorskip("torch")
  model, kw = _hf_case(arch, name, max_positions=128)
  cfg, params = _convert(model)
  prompt = np.random.default_rng(1).integers(0, kw["vocab_size"], 7).tolist()
  with torch.no_grad():
    hf = model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False,
                        output_logits=True, return_dict_in_generate=True)
  hf_new = hf.sequences[0, len(prompt):].tolist()
  out, = decode.Generator(cfg, params).generate([prompt], max_new_tokens=NEW,
                                                  return_logits=True)
  assert out.ids == hf_new and len(out.ids) == NEW and out.finish == "length"
  hf_logits = np.stack([l[0].float().numpy() for l in hf.logits])
  np.testing.assert_allclose(out.logits, hf_logits, atol=1e-4, rtol=0)
  # Every decode step's logits equal a full forward over the same prefix (for
  # LongRoPE: short factors up to 16 positions, long ones after, cache rebuilt).
  full = _prefix_logits(cfg, params, prompt + out.ids, len(prompt))
  np.testing.assert_allclose(out.logits, full, atol=1e-4, rtol=0)


# phi's parallel block and partial rotary decode as phi3's do (HF parity above); the
# ragged-batch cases are the ones with per-row state: the window and LongRoPE's switch.
@pytest.mark.parametrize("arch,name", [("phi3", "gqa4:1_window"), ("phi3", "longrope")])
def test_ragged_batch_rows_equal_rows_alone(arch, name):
  kw = dict((PHI_CASES if arch == "phi" else PHI3_CASES)[name])
  cfg = ModelConfig(arch=arch, vocab_size=kw["vocab_size"], hidden_size=64, num_layers=2,
                    num_heads=4, num_kv_heads=kw.get("num_key_value_heads", 4),
                    intermediate_size=96, max_position_embeddings=64,
                    sliding_window=kw.get("sliding_window"),
                    partial_rotary_factor=0.5 if arch == "phi" else 1.0,
                    rope_scaling=({"type": "longrope",
                                   "original_max_position_embeddings": 16,
                                   "short_factor": kw["rope_scaling"]["short_factor"],
                                   "long_factor": kw["rope_scaling"]["long_factor"]}
                                  if "rope_scaling" in kw else None))
  params = _random_params(cfg)
  rng = np.random.default_rng(2)
  # Lengths 3..12: the LongRoPE rows cross 16 at different steps (one rebuild each);
  # at most 12 + 20 = 32 positions, so every row alone shares one cache bucket.
  prompts = [rng.integers(0, cfg.vocab_size, n).tolist() for n in (3, 12, 9)]
  gen = decode.Generator(cfg, params)
  together = gen.generate(prompts, max_new_tokens=20, return_logits=True)
  fulls = _prefix_logits_rows(cfg, params, [p + row.ids for p, row in zip(prompts, together)],
                              [len(p) for p in prompts])
  for p, row, full in zip(prompts, together, fulls):
    alone, = gen.generate([p], max_new_tokens=20)
    assert row.ids == alone.ids
    np.testing.assert_allclose(row.logits, full, atol=1e-4, rtol=0)


CFG = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, max_position_embeddings=64)


def _random_params(cfg, seed=0):
  rng = np.random.default_rng(seed)  # random weights without compiling the init
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      nn.unbox(abstract_params(cfg)))


def test_sampling_is_seeded_and_top_k_1_is_greedy():
  gen = decode.Generator(CFG, _random_params(CFG))
  prompts = [[3, 4, 5], [7, 8]]

  def run(**kw):
    return [o.ids for o in gen.generate(prompts, max_new_tokens=12, **kw)]

  a = run(seed=1, temperature=0.8, top_p=0.95)
  assert a == run(seed=1, temperature=0.8, top_p=0.95)
  assert a != run(seed=2, temperature=0.8, top_p=0.95)
  greedy = run()
  assert run(seed=1, temperature=0.8, top_k=1) == greedy  # one candidate left
  assert run(seed=1, temperature=1e-9) != [] and a != greedy
  # A row's draws depend on its key only, not on its batch-mates.
  keys = [jax.random.fold_in(jax.random.key(1), i) for i in range(2)]
  alone = gen.generate([prompts[1]], keys=[keys[1]], max_new_tokens=12,
                       temperature=0.8, top_p=0.95)[0].ids
  assert alone == a[1]


def test_ids_past_the_tokenizer_are_never_generated():
  """A model whose embedding has more rows than its tokenizer has tokens (phi-2's
  51,200 for 50,295) never emits the extra ids: they mean no text."""
  gen = decode.Generator(CFG, _random_params(CFG))
  free, = gen.generate([[3, 4]], max_new_tokens=30, temperature=5.0, seed=0,
                       return_logits=True)
  assert max(free.ids) >= 10  # unlimited, a hot sampler reaches the high ids
  hot, = gen.generate([[3, 4]], max_new_tokens=30, temperature=5.0, seed=0, id_limit=10)
  assert max(hot.ids) < 10 and len(hot.ids) == 30
  greedy, = gen.generate([[3, 4]], max_new_tokens=1, id_limit=10, return_logits=True)
  assert greedy.ids[0] == int(np.argmax(greedy.logits[0][:10]))
  assert greedy.logits.shape == (1, CFG.vocab_size)  # the model's logits, unmasked

  class Ten(_CharTokenizer):
    vocab_size = 10

  by_tokenizer, = gen.generate([[3, 4]], max_new_tokens=30, temperature=5.0, seed=0,
                               tokenizer=Ten())
  assert by_tokenizer.ids == hot.ids
  with pytest.raises(ValueError, match="id_limit=65 must be in 1..64"):
    gen.generate([[3]], max_new_tokens=2, id_limit=65)


def test_top_p_keeps_the_smallest_set_reaching_p():
  logits = jnp.asarray(np.log([0.05, 0.5, 0.15, 0.3]), jnp.float32)
  keys = jax.random.split(jax.random.key(0), 400)
  pick = jax.jit(jax.vmap(decode.pick_token, (None, 0, None, None, None)))

  def drawn(top_k, top_p):
    return set(np.asarray(pick(logits, keys, 1.0, top_k, top_p)).tolist())

  assert drawn(0, 0.5) == {1}  # 0.5 alone reaches 0.5
  assert drawn(0, 0.7) == {1, 3}  # 0.5 + 0.3 = 0.8 >= 0.7; 0.5 alone does not
  assert drawn(0, 0.85) == {1, 3, 2}
  assert drawn(0, 1.0) == {0, 1, 2, 3}
  assert drawn(2, 1.0) == {1, 3}
  assert set(np.asarray(pick(logits, keys, 0.0, 0, 1.0)).tolist()) == {1}  # greedy


class _CharTokenizer:
  """Ids 0..25 are the letters a..z, 26 is a newline; 27 is end-of-text."""
  eos_id = 27

  def decode(self, ids):
    return "".join("\n" if i == 26 else chr(97 + i) for i in ids if i < 27)

  def encode(self, text):
    return [26 if c == "\n" else ord(c) - 97 for c in text]


def test_eos_and_stop_strings_end_rows():
  cfg = ModelConfig(arch="phi", vocab_size=32, hidden_size=32, num_layers=1, num_heads=4,
                    intermediate_size=64, max_position_embeddings=64)
  gen = decode.Generator(cfg, _random_params(cfg, seed=3))
  tok = _CharTokenizer()
  free, = gen.generate([[1, 2]], max_new_tokens=30)
  text = tok.decode(free.ids)
  assert len(free.ids) == 30 and free.finish == "length"
  first = next(i for i in free.ids if i < 27)
  # The first letter it writes as a stop string: cut before it.
  stopped, = gen.generate([[1, 2]], max_new_tokens=30, tokenizer=tok,
                          stop=[tok.decode([first])])
  assert stopped.finish == "stop" and stopped.text == text[:text.index(tok.decode([first]))]
  ended, = gen.generate([[1, 2]], max_new_tokens=30, eos_id=free.ids[3])
  assert ended.finish == "eos" and ended.ids == free.ids[:free.ids.index(free.ids[3])]
  short, = gen.generate([[1] * 40], max_new_tokens=100)
  assert short.finish == "cache" and len(short.ids) == 64 - 40


def test_compiles_per_bucket_not_per_token():
  gen = decode.Generator(CFG, _random_params(CFG))

  def compiles():
    return sum(p._cache_size() + d._cache_size() for p, d in gen._steps.values())

  gen.generate([[1, 2, 3]], max_new_tokens=5)
  assert compiles() == 2  # one prefill, one decode step (positions < 16)
  # Same (batch, cache length) bucket, other settings and lengths: nothing new.
  gen.generate([[1, 2, 3, 4, 5]], max_new_tokens=9, temperature=0.7, top_p=0.9, seed=3)
  assert compiles() == 2
  # A 64-slot cache: one prefill, and a decode step per visible length 16, 32, 64.
  gen.generate([[1, 2]], max_new_tokens=60)
  assert compiles() == 2 + 1 + 3 and len(gen._steps) == 2


def test_complete_does_not_depend_on_batch_size():
  gen = decode.Generator(CFG, _random_params(CFG))
  tok = _CharTokenizer()
  kw = dict(n=3, max_new_tokens=6, temperature=1.0, seed=5)
  a = gen.complete(tok, ["abc", "de"], batch_size=2, **kw)
  b = gen.complete(tok, ["abc", "de"], batch_size=8, **kw)
  assert [[o.ids for o in r] for r in a] == [[o.ids for o in r] for r in b]
  assert len({tuple(o.ids) for o in a[0]}) > 1  # samples of one prompt differ


def test_bad_input_is_one_clear_error():
  gen = decode.Generator(CFG, _random_params(CFG))
  with pytest.raises(ValueError, match="prompt of 64 tokens does not fit the cache"):
    gen.generate([[1] * 64], max_new_tokens=4)
  with pytest.raises(ValueError, match="prompt 0 is empty"):
    gen.generate([[]], max_new_tokens=4)
  with pytest.raises(ValueError, match="outside the model's vocabulary of 64"):
    gen.generate([[70]], max_new_tokens=4)
  with pytest.raises(ValueError, match="stop strings need the tokenizer"):
    gen.generate([[1]], max_new_tokens=4, stop=["x"])


_MESH_SCRIPT = r"""
import jax, numpy as np
from flax import linen as nn
from phijax.model import decode, sharding, abstract_params
from phijax.model.config import ModelConfig
from jax.sharding import Mesh
cfg = ModelConfig(arch="phi3", vocab_size=96, hidden_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, intermediate_size=96, max_position_embeddings=64,
                  sliding_window=6)
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                      nn.unbox(abstract_params(cfg)))
prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12]]
one = decode.Generator(cfg, params, mesh=Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                                                sharding.MESH_AXES))
mesh = Mesh(np.asarray(jax.devices()).reshape(2, 2, 2), sharding.MESH_AXES)
many = decode.Generator(cfg, params, mesh=mesh)
q = many.params["layers_0"]["attn"]["q_proj"]["kernel"]
assert "tensor" in str(q.sharding.spec), q.sharding.spec  # heads split as in training
a = one.generate(prompts, max_new_tokens=20, return_logits=True)
b = many.generate(prompts, max_new_tokens=20, return_logits=True)
for x, y in zip(a, b):
  assert x.ids == y.ids, (x.ids, y.ids)
  np.testing.assert_allclose(x.logits, y.logits, atol=1e-4, rtol=0)
# Streaming (phijax.model.streaming): a 30-token prompt in chunks, 12 slots.
prompts[1] = list(range(30))
kw = dict(max_new_tokens=20, return_logits=True, sink_tokens=2, window=10)
for x, y in zip(one.generate(prompts, **kw), many.generate(prompts, **kw)):
  assert x.ids == y.ids, (x.ids, y.ids)
  np.testing.assert_allclose(x.logits, y.logits, atol=1e-4, rtol=0)
print("ok", q.sharding.spec)
"""


def test_decoding_under_a_data_fsdp_tensor_mesh_matches_one_device():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(8))
  r = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.startswith("ok")

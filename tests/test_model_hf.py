"""Logits equal Hugging Face PhiForCausalLM / Phi3ForCausalLM (random weights)."""

import json

import jax
import numpy as np
import pytest

from tests.hf_utils import hf_logits, hf_model, state_dict_numpy
from phijax import convert
from phijax.convert.hf_config import model_config_from_hf
from phijax.convert.state_dict import hf_to_params
from phijax.model import Transformer

TOL = 1e-4

PHI_CASES = {
    "rotary0.5": dict(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=96,
                      partial_rotary_factor=0.5),
    "rotary0.4_qkln": dict(vocab_size=96, hidden_size=80, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=128,
                           partial_rotary_factor=0.4, qk_layernorm=True),
    "gqa4:2": dict(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                   partial_rotary_factor=0.5, qk_layernorm=False),
}

_LONGROPE_FACTORS = dict(short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
                         long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0])
PHI3_CASES = {
    "gqa4:2": dict(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, intermediate_size=96),
    "gqa4:1_window": dict(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=1,
                          intermediate_size=96, sliding_window=5),
    "longrope": dict(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                     max_position_embeddings=64, original_max_position_embeddings=16,
                     rope_scaling=dict(type="longrope", **_LONGROPE_FACTORS)),
}


def _tokens(vocab, length, batch=2, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


def _phijax_logits(cfg, params, tokens, positions=None, segment_ids=None):
  # One compiled forward, not an eager compile per op: the same numbers, far faster.
  fwd = jax.jit(lambda p, *a: Transformer(cfg).apply({"params": p}, *a))
  return np.asarray(fwd(params, tokens, positions, segment_ids))


def _convert(model):
  cfg = model_config_from_hf(model.config.to_dict())
  return cfg, hf_to_params(cfg, state_dict_numpy(model))


@pytest.mark.parametrize("arch,name", [("phi", n) for n in PHI_CASES] +
                         [("phi3", n) for n in PHI3_CASES])
def test_logits_match_hf(arch, name):
  kw = (PHI_CASES if arch == "phi" else PHI3_CASES)[name]
  model = hf_model(arch, **kw)
  cfg, params = _convert(model)
  # LongRoPE: 12 stays below original_max_position_embeddings (short factors),
  # 24 goes past it (long factors); other configs: one length past the window.
  lengths = [12, 24] if name == "longrope" else [16]
  for length in lengths:
    tokens = _tokens(kw["vocab_size"], length)
    ref = hf_logits(model, tokens)
    got = _phijax_logits(cfg, params, tokens)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_longrope_switches_factors():
  """Sanity of the oracle comparison: short and long factors give different logits."""
  kw = PHI3_CASES["longrope"]
  cfg, params = _convert(hf_model("phi3", **kw))
  tokens = _tokens(kw["vocab_size"], 24)
  full = _phijax_logits(cfg, params, tokens)[:, :12]
  short = _phijax_logits(cfg, params, tokens[:, :12])
  assert np.abs(full - short).max() > 1e-3


@pytest.mark.parametrize("arch,name", [("phi", "rotary0.4_qkln"), ("phi3", "longrope")])
def test_to_hf_loads_in_transformers_and_round_trips(tmp_path, arch, name):
  import transformers
  kw = (PHI_CASES if arch == "phi" else PHI3_CASES)[name]
  cfg, params = _convert(hf_model(arch, **kw))
  convert.to_hf(cfg, params, str(tmp_path))
  loaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), attn_implementation="eager").float().eval()
  tokens = _tokens(kw["vocab_size"], 20)
  np.testing.assert_allclose(hf_logits(loaded, tokens), _phijax_logits(cfg, params, tokens),
                             atol=TOL, rtol=0)
  cfg2, params2 = convert.from_hf(str(tmp_path))
  assert cfg2 == cfg
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


def _msft_state_dict(sd, num_layers, sequential=False):
  """Current HF phi names -> the old phi-msft (or MixFormerSequential) names."""
  out = {"transformer.embd.wte.weight": sd["model.embed_tokens.weight"],
         "lm_head.ln.weight": sd["model.final_layernorm.weight"],
         "lm_head.ln.bias": sd["model.final_layernorm.bias"],
         "lm_head.linear.weight": sd["lm_head.weight"],
         "lm_head.linear.bias": sd["lm_head.bias"]}
  for i in range(num_layers):
    p, q = f"model.layers.{i}.", f"transformer.h.{i}."
    for kind in ("weight", "bias"):
      out[q + f"mixer.Wqkv.{kind}"] = np.concatenate(
          [sd[p + f"self_attn.{n}_proj.{kind}"] for n in "qkv"], axis=0)
      out[q + f"mixer.out_proj.{kind}"] = sd[p + f"self_attn.dense.{kind}"]
      out[q + f"ln.{kind}"] = sd[p + f"input_layernorm.{kind}"]
      for fc in ("fc1", "fc2"):
        out[q + f"mlp.{fc}.{kind}"] = sd[p + f"mlp.{fc}.{kind}"]
  if sequential:
    renamed = {}
    for k, v in out.items():
      k = k.replace("transformer.embd.", "layers.0.")
      k = k.replace("lm_head.ln.", f"layers.{num_layers + 1}.ln.")
      k = k.replace("lm_head.linear.", f"layers.{num_layers + 1}.linear.")
      if k.startswith("transformer.h."):
        i, rest = k[len("transformer.h."):].split(".", 1)
        k = f"layers.{int(i) + 1}.{rest}"
      renamed[k] = v
    out = renamed
  return out


@pytest.mark.parametrize("model_type", ["phi-msft", "mixformer-sequential"])
def test_from_hf_reads_old_phi_msft_layout(tmp_path, model_type):
  from safetensors.numpy import save_file
  kw = PHI_CASES["rotary0.5"]
  model = hf_model("phi", **kw)
  sd = _msft_state_dict(state_dict_numpy(model), 2, model_type == "mixformer-sequential")
  save_file(sd, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps(dict(
      model_type=model_type, vocab_size=96, n_embd=64, n_layer=2, n_head=4,
      rotary_dim=8, n_inner=96, n_positions=2048, layer_norm_epsilon=1e-5)))
  cfg, params = convert.from_hf(str(tmp_path))
  tokens = _tokens(96, 16)
  np.testing.assert_allclose(_phijax_logits(cfg, params, tokens), hf_logits(model, tokens),
                             atol=TOL, rtol=0)


def test_from_hf_reads_transformers5_rope_parameters(tmp_path):
  """A config.json written by transformers 5.x (rope_parameters) and the bf16 save path."""
  kw = PHI3_CASES["longrope"]
  model = hf_model("phi3", **kw)
  model.save_pretrained(str(tmp_path))
  written = json.loads((tmp_path / "config.json").read_text())
  assert "rope_parameters" in written
  cfg, params = convert.from_hf(str(tmp_path))
  assert cfg.rope_scaling is not None
  tokens = _tokens(96, 24)
  np.testing.assert_allclose(_phijax_logits(cfg, params, tokens), hf_logits(model, tokens),
                             atol=TOL, rtol=0)


def test_checkpoint_that_does_not_fit_names_the_field(tmp_path):
  kw = PHI3_CASES["gqa4:2"]
  model = hf_model("phi3", **kw)
  model.save_pretrained(str(tmp_path))
  hf = json.loads((tmp_path / "config.json").read_text())
  hf["intermediate_size"] = 128  # the weights were saved with 96
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(convert.CheckpointMismatch, match="intermediate_size"):
    convert.from_hf(str(tmp_path))
  hf["intermediate_size"] = 96
  hf["num_hidden_layers"] = 3
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(convert.CheckpointMismatch, match="num_layers"):
    convert.from_hf(str(tmp_path))


def test_convert_cli_round_trip(tmp_path):
  import subprocess
  import sys
  model = hf_model("phi", **PHI_CASES["rotary0.5"])
  model.save_pretrained(str(tmp_path / "hf"))
  for args in (["--hf_dir", str(tmp_path / "hf"), "--out", str(tmp_path / "pj")],
               ["--phijax_dir", str(tmp_path / "pj"), "--out", str(tmp_path / "hf2"),
                "--to_hf"]):
    subprocess.run([sys.executable, "-m", "phijax.convert", *args], check=True,
                   capture_output=True)
  tokens = _tokens(96, 16)
  cfg, params = convert.from_hf(str(tmp_path / "hf2"))
  np.testing.assert_allclose(_phijax_logits(cfg, params, tokens), hf_logits(model, tokens),
                             atol=TOL, rtol=0)

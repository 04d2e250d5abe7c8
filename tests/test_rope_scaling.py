"""Context extension (``rope_scaling``: linear, YaRN, LongRoPE) on phi and phi3 blocks.

Which pairs transformers 5.x implements, and so what each is tested against:

=========  ======================================  =====================================
type       phi (PhiForCausalLM)                    phi3 (Phi3ForCausalLM)
=========  ======================================  =====================================
linear     transformers: logits equal              not in transformers (Phi3Config
                                                   rejects it): a float64 numpy oracle of
                                                   the formula, and HF's phi3 block with
                                                   the oracle's frequencies put in
yarn       transformers: logits equal (defaults,   not in transformers (Phi3Config reads
           betas / truncate / attention_factor,    "yarn" as LongRoPE's old name): the
           mscale / mscale_all_dim)                same oracle test
longrope   transformers: logits equal              transformers: logits equal
                                                   (tests/test_model_hf.py, and partial
                                                   rotary here)
=========  ======================================  =====================================

Every comparison runs below and above ``original_max_position_embeddings``; cached
decoding equals the full forward for all six pairs.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phijax import convert
from phijax.convert.hf_config import model_config_from_hf, model_config_to_hf
from phijax.model import decode, rope
from phijax.model.config import ModelConfig
from tests.hf_utils import hf_logits, hf_model
from tests.test_generate import _prefix_logits, _random_params
from tests.test_model_hf import TOL, _convert, _phijax_logits, _tokens

torch = pytest.importorskip("torch")

ORIG = 32  # original_max_position_embeddings of every case
LENGTHS = (24, 48)  # below and above it
# head_dim 32, rotary 16 (8 frequencies); theta 100 puts YaRN's ramp inside the rotary
# dims at ORIG = 32 (frequencies 1 and 2 are part interpolated), so it is exercised;
# yarn_tuned's beta_slow puts the ramp's end past the last frequency (8.03 > 7), where
# transformers' clamp to rotary_dim - 1 (not rotary_dim / 2 - 1) shows.
BASE = dict(vocab_size=96, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=96, rope_theta=100.0,
            max_position_embeddings=4 * ORIG)
FACTORS = dict(short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
               long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0])
SCALINGS = {
    "linear": dict(type="linear", factor=4.0),
    "yarn": dict(type="yarn", factor=4.0, original_max_position_embeddings=ORIG),
    "yarn_tuned": dict(type="yarn", factor=4.0, original_max_position_embeddings=ORIG,
                       beta_fast=8.0, beta_slow=0.05, truncate=False, attention_factor=1.25),
    "yarn_mscale": dict(type="yarn", factor=4.0, original_max_position_embeddings=ORIG,
                        mscale=1.0, mscale_all_dim=0.5),
    "longrope": dict(type="longrope", original_max_position_embeddings=ORIG, **FACTORS),
}


def _phi_kw(name):
  return dict(BASE, partial_rotary_factor=0.5, rope_scaling=dict(SCALINGS[name]))


# ------------------------------------------------------------ phi: transformers' logits

@pytest.mark.parametrize("name", list(SCALINGS))
def test_phi_logits_match_hf_below_and_above_the_original_length(name):
  model = hf_model("phi", **_phi_kw(name))
  cfg, params = _convert(model)
  assert cfg.rope_scaling["type"] == SCALINGS[name]["type"]
  plain = cfg.replace(rope_scaling=None)
  for length in LENGTHS:
    tokens = _tokens(BASE["vocab_size"], length)
    got = _phijax_logits(cfg, params, tokens)
    np.testing.assert_allclose(got, hf_logits(model, tokens), atol=TOL, rtol=0)
    # The scaling is not a no-op that both sides could agree on.
    assert np.abs(got - _phijax_logits(plain, params, tokens)).max() > 1e-3


def test_phi3_longrope_with_partial_rotary_matches_hf():
  """Phi-4-mini style: LongRoPE over part of each head (here half of 32 dims)."""
  model = hf_model("phi3", **dict(BASE, partial_rotary_factor=0.5,
                                  original_max_position_embeddings=ORIG,
                                  rope_scaling=dict(type="longrope", **FACTORS)))
  cfg, params = _convert(model)
  assert cfg.rotary_dim == 16 and cfg.rope_scaling["original_max_position_embeddings"] == ORIG
  for length in LENGTHS:
    tokens = _tokens(BASE["vocab_size"], length)
    np.testing.assert_allclose(_phijax_logits(cfg, params, tokens), hf_logits(model, tokens),
                               atol=TOL, rtol=0)


# ----------------------------------------------- phi3 linear / yarn: a numpy oracle

def oracle(rs, rotary_dim, theta):
  """float64 ``(inv_freq, attention factor)`` from the published formulas.

  linear (Chen et al. 2023, Eq. 4): every position divided by s, so every frequency.
  YaRN (Peng et al. 2023, Sec. 3.2-3.4): frequency d turns r(d) = L / (2 pi theta^(2d/D))
  times over the original length L; it keeps its value where r > beta_fast, is divided
  by s where r < beta_slow, and mixes the two linearly in between, with cos/sin times
  0.1 ln(s) + 1 (Eq. 22). The paper's Eq. 18 ramps linearly in r; the authors' code
  (github.com/jquesnelle/yarn), which transformers copies, ramps linearly in d between
  the dims where r equals the betas (floored / ceiled with ``truncate``, the upper one
  clamped to D - 1): that is the model that exists as checkpoints, so the oracle
  follows it.
  """
  s = rs["factor"]
  d = np.arange(rotary_dim // 2, dtype=np.float64)
  inv_freq = float(theta) ** (-2.0 * d / rotary_dim)
  if rs["type"] == "linear":
    return inv_freq / s, 1.0
  L = rs["original_max_position_embeddings"]
  beta_fast, beta_slow = rs.get("beta_fast", 32.0), rs.get("beta_slow", 1.0)
  dim_at = lambda r: rotary_dim * math.log(L / (2 * math.pi * r)) / (2 * math.log(theta))
  lo, hi = dim_at(beta_fast), dim_at(beta_slow)
  if rs.get("truncate", True):
    lo, hi = math.floor(lo), math.ceil(hi)
  lo, hi = max(lo, 0), min(hi, rotary_dim - 1)
  interpolated = np.clip((d - lo) / (hi - lo if hi != lo else 0.001), 0.0, 1.0)
  inv = inv_freq * (1 - interpolated) + inv_freq / s * interpolated
  if rs.get("attention_factor") is not None:
    return inv, rs["attention_factor"]
  m = lambda k: 0.1 * k * math.log(s) + 1.0
  if rs.get("mscale") and rs.get("mscale_all_dim"):
    return inv, m(rs["mscale"]) / m(rs["mscale_all_dim"])
  return inv, m(1.0)


@pytest.mark.parametrize("name", ["linear", "yarn", "yarn_tuned", "yarn_mscale"])
def test_oracle_is_the_formula_transformers_runs(name):
  """The oracle agrees with transformers' own frequencies where it has them (phi)."""
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  model = hf_model("phi", **_phi_kw(name))
  inv, factor = ROPE_INIT_FUNCTIONS[SCALINGS[name]["type"]](model.config)
  want, want_factor = oracle(SCALINGS[name], 16, BASE["rope_theta"])
  np.testing.assert_allclose(inv.numpy(), want, rtol=1e-6)
  assert factor == pytest.approx(want_factor, rel=1e-12)
  if name.startswith("yarn"):  # the ramp is exercised: a frequency strictly inside it
    kept = BASE["rope_theta"] ** (-np.arange(0, 16, 2) / 16)
    share = (kept - want) / (kept - kept / 4.0)  # 0: kept, 1: interpolated
    assert np.any((share > 0.01) & (share < 0.99)) and share[0] == 0


@pytest.mark.parametrize("name", ["linear", "yarn", "yarn_tuned"])
def test_phi3_linear_and_yarn_match_the_oracle(name):
  """transformers has no phi3 model with these: phijax's cos/sin equal the oracle's,
  and its logits equal HF's phi3 block run with the oracle's frequencies and factor."""
  rs = SCALINGS[name]
  model = hf_model("phi3", **BASE)
  inv, factor = oracle(rs, 32, BASE["rope_theta"])
  emb = model.model.rotary_emb
  with torch.no_grad():
    emb.inv_freq.copy_(torch.tensor(inv, dtype=torch.float32))
    emb.original_inv_freq.copy_(emb.inv_freq)
  emb.attention_scaling = factor
  cfg, params = _convert(model)
  cfg = cfg.replace(rope_scaling=rs)
  for length in LENGTHS:
    positions = np.arange(length)[None]
    cos, sin = rope.cos_sin(cfg, jnp.asarray(positions))
    angles = positions[..., None] * np.concatenate([inv, inv])
    np.testing.assert_allclose(np.asarray(cos), factor * np.cos(angles), atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(sin), factor * np.sin(angles), atol=2e-5, rtol=0)
    tokens = _tokens(BASE["vocab_size"], length)
    np.testing.assert_allclose(_phijax_logits(cfg, params, tokens), hf_logits(model, tokens),
                               atol=TOL, rtol=0)


# ------------------------------------------------------------ cached decoding

# Three of the six pairs (each ~3 s): the other three differ from these only in their
# frequencies, which the parity and oracle tests above check.
@pytest.mark.parametrize("arch,name", [("phi", "yarn"), ("phi3", "linear"),
                                       ("phi", "longrope")])
def test_cached_logits_equal_the_full_forward(arch, name):
  """Prompt 7 + 33 new tokens: the cache crosses the original length (32); every decode
  step's logits equal a full forward over the same prefix (LongRoPE: short factors up
  to 32 positions, long ones after, the cache rebuilt at the switch)."""
  partial = 0.5 if arch == "phi" else 1.0
  rs = dict(SCALINGS[name])
  if name == "longrope" and arch == "phi3":  # 32 dims rotate: 16 factors
    rs.update(short_factor=FACTORS["short_factor"] * 2, long_factor=FACTORS["long_factor"] * 2)
  cfg = ModelConfig(arch=arch, vocab_size=96, hidden_size=128, num_layers=2, num_heads=4,
                    num_kv_heads=2, intermediate_size=96, rope_theta=100.0,
                    partial_rotary_factor=partial, max_position_embeddings=4 * ORIG,
                    rope_scaling=rs)
  params = _random_params(cfg)
  prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, 7).tolist()
  out, = decode.Generator(cfg, params).generate([prompt], max_new_tokens=33,
                                                return_logits=True)
  full = _prefix_logits(cfg, params, prompt + out.ids, len(prompt))
  np.testing.assert_allclose(out.logits, full, atol=1e-4, rtol=0)


# ------------------------------------------------------------ config and conversion

@pytest.mark.parametrize("rs,field", [
    (dict(type="dynamic", factor=2.0), "rope_scaling.type"),
    (dict(factor=2.0), "rope_scaling.type"),
    (dict(type="linear"), "rope_scaling.factor"),
    (dict(type="yarn", factor=4.0), "rope_scaling.original_max_position_embeddings"),
    (dict(type="yarn", factor=4.0, original_max_position_embeddings=32, beta_fats=8.0),
     "rope_scaling.beta_fats"),
    (dict(type="yarn", factor=0.0, original_max_position_embeddings=32), "rope_scaling.factor"),
    (dict(type="yarn", factor=4.0, original_max_position_embeddings=32, truncate="no"),
     "rope_scaling.truncate"),
    (dict(type="longrope", original_max_position_embeddings=32, short_factor=[1.0] * 3,
          long_factor=[1.0] * 4), "rope_scaling.short_factor"),
    (dict(type="longrope", original_max_position_embeddings=32, long_factor=[1.0] * 4),
     "rope_scaling.short_factor"),
])
def test_bad_rope_scaling_is_one_line_naming_the_field(rs, field):
  with pytest.raises(ValueError, match=f"^model config: {field}: ") as err:
    ModelConfig(arch="phi", vocab_size=96, hidden_size=64, num_layers=1, num_heads=4,
                partial_rotary_factor=0.5, rope_scaling=rs)
  assert "\n" not in str(err.value)


def test_configs_that_mean_the_same_are_equal():
  kw = dict(arch="phi3", vocab_size=96, hidden_size=64, num_layers=1, num_heads=4,
            max_position_embeddings=128)
  legacy = dict(FACTORS, original_max_position_embeddings=32)  # phijax's old form
  assert ModelConfig(**kw, rope_scaling=legacy) == ModelConfig(
      **kw, rope_scaling=dict(legacy, type="longrope", factor=None))
  yarn = ModelConfig(**kw, rope_scaling=dict(rope_type="yarn", factor=4,
                                             original_max_position_embeddings=32))
  assert yarn == ModelConfig(**kw, rope_scaling=dict(
      type="yarn", factor=4.0, original_max_position_embeddings=32, beta_fast=32,
      beta_slow=1, truncate=True))
  assert ModelConfig.from_dict(json.loads(json.dumps(yarn.to_dict()))) == yarn
  linear = ModelConfig(**kw, rope_scaling=dict(type="linear", factor=4.0))
  assert linear.rope_scaling["original_max_position_embeddings"] == 32  # 128 / 4


@pytest.mark.parametrize("name", ["linear", "yarn_tuned", "longrope"])
def test_phi_to_hf_loads_in_transformers_and_round_trips(tmp_path, name):
  import transformers
  cfg, params = _convert(hf_model("phi", **_phi_kw(name)))
  convert.to_hf(cfg, params, str(tmp_path))
  loaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), attn_implementation="eager").float().eval()
  assert loaded.model.rotary_emb.rope_type == SCALINGS[name]["type"]
  tokens = _tokens(BASE["vocab_size"], 48)
  np.testing.assert_allclose(hf_logits(loaded, tokens), _phijax_logits(cfg, params, tokens),
                             atol=TOL, rtol=0)
  cfg2, params2 = convert.from_hf(str(tmp_path))
  assert cfg2 == cfg
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


@pytest.mark.parametrize("name", ["linear", "yarn"])
def test_phi3_linear_and_yarn_refuse_export(name):
  cfg = ModelConfig(arch="phi3", vocab_size=96, hidden_size=64, num_layers=1, num_heads=4,
                    max_position_embeddings=128, rope_scaling=SCALINGS[name])
  with pytest.raises(ValueError, match="Phi3ForCausalLM implements only 'longrope'"):
    model_config_to_hf(cfg)


def test_from_hf_reads_rope_types_as_transformers_does():
  phi3 = dict(model_type="phi3", vocab_size=96, hidden_size=64, num_hidden_layers=1,
              num_attention_heads=4, max_position_embeddings=128)
  # Phi3Config: "yarn" is LongRoPE's old name; the top-level original length wins,
  # 4096 (its default) when only the nested one is given.
  cfg = model_config_from_hf(dict(phi3, rope_scaling=dict(
      type="yarn", original_max_position_embeddings=32, short_factor=[1.0] * 8,
      long_factor=[2.0] * 8)))
  assert cfg.rope_scaling["type"] == "longrope"
  assert cfg.rope_scaling["original_max_position_embeddings"] == 4096
  with pytest.raises(ValueError, match="rope type 'linear' is not supported for model_type "
                                       "'phi3'"):
    model_config_from_hf(dict(phi3, rope_scaling=dict(type="linear", factor=2.0)))
  phi = dict(phi3, model_type="phi", partial_rotary_factor=0.5)
  # PhiConfig: yarn is YaRN; its original length defaults to max_position_embeddings.
  cfg = model_config_from_hf(dict(phi, rope_parameters=dict(rope_type="yarn", factor=2.0)))
  assert cfg.rope_scaling["type"] == "yarn"
  assert cfg.rope_scaling["original_max_position_embeddings"] == 128
  cfg = model_config_from_hf(dict(phi, original_max_position_embeddings=16, rope_scaling=dict(
      type="yarn", factor=2.0, original_max_position_embeddings=64)))
  assert cfg.rope_scaling["original_max_position_embeddings"] == 16
  with pytest.raises(ValueError, match="rope type 'dynamic' is not supported"):
    model_config_from_hf(dict(phi, rope_scaling=dict(type="dynamic", factor=2.0)))

"""Context-window extension of rotary embeddings: the ``rope_scaling`` types.

``ModelConfig.rope_scaling`` is None (plain RoPE) or a dict whose ``type`` is one of:

- ``linear``: position interpolation (Chen et al. 2023, "Extending Context Window of
  Large Language Models via Positional Interpolation", arXiv 2306.15595): positions
  are divided by ``factor``, i.e. every inverse frequency is.
- ``yarn``: YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large
  Language Models", arXiv 2309.00071): NTK-by-parts interpolation (dimensions that turn
  more than ``beta_fast`` times over the original length keep their frequency, those
  that turn fewer than ``beta_slow`` times are interpolated by ``factor``, a linear ramp
  between) and cos/sin scaled by ``0.1 ln(factor) + 1`` (or ``attention_factor``).
- ``longrope``: LongRoPE (Ding et al. 2024, "LongRoPE: Extending LLM Context Window
  Beyond 2 Million Tokens", arXiv 2402.13753), as Phi-3 ships it: searched per-dimension
  ``short_factor`` / ``long_factor`` rescales, the long ones once a sequence reaches past
  ``original_max_position_embeddings``, cos/sin scaled by
  ``sqrt(1 + ln(factor) / ln(original_max_position_embeddings))``.

Each formula is transformers 5.x's (``modeling_rope_utils``) step for step, in float32,
so that phijax matches ``PhiForCausalLM`` for all three; ``Phi3ForCausalLM`` only
implements ``longrope`` (its config rejects ``linear`` and reads ``yarn`` as LongRoPE's
old name), so phi3 models with the other two cannot be exported (``convert.to_hf``).

``canonical`` validates a user's dict and fills in every optional field, so two configs
that mean the same compare equal (``ModelConfig`` hashes as a jit static argument).
This module imports nothing from phijax: ``ModelConfig`` calls it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

TYPES = ("linear", "yarn", "longrope")

_REQUIRED = {
    "linear": ("factor",),
    "yarn": ("factor", "original_max_position_embeddings"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
}
# Optional fields and their defaults (transformers' defaults). ``linear``'s original
# length is informational (interpolation does not use it; the decoder reads it as the
# LongRoPE switch point, which linear never switches at): the length the factor
# stretches to max_position_embeddings, unless given.
_OPTIONAL = {
    "linear": {"original_max_position_embeddings": None},
    "yarn": {"attention_factor": None, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": None,
             "mscale_all_dim": None, "truncate": True},
    "longrope": {"factor": None, "attention_factor": None},
}
_POSITIVE = ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast",
             "beta_slow", "mscale", "mscale_all_dim")


def fields(rope_type: str) -> tuple[str, ...]:
  """The fields of one type's dict, after ``type``, in their canonical order."""
  return _REQUIRED[rope_type] + tuple(_OPTIONAL[rope_type])


def canonical(rs: Mapping[str, Any], *, rotary_dim: int, max_positions: int,
              bad: Callable[[str, str], None]) -> dict:
  """``rs`` checked and completed: ``{"type": ..., every field of that type}``.

  ``max_positions`` is the model's ``max_position_embeddings``; ``bad(field, message)``
  raises (``ModelConfig``'s one-line error). ``rope_type`` (the transformers spelling)
  is read as ``type``; a dict without either but with LongRoPE's
  factor lists is ``longrope`` (the form phijax wrote before there were types).
  """
  rs = dict(rs)
  if "rope_type" in rs:
    alias = rs.pop("rope_type")
    if rs.setdefault("type", alias) != alias:
      bad("rope_scaling.type", f"{rs['type']!r} disagrees with rope_type {alias!r}")
  if "type" not in rs and ("short_factor" in rs or "long_factor" in rs):
    rs["type"] = "longrope"
  rope_type = rs.pop("type", None)
  if rope_type not in TYPES:
    bad("rope_scaling.type", f"{rope_type!r} is not one of {TYPES} (None: no scaling)"
        if rope_type is not None else f"missing; one of {TYPES}")
  unknown = sorted(set(rs) - set(fields(rope_type)))
  if unknown:
    bad(f"rope_scaling.{unknown[0]}", f"not a field of {rope_type!r} scaling; its fields: "
        f"{', '.join(fields(rope_type))}")
  for key in _REQUIRED[rope_type]:
    if rs.get(key) is None:
      bad(f"rope_scaling.{key}", f"{rope_type!r} scaling needs it")
  out = {"type": rope_type}
  for key in fields(rope_type):
    value = rs.get(key, _OPTIONAL[rope_type].get(key))
    if key in _POSITIVE and value is not None:
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        bad(f"rope_scaling.{key}", f"must be a positive number, got {value!r}")
      value = int(value) if key == "original_max_position_embeddings" else float(value)
    if key == "truncate" and not isinstance(value, bool):
      bad("rope_scaling.truncate", f"must be true or false, got {value!r}")
    if key in ("short_factor", "long_factor"):
      if len(value) != rotary_dim // 2:
        bad(f"rope_scaling.{key}", f"has {len(value)} entries, expected rotary_dim/2 = "
            f"{rotary_dim // 2}")
      value = tuple(float(v) for v in value)
    out[key] = value
  if rope_type == "linear" and out["original_max_position_embeddings"] is None:
    out["original_max_position_embeddings"] = linear_original_length(
        max_positions, out["factor"])
  return out


def linear_original_length(max_position_embeddings: int, factor: float) -> int:
  """``linear``'s default original length: the one ``factor`` stretches to the max."""
  return max(1, int(max_position_embeddings / factor))


# ----------------------------------------------------------------- frequencies (host)

def inv_frequencies(rotary_dim: int, theta: float, ext_factors=None) -> np.ndarray:
  """``1 / (ext * theta^(2i/dim))`` in float32, computed on the host once."""
  exponents = np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)
  base = np.float32(theta) ** exponents
  if ext_factors is not None:
    base = np.asarray(ext_factors, np.float32) * base
  return (1.0 / base).astype(np.float32)


def linear_inv_frequencies(rotary_dim: int, theta: float, rs) -> np.ndarray:
  """Position interpolation: ``inv_freq / factor`` (positions / factor)."""
  return (inv_frequencies(rotary_dim, theta) / np.float32(rs["factor"])).astype(np.float32)


def yarn_ramp(rotary_dim: int, theta: float, rs) -> np.ndarray:
  """YaRN's per-frequency extrapolation weight in [0, 1] (1: keep the frequency).

  Frequency ``i`` turns ``L / (2 pi theta^(2i/d))`` times over the original length L;
  the dims ``[low, high]`` where that count falls from ``beta_fast`` to ``beta_slow``
  ramp linearly (the paper's gamma, Eq. 18). As transformers: bounds floored/ceiled
  with ``truncate``, clamped to ``[0, rotary_dim - 1]`` (not ``rotary_dim/2 - 1``), and
  a zero-width ramp widened by 0.001.
  """
  orig = rs["original_max_position_embeddings"]

  def dim_of(turns):  # the (fractional) dim that turns `turns` times over orig
    return rotary_dim * math.log(orig / (turns * 2 * math.pi)) / (2 * math.log(theta))

  low, high = dim_of(rs["beta_fast"]), dim_of(rs["beta_slow"])
  if rs["truncate"]:
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, rotary_dim - 1)
  if low == high:
    high += 0.001
  ramp = (np.arange(rotary_dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(
      high - low)
  return (1.0 - np.clip(ramp, 0.0, 1.0)).astype(np.float32)


def yarn_inv_frequencies(rotary_dim: int, theta: float, rs) -> np.ndarray:
  """NTK-by-parts: each frequency between its original and ``1/factor`` of it."""
  base = np.float32(theta) ** (np.arange(0, rotary_dim, 2, dtype=np.float32)
                               / np.float32(rotary_dim))
  extrapolation = (1.0 / base).astype(np.float32)
  interpolation = (1.0 / (np.float32(rs["factor"]) * base)).astype(np.float32)
  keep = yarn_ramp(rotary_dim, theta, rs)
  return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
  """YaRN's Eq. 21 attention temperature, as a cos/sin factor: ``0.1 m ln(s) + 1``."""
  return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def attention_factor(rs, max_position_embeddings: int) -> float:
  """What cos and sin are multiplied by (so q.k by its square); 1.0 for linear."""
  if rs["type"] == "linear":
    return 1.0
  if rs.get("attention_factor") is not None:
    return float(rs["attention_factor"])
  orig = rs["original_max_position_embeddings"]
  factor = rs.get("factor") or max_position_embeddings / orig
  if rs["type"] == "yarn":
    # transformers' (DeepSeek's) rule: mscale counts only together with mscale_all_dim.
    if rs.get("mscale") and rs.get("mscale_all_dim"):
      return yarn_mscale(factor, rs["mscale"]) / yarn_mscale(factor, rs["mscale_all_dim"])
    return yarn_mscale(factor)
  if factor <= 1.0:  # longrope
    return 1.0
  return math.sqrt(1.0 + math.log(factor) / math.log(orig))


def frequency_table(rotary_dim: int, theta: float, rs) -> dict[str, np.ndarray]:
  """The inverse frequencies a type uses: ``{"short": ...}`` (and ``"long"`` for
  LongRoPE, used once a sequence reaches past the original length)."""
  if rs is None:
    return {"short": inv_frequencies(rotary_dim, theta)}
  if rs["type"] == "linear":
    return {"short": linear_inv_frequencies(rotary_dim, theta, rs)}
  if rs["type"] == "yarn":
    return {"short": yarn_inv_frequencies(rotary_dim, theta, rs)}
  return {"short": inv_frequencies(rotary_dim, theta, rs["short_factor"]),
          "long": inv_frequencies(rotary_dim, theta, rs["long_factor"])}

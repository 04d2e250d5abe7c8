"""``ModelConfig``: the architecture of a Phi model as a frozen, hashable dataclass.

It is what ``phijax.model.Transformer`` takes and what ``phijax.convert.from_hf``
returns; ``config.model`` in a run config holds the same fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from phijax.model import rope_scaling as scaling

ARCHS = ("phi", "phi3")
REMAT = ("none", "full", "dots")
DTYPES = ("float32", "bfloat16", "float16")
POSITION_ENCODINGS = ("rope", "nope")
# Each block's matrices (phijax.model.transformer's module paths): what LoRA can target.
BLOCK_MATRICES = {
    "phi": ("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", "mlp/fc1", "mlp/fc2"),
    "phi3": ("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", "mlp/gate_proj",
             "mlp/up_proj", "mlp/down_proj"),
}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """LoRA adapters (Hu et al. 2021, arXiv 2106.09685; ``phijax/model/lora.py``): each
  targeted block matrix ``W`` computes ``x W + (alpha / rank) * dropout(x) A B`` with
  ``W`` frozen and only ``A``, ``B`` trained. ``config.model.lora`` holds these fields."""
  # > 0: each targeted block matrix gains A [in, rank] (random) and B [rank, out] (zeros,
  # so step 0 is the base model exactly); only the adapters train. 0 = off.
  rank: int = 0
  # The adapter's output is scaled by alpha / rank, alpha held fixed as rank varies (Hu et
  # al. 4.1: then the learning rate need not be retuned); 8 is PEFT's default (scale 1 at
  # rank 8).
  alpha: float = 8.0
  dropout: float = 0.0  # dropout on the adapter's input while training (PEFT's lora_dropout)
  # Which block matrices get adapters: a regex searched in each one's path, e.g.
  # layers_0/attn/q_proj, layers_3/mlp/fc1 (phi3: gate_proj, up_proj, down_proj); the
  # default is the paper's W_q and W_v, "." adapts every block matrix.
  targets: str = "q_proj|v_proj"
  # QLoRA (phijax/model/quant.py): "nf4" (4-bit NormalFloat, double-quantised scales:
  # 4.127 bits a parameter) or "int8" stores every block matrix of the frozen base
  # quantized, dequantized per matmul; "" keeps it float32. Needs rank > 0.
  quantize: str = ""

  @classmethod
  def from_dict(cls, d) -> "LoraConfig":
    d = d.to_dict() if hasattr(d, "to_dict") else dict(d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"model config: lora: unknown field(s) {unknown}; known: "
                       f"{sorted(names)}")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  arch: str = "phi"  # "phi": phi-1/1.5/2 (parallel block); "phi3": phi-3/phi-4
  vocab_size: int = 51200  # embedding rows: at least the tokenizer's pieces (phi-2 pads)
  hidden_size: int = 2048  # the residual stream's width
  num_layers: int = 24  # transformer blocks
  num_heads: int = 32  # query heads
  num_kv_heads: int = 0  # 0 = num_heads (no GQA)
  head_dim: int | None = None  # None = hidden_size // num_heads
  intermediate_size: int | None = None  # None = 4 * hidden_size
  max_position_embeddings: int = 2048  # the longest sequence the model takes
  rope_theta: float = 10000.0  # rotary base frequency
  partial_rotary_factor: float = 1.0  # the fraction of each head's dims rotated (phi: 0.5)
  # Context extension (phijax/model/rope_scaling.py), None = plain RoPE; a dict with
  # type "linear" (factor), "yarn" (factor, original_max_position_embeddings, optional
  # attention_factor, beta_fast, beta_slow, mscale, mscale_all_dim, truncate) or
  # "longrope" (short_factor=[...], long_factor=[...], original_max_position_embeddings,
  # optional factor, attention_factor). Missing optional fields take their defaults.
  rope_scaling: Any = None
  # "rope" (rotary, the default) or "nope": no position information at all (q and k
  # unrotated; causal attention alone tells order), for length-generalization studies.
  position_encoding: str = "rope"
  # Training only (deterministic=False): each row's positions are shifted by a random
  # offset in [0, max_position_embeddings - length], so the model sees every absolute
  # position and cannot tie a skill to a few of them (Shen et al. 2023). Inference and
  # evaluation start at 0, inside the trained range. Give it room with
  # max_position_embeddings well above data.seq_len. Caveat: rotary scores depend only
  # on the distance between positions, so under RoPE a whole-row shift changes nothing
  # but float rounding (experiments/arith_length.py: training losses agreed to 4e-7
  # over 30 steps); the paper's offsets act on absolute position embeddings, which
  # phi models do not have. It matters where absolute positions do (LongRoPE's switch).
  random_position_offset: bool = False
  sliding_window: int | None = None  # None = full causal attention; else tokens seen back
  layer_norm_eps: float = 1e-5  # LayerNorm's (RMSNorm's for phi3) epsilon
  qk_layernorm: bool = False  # LayerNorm on each head's queries and keys
  embd_pdrop: float = 0.0  # dropout on the embedding output
  attention_dropout: float = 0.0  # dropout on the attention probabilities
  resid_pdrop: float = 0.0  # dropout on each residual branch (attention, MLP)
  resid_pdrop_schedule: str = "constant"  # or "linear": 0 at layer 0 up to p at the top
  dtype: str = "float32"  # compute dtype; params stay float32
  remat: str = "none"  # none | full (recompute each block) | dots (keep matmul outputs)
  attention_impl: str = "xla"  # xla | pallas_gpu | pallas_tpu | cudnn | auto | reference
  init_std: float = 0.02  # the weight matrices' normal init std
  # muP as MiniCPM's "model wind tunnel" (Hu et al. 2024, arXiv 2404.06395; their HF
  # code's scale_emb, scale_depth, dim_model_base), so that hyperparameters tuned at a
  # small width carry over to a wider model. With mup, width_mult = hidden_size /
  # mup_dim_model_base and: the embedding output is multiplied by mup_scale_emb; each
  # residual branch (attention, MLP) by mup_scale_depth / sqrt(num_layers) before it
  # is added; the final hidden states are divided by width_mult before lm_head; the
  # block matrices start at init_std / sqrt(width_mult) and take 1 / width_mult of the
  # learning rate (phijax.train.optim; embeddings, lm_head, norms and biases keep it). Off,
  # the compiled model is exactly the standard one. A mup model has no Hugging Face
  # Phi equivalent, so it cannot be exported with to_hf.
  mup: bool = False
  mup_scale_emb: float = 12.0  # muP: the embedding output's multiplier
  mup_scale_depth: float = 1.4  # muP: each residual branch's, over sqrt(num_layers)
  mup_dim_model_base: int = 256  # muP: the width the hyperparameters were tuned at
  # LoRA adapters (rank, alpha, dropout, targets; phijax/model/lora.py): the base model
  # frozen, only the adapters trained; rank 0 = off.
  lora: LoraConfig = LoraConfig()

  def __post_init__(self):
    def bad(field, msg):
      raise ValueError(f"model config: {field}: {msg}")
    if self.arch not in ARCHS:
      bad("arch", f"unknown architecture {self.arch!r}; choose one of {ARCHS}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads"):
      if int(getattr(self, name)) <= 0:
        bad(name, f"must be positive, got {getattr(self, name)}")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      bad("num_heads", f"{self.num_heads} heads do not divide hidden_size "
          f"{self.hidden_size}; set head_dim explicitly or change num_heads")
    if self.num_heads % self.kv_heads:
      bad("num_kv_heads", f"{self.kv_heads} kv heads do not divide num_heads "
          f"{self.num_heads}")
    if self.position_encoding not in POSITION_ENCODINGS:
      bad("position_encoding", f"{self.position_encoding!r} is not one of "
          f"{POSITION_ENCODINGS}")
    if self.position_encoding == "nope" and self.rope_scaling is not None:
      bad("rope_scaling", "scales rotary frequencies, which "
          "position_encoding='nope' does not have; drop one of them")
    if self.position_encoding == "nope" and self.random_position_offset:
      bad("random_position_offset", "shifts rotary positions, which "
          "position_encoding='nope' does not use; drop one of them")
    if self.rotary_dim % 2:
      bad("partial_rotary_factor", f"rotary dims int(head_dim * factor) = "
          f"{self.rotary_dim} must be even")
    if self.dtype not in DTYPES:
      bad("dtype", f"{self.dtype!r} is not one of {DTYPES}")
    if self.remat not in REMAT:
      bad("remat", f"{self.remat!r} is not one of {REMAT}")
    from phijax.model.attention import IMPLS  # local: attention imports nothing from here
    if self.attention_impl not in IMPLS:
      bad("attention_impl", f"{self.attention_impl!r} is not one of {IMPLS}")
    if self.resid_pdrop_schedule not in ("constant", "linear"):
      bad("resid_pdrop_schedule", f"{self.resid_pdrop_schedule!r} is not 'constant' or 'linear'")
    if self.sliding_window is not None and self.sliding_window <= 0:
      bad("sliding_window", "must be a positive number of keys or None")
    for name in ("mup_scale_emb", "mup_scale_depth", "mup_dim_model_base"):
      if not getattr(self, name) > 0:
        bad(name, f"must be positive, got {getattr(self, name)} (MiniCPM uses "
            f"{getattr(ModelConfig, name)})")
    if not isinstance(self.lora, LoraConfig):  # a dict or ConfigDict (config.model.lora)
      object.__setattr__(self, "lora", LoraConfig() if self.lora is None
                         else LoraConfig.from_dict(self.lora))
    _check_lora(self.lora, self.arch, self.num_layers, bad)
    if self.rope_scaling is not None:
      rs = self.rope_scaling
      rs = rs.to_dict() if hasattr(rs, "to_dict") else rs  # a ConfigDict
      if not isinstance(rs, Mapping):
        bad("rope_scaling", f"must be a dict with a 'type', or None; got {rs!r}")
      # Canonical (type + every field, defaults filled): equal meanings hash equal.
      object.__setattr__(self, "rope_scaling", _freeze(scaling.canonical(
          rs, rotary_dim=self.rotary_dim, max_positions=self.max_position_embeddings,
          bad=bad)))

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  @property
  def mlp_dim(self) -> int:
    return self.intermediate_size or 4 * self.hidden_size

  @property
  def rotary_dim(self) -> int:
    """Dims of each head that rotate: 0 with ``nope`` (``rope.apply_rotary`` then
    passes q and k through)."""
    if self.position_encoding == "nope":
      return 0
    return int(self.dim_per_head * self.partial_rotary_factor)

  @property
  def width_mult(self) -> float:
    """muP's width multiplier ``hidden_size / mup_dim_model_base``; 1.0 without mup."""
    return self.hidden_size / self.mup_dim_model_base if self.mup else 1.0

  @property
  def residual_scale(self) -> float:
    """What muP multiplies each residual branch by; 1.0 without mup."""
    return self.mup_scale_depth / self.num_layers ** 0.5 if self.mup else 1.0

  @property
  def hidden_init_std(self) -> float:
    """Init std of the block matrices: muP's fan-in scaling keeps their outputs O(1)
    as the width grows."""
    return self.init_std / self.width_mult ** 0.5 if self.mup else self.init_std

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    if d["rope_scaling"] is not None:
      d["rope_scaling"] = _thaw(d["rope_scaling"])
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """From a dict or ConfigDict; unknown keys are an error naming them."""
    if hasattr(d, "to_dict"):
      d = d.to_dict()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"model config: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**d)


def block_matrix_paths(arch: str, num_layers: int) -> list[str]:
  """``layers_0/attn/q_proj``, ...: every block matrix's path, as LoRA's targets see it."""
  return [f"layers_{i}/{m}" for i in range(num_layers) for m in BLOCK_MATRICES[arch]]


def _check_lora(lora: LoraConfig, arch: str, num_layers: int, bad) -> None:
  import math
  import re
  if not isinstance(lora.rank, int) or lora.rank < 0:
    bad("lora.rank", f"must be an integer >= 0 (0 = no adapters), got {lora.rank!r}")
  if lora.quantize not in ("", "nf4", "int8"):
    bad("lora.quantize", f"{lora.quantize!r}; choose 'nf4', 'int8' or '' (a float32 base)")
  if lora.quantize and not lora.rank:
    bad("lora.quantize", f"{lora.quantize!r} freezes a quantized base: it needs adapters "
        "to train (set model.lora.rank > 0, QLoRA) or quantize='' for full training")
  if not lora.rank:
    return  # off: the other fields are not read
  if not (isinstance(lora.alpha, (int, float)) and lora.alpha > 0 and math.isfinite(lora.alpha)):
    bad("lora.alpha", f"must be positive (the adapter's scale is alpha / rank), got "
        f"{lora.alpha!r}")
  if not 0.0 <= lora.dropout < 1.0:
    bad("lora.dropout", f"must be in [0, 1), got {lora.dropout!r}")
  try:
    rx = re.compile(lora.targets)
  except (re.error, TypeError) as e:
    bad("lora.targets", f"{lora.targets!r} is not a regular expression ({e})")
  paths = block_matrix_paths(arch, num_layers)
  if not any(rx.search(p) for p in paths):
    bad("lora.targets", f"{lora.targets!r} matches no block matrix; their paths look like "
        f"{', '.join(paths[:len(BLOCK_MATRICES[arch])])}, ...")


class _FrozenDict(dict):
  """A dict that hashes, so ModelConfig stays usable as a jit static argument."""

  def __hash__(self):
    return hash(tuple(sorted(self.items())))

  def __setitem__(self, *a):
    raise TypeError("frozen")


def _freeze(d):
  return _FrozenDict({k: tuple(v) if isinstance(v, (list, tuple)) else v
                      for k, v in dict(d).items()})


def _thaw(d):
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(d).items()}


def as_model_config(cfg) -> ModelConfig:
  if isinstance(cfg, ModelConfig):
    return cfg
  return ModelConfig.from_dict(cfg)

"""Hugging Face ``config.json`` <-> ``ModelConfig``.

Reads the current layouts (``phi``, ``phi3``; rope keys either top-level
``rope_theta`` / ``partial_rotary_factor`` / ``rope_scaling`` or transformers 5.x
``rope_parameters``) and the older hub layouts ``phi-msft`` and
``mixformer-sequential`` (``n_embd``, ``n_layer``, ...). Rope scaling types
(``phijax.model.rope_scaling``) are read and written as transformers 5.x reads them:
``linear``, ``yarn`` and ``longrope`` for phi, ``longrope`` only for phi3.
"""

from __future__ import annotations

from typing import Any

from phijax.model import rope_scaling as scaling
from phijax.model.config import ModelConfig

OLD_LAYOUTS = ("phi-msft", "mixformer-sequential")


# transformers 5.x: PhiConfig takes every rope type of ROPE_INIT_FUNCTIONS; Phi3Config
# only "default" and "longrope", reading "su" and "yarn" as LongRoPE's old names.
PHI3_DEFAULT_ORIGINAL_LENGTH = 4096  # Phi3Config.original_max_position_embeddings


def _rope_settings(hf: dict, model_type: str) -> dict:
  """theta, partial rotary factor and ``rope_scaling`` from either key style, read as
  transformers reads them (the original length included: the top-level
  ``original_max_position_embeddings`` wins over the nested one; phi3 always has one,
  4096 unless given, phi falls back to the nested one, then max_position_embeddings)."""
  params = dict(hf.get("rope_parameters") or {})
  scaling_in = hf.get("rope_scaling") or {}
  # transformers 5.x nests everything in rope_parameters; 4.x uses top-level keys.
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  rs = {**scaling_in, **{k: v for k, v in params.items() if k not in ("rope_theta",
                                                                      "partial_rotary_factor")}}
  rope_type = rs.get("rope_type", rs.get("type", "default"))
  if rope_type == "su" or (model_type == "phi3" and rope_type == "yarn"):
    rope_type = "longrope"
  readable = scaling.TYPES if model_type == "phi" else ("longrope",)
  if rope_type != "default" and rope_type not in readable:
    raise ValueError(f"config.json: rope type {rope_type!r} is not supported for "
                     f"model_type {model_type!r}; phijax reads 'default' and "
                     f"{', '.join(map(repr, readable))}"
                     + (" (transformers' Phi3Config rejects the others too)"
                        if model_type == "phi3" else ""))
  rope_scaling = None
  if rope_type != "default":
    rope_scaling = {"type": rope_type}
    rope_scaling.update({k: rs[k] for k in scaling.fields(rope_type) if rs.get(k) is not None})
    orig = hf.get("original_max_position_embeddings")
    if model_type == "phi3":
      orig = orig or PHI3_DEFAULT_ORIGINAL_LENGTH
    elif rope_type != "linear":  # linear's is informational; ModelConfig fills it in
      orig = orig or rs.get("original_max_position_embeddings") or hf.get(
          "max_position_embeddings", 2048)
    if orig is not None:
      rope_scaling["original_max_position_embeddings"] = int(orig)
  return dict(rope_theta=float(theta), partial_rotary_factor=float(partial),
              rope_scaling=rope_scaling)


def model_config_from_hf(hf: dict[str, Any]) -> ModelConfig:
  model_type = hf.get("model_type")
  if model_type in OLD_LAYOUTS:
    n_embd, n_head = hf["n_embd"], hf["n_head"]
    head_dim = n_embd // n_head
    rotary_dim = hf.get("rotary_dim") or head_dim
    return ModelConfig(
        arch="phi", vocab_size=hf["vocab_size"], hidden_size=n_embd,
        num_layers=hf["n_layer"], num_heads=n_head,
        num_kv_heads=hf.get("n_head_kv") or 0,
        intermediate_size=hf.get("n_inner") or 4 * n_embd,
        max_position_embeddings=hf.get("n_positions", 2048),
        rope_theta=float(hf.get("rotary_emb_base", 10000.0)),
        partial_rotary_factor=rotary_dim / head_dim,
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        embd_pdrop=hf.get("embd_pdrop", 0.0), resid_pdrop=hf.get("resid_pdrop", 0.0),
        attention_dropout=hf.get("attn_pdrop", 0.0))
  if model_type not in ("phi", "phi3"):
    raise ValueError(f"config.json: model_type {model_type!r} is not a Phi model; "
                     f"phijax reads 'phi', 'phi3', {', '.join(map(repr, OLD_LAYOUTS))}")
  arch = model_type
  common = dict(
      arch=arch, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      num_kv_heads=hf.get("num_key_value_heads") or 0,
      head_dim=hf.get("head_dim"),
      intermediate_size=hf.get("intermediate_size"),
      max_position_embeddings=hf.get("max_position_embeddings", 2048),
      attention_dropout=hf.get("attention_dropout", 0.0) or 0.0,
      resid_pdrop=hf.get("resid_pdrop", 0.0) or 0.0,
      embd_pdrop=hf.get("embd_pdrop", 0.0) or 0.0,
      **_rope_settings(hf, model_type))
  if common["head_dim"] == hf["hidden_size"] // hf["num_attention_heads"]:
    common["head_dim"] = None
  if arch == "phi":
    return ModelConfig(layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
                       qk_layernorm=bool(hf.get("qk_layernorm", False)), **common)
  return ModelConfig(layer_norm_eps=hf.get("rms_norm_eps", 1e-5),
                     sliding_window=hf.get("sliding_window"), **common)


def model_config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
  """A config.json that transformers 4.4x and 5.x both load (top-level rope keys)."""
  if cfg.position_encoding != "rope":
    raise ValueError(f"model config: position_encoding={cfg.position_encoding!r} has no "
                     "Hugging Face Phi equivalent (HF Phi always applies rotary); only "
                     "'rope' models can be exported")
  if cfg.mup:
    raise ValueError("model config: mup=True scales the embedding, the residual branches "
                     "and the logits, which Hugging Face Phi has no settings for; only "
                     "mup=False models can be exported to Hugging Face (phijax "
                     "parameters, convert without --to_hf, still work)")
  hf = dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.kv_heads,
      max_position_embeddings=cfg.max_position_embeddings,
      rope_theta=cfg.rope_theta, partial_rotary_factor=cfg.partial_rotary_factor,
      attention_dropout=cfg.attention_dropout, resid_pdrop=cfg.resid_pdrop,
      embd_pdrop=cfg.embd_pdrop, tie_word_embeddings=False, torch_dtype="float32",
      initializer_range=cfg.init_std)
  if cfg.head_dim is not None:
    hf["head_dim"] = cfg.head_dim
  if cfg.arch == "phi":
    hf.update(model_type="phi", architectures=["PhiForCausalLM"], hidden_act="gelu_new",
              layer_norm_eps=cfg.layer_norm_eps, qk_layernorm=cfg.qk_layernorm)
  else:
    hf.update(model_type="phi3", architectures=["Phi3ForCausalLM"], hidden_act="silu",
              rms_norm_eps=cfg.layer_norm_eps, sliding_window=cfg.sliding_window,
              pad_token_id=None, bos_token_id=None, eos_token_id=None)
  if cfg.rope_scaling is not None:
    hf.update(_rope_scaling_to_hf(cfg))
  return hf


def _rope_scaling_to_hf(cfg: ModelConfig) -> dict:
  """``rope_scaling`` (both spellings of the type) without the unset optional fields;
  phi3's original length goes top-level, where Phi3Config reads it."""
  rs = dict(cfg.rope_scaling)
  rope_type = rs.pop("type")
  if cfg.arch == "phi3" and rope_type != "longrope":
    raise ValueError(f"model config: rope_scaling type {rope_type!r} on arch='phi3' has no "
                     "Hugging Face equivalent: transformers' Phi3ForCausalLM implements "
                     "only 'longrope' (and would read 'yarn' as LongRoPE's old name); "
                     "arch='phi' models export 'linear' and 'yarn'")
  if rope_type == "linear" and rs["original_max_position_embeddings"] == (
      scaling.linear_original_length(cfg.max_position_embeddings, rs["factor"])):
    del rs["original_max_position_embeddings"]  # the default; transformers ignores it
  out = {"rope_scaling": {"type": rope_type, "rope_type": rope_type,
                          **{k: list(v) if isinstance(v, tuple) else v
                             for k, v in rs.items() if v is not None}}}
  if cfg.arch == "phi3":
    out["original_max_position_embeddings"] = out["rope_scaling"].pop(
        "original_max_position_embeddings")
  return out

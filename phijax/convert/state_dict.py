"""Hugging Face state dicts (numpy, torch ``[out, in]`` layout) <-> phijax params.

HF fuses Phi-3's ``qkv_proj`` (``[q: H*E | k: K*E | v: K*E]``) and ``gate_up_proj``
(gate first, then up); phijax keeps them separate. Older hub layouts (``phi-msft``,
``mixformer-sequential``) are renamed to the current ``phi`` names first.
"""

from __future__ import annotations

import re

import numpy as np

from phijax.model.config import ModelConfig


class CheckpointMismatch(ValueError):
  """A checkpoint tensor is missing, unexpected, or has the wrong shape."""


def _split_rows(w, sizes):
  return np.split(w, np.cumsum(sizes)[:-1], axis=0)


def rename_old_layout(sd: dict, num_layers: int) -> dict:
  """``phi-msft`` / ``mixformer-sequential`` names -> current HF ``phi`` names."""
  out = {}
  for name, w in sd.items():
    m = re.fullmatch(r"layers\.(\d+)\.(.*)", name)
    if m:  # MixFormerSequential: layers.0 = embedding, 1..L = blocks, L+1 = head
      i, rest = int(m.group(1)), m.group(2)
      if i == 0:
        name = "transformer.embd." + rest
      elif i == num_layers + 1:
        name = "lm_head." + rest
      else:
        name = f"transformer.h.{i - 1}.{rest}"
    name = (name.replace("transformer.embd.wte.", "model.embed_tokens.")
            .replace("lm_head.ln.", "model.final_layernorm.")
            .replace("lm_head.linear.", "lm_head."))
    m = re.fullmatch(r"transformer\.h\.(\d+)\.(.*)", name)
    if m:
      i, rest = m.groups()
      prefix = f"model.layers.{i}."
      if rest.startswith("mixer.Wqkv."):
        kind = rest.rsplit(".", 1)[1]
        q, k, v = np.split(w, 3, axis=0)
        for proj, t in zip("qkv", (q, k, v)):
          out[f"{prefix}self_attn.{proj}_proj.{kind}"] = t
        continue
      rest = (rest.replace("ln.", "input_layernorm.", 1) if rest.startswith("ln.") else rest)
      rest = rest.replace("mixer.out_proj.", "self_attn.dense.")
      name = prefix + rest
    if "rotary_emb.inv_freq" in name:
      continue  # a cached buffer, recomputed from the config
    out[name] = w
  return out


def _expected_hf_shapes(cfg: ModelConfig) -> dict:
  D, H, K, E, F, V = (cfg.hidden_size, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head,
                      cfg.mlp_dim, cfg.vocab_size)
  shapes = {"model.embed_tokens.weight": (V, D), "lm_head.weight": (V, D)}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    if cfg.arch == "phi":
      shapes.update({
          p + "self_attn.q_proj.weight": (H * E, D), p + "self_attn.q_proj.bias": (H * E,),
          p + "self_attn.k_proj.weight": (K * E, D), p + "self_attn.k_proj.bias": (K * E,),
          p + "self_attn.v_proj.weight": (K * E, D), p + "self_attn.v_proj.bias": (K * E,),
          p + "self_attn.dense.weight": (D, H * E), p + "self_attn.dense.bias": (D,),
          p + "mlp.fc1.weight": (F, D), p + "mlp.fc1.bias": (F,),
          p + "mlp.fc2.weight": (D, F), p + "mlp.fc2.bias": (D,),
          p + "input_layernorm.weight": (D,), p + "input_layernorm.bias": (D,)})
      if cfg.qk_layernorm:
        for n in ("q_layernorm", "k_layernorm"):
          shapes.update({p + f"self_attn.{n}.weight": (E,), p + f"self_attn.{n}.bias": (E,)})
    else:
      shapes.update({
          p + "self_attn.qkv_proj.weight": ((H + 2 * K) * E, D),
          p + "self_attn.o_proj.weight": (D, H * E),
          p + "mlp.gate_up_proj.weight": (2 * F, D), p + "mlp.down_proj.weight": (D, F),
          p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,)})
  if cfg.arch == "phi":
    shapes.update({"model.final_layernorm.weight": (D,), "model.final_layernorm.bias": (D,),
                   "lm_head.bias": (V,)})
  else:
    shapes["model.norm.weight"] = (D,)
  return shapes


def check_hf_state_dict(cfg: ModelConfig, sd: dict) -> None:
  """Raises CheckpointMismatch naming the tensor (and config field) that does not fit."""
  expected = _expected_hf_shapes(cfg)
  missing = sorted(set(expected) - set(sd))
  if missing == ["lm_head.weight"]:
    missing = []  # tied embeddings: lm_head is copied from embed_tokens
  if missing:
    raise CheckpointMismatch(
        f"checkpoint lacks {len(missing)} tensor(s) the config needs, e.g. {missing[:3]}; "
        f"is num_layers={cfg.num_layers} / arch={cfg.arch!r} right for it?")
  extra = sorted(set(sd) - set(expected))
  if extra:
    raise CheckpointMismatch(
        f"checkpoint has {len(extra)} tensor(s) the config does not use, e.g. {extra[:3]}; "
        f"check num_layers={cfg.num_layers}, qk_layernorm={cfg.qk_layernorm}, arch={cfg.arch!r}")
  hints = {"embed_tokens": "vocab_size/hidden_size", "lm_head": "vocab_size/hidden_size",
           "q_proj": "num_heads/head_dim", "k_proj": "num_kv_heads/head_dim",
           "v_proj": "num_kv_heads/head_dim", "qkv_proj": "num_heads/num_kv_heads/head_dim",
           "fc1": "intermediate_size", "fc2": "intermediate_size",
           "gate_up": "intermediate_size", "down_proj": "intermediate_size"}
  for name, shape in expected.items():
    if name in sd and tuple(sd[name].shape) != shape:
      field = next((f for key, f in hints.items() if key in name), "hidden_size")
      raise CheckpointMismatch(
          f"tensor {name} has shape {tuple(sd[name].shape)} but the config expects "
          f"{shape}; config field {field} does not match the checkpoint")


def hf_to_params(cfg: ModelConfig, sd: dict) -> dict:
  """HF state dict (numpy arrays) -> phijax parameter pytree (float32)."""
  sd = {k: np.asarray(v, dtype=np.float32) for k, v in sd.items()
        if "rotary_emb.inv_freq" not in k}
  check_hf_state_dict(cfg, sd)
  D, H, K, E, F = cfg.hidden_size, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head, cfg.mlp_dim

  def dense(w, b, out_shape, in_shape=None):
    """torch [out, in] -> flax kernel [in..., out...] (and bias [out...])."""
    kernel = w.T
    if in_shape is not None:
      kernel = kernel.reshape(*in_shape, *out_shape)
    else:
      kernel = kernel.reshape(kernel.shape[0], *out_shape)
    d = {"kernel": kernel}
    if b is not None:
      d["bias"] = b.reshape(out_shape)
    return d

  params = {"embed": sd["model.embed_tokens.weight"],
            "lm_head": sd.get("lm_head.weight", sd["model.embed_tokens.weight"]).T}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    g = lambda n: sd.get(p + n)
    if cfg.arch == "phi":
      attn = {f"{n}_proj": dense(g(f"self_attn.{n}_proj.weight"), g(f"self_attn.{n}_proj.bias"),
                                 (H if n == "q" else K, E)) for n in "qkv"}
      attn["o_proj"] = dense(g("self_attn.dense.weight"), g("self_attn.dense.bias"), (D,),
                             in_shape=(H, E))
      if cfg.qk_layernorm:
        for n in "qk":
          attn[f"{n}_norm"] = {"scale": g(f"self_attn.{n}_layernorm.weight"),
                               "bias": g(f"self_attn.{n}_layernorm.bias")}
      mlp = {"fc1": dense(g("mlp.fc1.weight"), g("mlp.fc1.bias"), (F,)),
             "fc2": dense(g("mlp.fc2.weight"), g("mlp.fc2.bias"), (D,))}
      layer = {"input_norm": {"scale": g("input_layernorm.weight"),
                              "bias": g("input_layernorm.bias")}}
    else:
      q, k, v = _split_rows(g("self_attn.qkv_proj.weight"), [H * E, K * E, K * E])
      attn = {"q_proj": dense(q, None, (H, E)), "k_proj": dense(k, None, (K, E)),
              "v_proj": dense(v, None, (K, E)),
              "o_proj": dense(g("self_attn.o_proj.weight"), None, (D,), in_shape=(H, E))}
      gate, up = np.split(g("mlp.gate_up_proj.weight"), 2, axis=0)
      mlp = {"gate_proj": dense(gate, None, (F,)), "up_proj": dense(up, None, (F,)),
             "down_proj": dense(g("mlp.down_proj.weight"), None, (D,))}
      layer = {"input_norm": {"scale": g("input_layernorm.weight")},
               "post_attention_norm": {"scale": g("post_attention_layernorm.weight")}}
    layer.update(attn=attn, mlp=mlp)
    params[f"layers_{i}"] = layer
  if cfg.arch == "phi":
    params["final_norm"] = {"scale": sd["model.final_layernorm.weight"],
                            "bias": sd["model.final_layernorm.bias"]}
    params["lm_head_bias"] = sd["lm_head.bias"]
  else:
    params["final_norm"] = {"scale": sd["model.norm.weight"]}
  return params


def params_to_hf(cfg: ModelConfig, params) -> dict:
  """phijax params -> HF state dict of float32 numpy arrays (current layout)."""
  P = lambda x: np.asarray(x, dtype=np.float32)

  def torch_w(kernel, n_in=1):
    k = P(kernel)
    n_in_size = int(np.prod(k.shape[:n_in]))
    return np.ascontiguousarray(k.reshape(n_in_size, -1).T)

  sd = {"model.embed_tokens.weight": P(params["embed"]),
        "lm_head.weight": np.ascontiguousarray(P(params["lm_head"]).T)}
  for i in range(cfg.num_layers):
    layer = params[f"layers_{i}"]
    p = f"model.layers.{i}."
    attn, mlp = layer["attn"], layer["mlp"]
    if cfg.arch == "phi":
      for n in "qkv":
        sd[p + f"self_attn.{n}_proj.weight"] = torch_w(attn[f"{n}_proj"]["kernel"])
        sd[p + f"self_attn.{n}_proj.bias"] = P(attn[f"{n}_proj"]["bias"]).reshape(-1)
      sd[p + "self_attn.dense.weight"] = torch_w(attn["o_proj"]["kernel"], n_in=2)
      sd[p + "self_attn.dense.bias"] = P(attn["o_proj"]["bias"])
      if cfg.qk_layernorm:
        for n in "qk":
          sd[p + f"self_attn.{n}_layernorm.weight"] = P(attn[f"{n}_norm"]["scale"])
          sd[p + f"self_attn.{n}_layernorm.bias"] = P(attn[f"{n}_norm"]["bias"])
      for n in ("fc1", "fc2"):
        sd[p + f"mlp.{n}.weight"] = torch_w(mlp[n]["kernel"])
        sd[p + f"mlp.{n}.bias"] = P(mlp[n]["bias"])
      sd[p + "input_layernorm.weight"] = P(layer["input_norm"]["scale"])
      sd[p + "input_layernorm.bias"] = P(layer["input_norm"]["bias"])
    else:
      sd[p + "self_attn.qkv_proj.weight"] = np.concatenate(
          [torch_w(attn[f"{n}_proj"]["kernel"]) for n in "qkv"], axis=0)
      sd[p + "self_attn.o_proj.weight"] = torch_w(attn["o_proj"]["kernel"], n_in=2)
      sd[p + "mlp.gate_up_proj.weight"] = np.concatenate(
          [torch_w(mlp["gate_proj"]["kernel"]), torch_w(mlp["up_proj"]["kernel"])], axis=0)
      sd[p + "mlp.down_proj.weight"] = torch_w(mlp["down_proj"]["kernel"])
      sd[p + "input_layernorm.weight"] = P(layer["input_norm"]["scale"])
      sd[p + "post_attention_layernorm.weight"] = P(layer["post_attention_norm"]["scale"])
  if cfg.arch == "phi":
    sd["model.final_layernorm.weight"] = P(params["final_norm"]["scale"])
    sd["model.final_layernorm.bias"] = P(params["final_norm"]["bias"])
    sd["lm_head.bias"] = P(params["lm_head_bias"])
  else:
    sd["model.norm.weight"] = P(params["final_norm"]["scale"])
  return sd

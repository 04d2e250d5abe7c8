"""Hugging Face <-> phijax checkpoints, from and to a local directory (no hub access).

    cfg, params = phijax.convert.from_hf("path/to/phi-2")
    phijax.convert.to_hf(cfg, params, "out/dir")

A trained run (weights, tokenizer) goes out with ``phijax.convert.export.export_run``.

A directory holds ``config.json`` and ``*.safetensors`` (sharded is fine), or for
the oldest hub checkpoints ``pytorch_model*.bin`` (needs torch: ``pip install
phijax[hf]``).
"""

from __future__ import annotations

import glob
import json
import os

import jax
import numpy as np

from phijax import files
from phijax.convert.hf_config import model_config_from_hf, model_config_to_hf, OLD_LAYOUTS
from phijax.convert.state_dict import (CheckpointMismatch, hf_to_params, params_to_hf,
                                       rename_old_layout)
from phijax.model.config import ModelConfig

__all__ = ["from_hf", "to_hf", "load_hf_state_dict", "CheckpointMismatch"]


def _to_numpy(x):
  return np.asarray(x, dtype=np.float32)


def load_hf_state_dict(directory: str) -> dict:
  """All tensors of a local HF checkpoint as float32 numpy arrays."""
  weight_files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  sd = {}
  if weight_files:
    from safetensors import safe_open
    for f in weight_files:
      # "flax" framework reads bfloat16 too (numpy has no bf16 dtype).
      with files.reading(f, "a safetensors weights file"), \
          safe_open(f, framework="flax") as fh:
        for name in fh.keys():
          sd[name] = _to_numpy(fh.get_tensor(name))
    return sd
  bins = sorted(glob.glob(os.path.join(directory, "pytorch_model*.bin")))
  if bins:
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"{directory} holds pytorch_model*.bin files; reading them needs "
                        "torch: pip install 'phijax[hf]'") from e
    for f in bins:
      with files.reading(f, "a PyTorch state dict"):
        for name, t in torch.load(f, map_location="cpu", weights_only=True).items():
          sd[name] = t.float().numpy()
    return sd
  raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin files in {directory}")


def from_hf(directory: str) -> tuple[ModelConfig, dict]:
  """Reads a local HF Phi checkpoint directory: returns ``(ModelConfig, params)``."""
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: from_hf needs a local directory with "
                            "config.json and the weights (no hub downloads here)")
  hf = files.read_json_object(path, "a Hugging Face model config")
  with files.reading(path, "a Hugging Face Phi config"):  # a field of the wrong type
    cfg = model_config_from_hf(hf)
  sd = load_hf_state_dict(directory)
  if hf.get("model_type") in OLD_LAYOUTS:
    sd = rename_old_layout(sd, cfg.num_layers)
  params = hf_to_params(cfg, sd)
  return cfg, jax.tree_util.tree_map(np.asarray, params)


def to_hf(cfg: ModelConfig, params, directory: str) -> None:
  """Writes ``config.json`` + ``model.safetensors`` that transformers loads. A LoRA
  model's adapters are merged into its matrices (``W + (alpha / rank) A B``): Hugging
  Face Phi has no adapters, and the merged model computes the same function."""
  from safetensors.numpy import save_file

  from phijax.model import lora
  cfg, params = lora.merge(cfg, jax.device_get(params))
  hf = model_config_to_hf(cfg)  # first: a model HF cannot express leaves no directory
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  sd = params_to_hf(cfg, jax.device_get(params))
  save_file(sd, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})

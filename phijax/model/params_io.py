"""A phijax parameter checkpoint: ``model_config.json`` + orbax ``params/``.

Written by ``python -m phijax.convert`` and usable to warm-start a run.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from phijax import files
from phijax.model.config import ModelConfig


def save_params(directory: str, cfg: ModelConfig, params) -> None:
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "model_config.json"), "w") as f:
    json.dump(cfg.to_dict(), f, indent=2)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(directory, "params"), jax.tree_util.tree_map(np.asarray, params),
              force=True)


def load_params(directory: str) -> tuple[ModelConfig, dict]:
  directory = os.path.abspath(directory)
  cfg_path = os.path.join(directory, "model_config.json")
  if not os.path.exists(cfg_path):
    if os.path.isdir(os.path.join(directory, "checkpoints")):
      raise FileNotFoundError(
          f"{directory} is a run directory, not a phijax parameter checkpoint: read it "
          "with phijax.convert.weights.load_run_params, or export it with "
          f"python -m phijax.convert --run={directory} --out=DIR [--to_hf]")
    raise FileNotFoundError(f"{directory} is not a phijax parameter checkpoint (it has no "
                            "model_config.json; write one with python -m phijax.convert)")
  raw = files.read_json_object(cfg_path, "a phijax model config")
  with files.reading(cfg_path, "a phijax model config"):  # a field of the wrong type
    cfg = ModelConfig.from_dict(raw)
  params_dir = os.path.join(directory, "params")
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{directory} has model_config.json but no params/ directory "
                            "(the weights); write both with python -m phijax.convert")
  with files.reading(params_dir, "an orbax parameter checkpoint"), \
      ocp.StandardCheckpointer() as ckpt:
    params = ckpt.restore(params_dir)
  return cfg, params

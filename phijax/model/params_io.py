"""A phijax parameter checkpoint: ``model_config.json`` + orbax ``params/``.

Written by ``python -m phijax.convert`` and usable to warm-start a run.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

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
  with open(cfg_path) as f:
    cfg = ModelConfig.from_dict(json.load(f))
  with ocp.StandardCheckpointer() as ckpt:
    params = ckpt.restore(os.path.join(directory, "params"))
  return cfg, params

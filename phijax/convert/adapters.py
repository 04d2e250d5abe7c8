"""A LoRA run's adapters alone, beside the base they were trained over.

    python -m phijax.convert --run=runs/lima_lora --adapters_only --out=ckpt/lima_adapters

writes ``model_config.json`` (the run's model, adapters included), ``params/`` holding
only the adapter factors (``.../lora/a``, ``.../lora/b``: kilobytes to megabytes where
the whole model is gigabytes), the run's ``tokenizer.model`` and ``adapters.json``:
where the base is and a SHA-256 of its float32 parameters, as the run's warm start
recorded them (``lora_base.json`` in the run directory: the base the adapters were
trained over, even if that run went on training since).
Reading the directory (``train.init_from``, ``phijax.evaluate``/``generate``
``--params_dir``, ``phijax.convert --phijax_dir``; ``weights.read_params``) reads that
base, checks the hash, quantizes it again when the run's base was quantized (QLoRA: the
same codes, the quantization is deterministic) and puts the adapters over it: the
model the run trained, bit for bit. A base that changed or moved is a one-line error naming it.
"""

from __future__ import annotations

import json
import os
import shutil


def export(run: str, out: str, *, step: int | None = None) -> dict:
  """Writes the adapters of ``run`` (at ``step``, default newest) to ``out``."""
  from phijax import files
  from phijax.convert import weights
  from phijax.model import lora, params_io

  cfg, params, step = weights.load_run_params(run, step)
  if not cfg.lora.rank:
    raise ValueError(f"{run} is not a LoRA run (model.lora.rank is 0): it has no adapters "
                     "to export alone; drop --adapters_only")
  stamp_path = os.path.join(run, weights.LORA_BASE)
  if os.path.exists(stamp_path):  # what the warm start read, hashed then
    stamp = files.read_json_object(stamp_path, "a LoRA base record")
  else:  # a run from before the record: its init_from as it is now
    config = files.read_json_object(os.path.join(run, "config.json"), "a phijax run config")
    base = (config.get("train") or {}).get("init_from") or ""
    if not base:
      raise ValueError(f"{run} trained its adapters over a random base (no "
                       "train.init_from): the adapters mean nothing without it; export "
                       "the whole model (drop --adapters_only)")
    base = os.path.abspath(os.path.expanduser(base))
    stamp = {"base": base, "base_sha256": weights.base_hash(
        weights.read_params(base, merged=True)[1])}
  adapters = lora.adapters(params)
  params_io.save_params(out, cfg, adapters)
  tok = os.path.join(run, "tokenizer.model")
  if os.path.isfile(tok):  # --params_dir readers (evaluate, generate) load it from here
    shutil.copyfile(tok, os.path.join(out, "tokenizer.model"))
  with open(os.path.join(out, weights.ADAPTERS_MANIFEST), "w") as f:
    json.dump({**stamp, "run": os.path.abspath(run), "step": step}, f, indent=2)
  return {"run": run, "out": out, "step": step, "arch": cfg.arch,
          "num_params": lora.count(adapters), "base": stamp["base"]}

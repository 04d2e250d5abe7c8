"""Take a trained model out of a run directory.

    summary = export_run("runs/tiny", "hf/tiny", to_hf=True)       # newest checkpoint
    summary = export_run("runs/tiny", "ckpt/tiny", step=200)       # phijax parameters

Only the parameters are read (not the optimizer state). The run's sentencepiece
``tokenizer.model`` is copied along; a Hugging Face export also gets a fast tokenizer
(``tokenizer.json``, see ``phijax.convert.hf_tokenizer``) when the ``tokenizers``
package is installed (``pip install 'phijax[hf]'``), and ``config.json`` names the
tokenizer's eos and pad ids.
"""

from __future__ import annotations

import json
import os
import shutil

from phijax.convert import weights
from phijax.model import lora, params_io, quant

TOKENIZER_FILE = "tokenizer.model"


def export_run(run: str, out: str, *, step: int | None = None, to_hf: bool = False) -> dict:
  """Writes the parameters at ``step`` (default: newest) of ``run`` to ``out``.

  ``to_hf``: a Hugging Face directory (``config.json``, ``model.safetensors``, the
  tokenizer; a LoRA run's adapters merged into the base, ``convert.to_hf``); else a
  phijax parameter directory (``params_io.save_params``; adapters kept apart).
  Returns ``{"run", "out", "step", "arch", "num_params", "files", "notes"}``.
  """
  from phijax import convert

  if os.path.realpath(out) == os.path.realpath(run):
    raise ValueError(f"{out} is the run directory itself; export to another one "
                     "(it would overwrite the run's config.json)")
  cfg, params, step = weights.load_run_params(run, step)
  notes = []
  if to_hf and cfg.lora.rank:  # Hugging Face Phi has no adapters: W + (alpha / rank) A B
    notes.append(f"LoRA adapters (rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g}) merged "
                 "into their matrices")
    cfg, params = lora.merge(cfg, params)
  num_params = quant.parameter_count(params)
  tok = None
  tok_path = os.path.join(run, TOKENIZER_FILE)
  if os.path.isfile(tok_path):
    from phijax.data.tokenizer import Tokenizer
    tok = Tokenizer.load(tok_path)
    if tok.vocab_size > cfg.vocab_size:
      raise ValueError(f"{tok_path} has {tok.vocab_size} pieces but the model's "
                       f"vocab_size is {cfg.vocab_size}: not this run's tokenizer")
  else:
    notes.append(f"{tok_path} does not exist: no tokenizer written")

  if to_hf:
    convert.to_hf(cfg, params, out)
    if tok is not None:
      _set_token_ids(os.path.join(out, "config.json"), tok)
  else:
    params_io.save_params(out, cfg, params)
  if tok is not None:
    shutil.copyfile(tok_path, os.path.join(out, TOKENIZER_FILE))
    if to_hf:
      try:
        from phijax.convert import hf_tokenizer
        hf_tokenizer.write_hf_tokenizer(tok, out,
                                        model_max_length=cfg.max_position_embeddings)
      except ImportError as e:
        notes.append(f"no tokenizer.json: {e.name or 'tokenizers'} is not installed "
                     "(pip install 'phijax[hf]'); tokenizer.model is the sentencepiece "
                     "model")
      except ValueError as e:  # a tokenizer phijax did not train (unigram, normalised)
        notes.append(f"no tokenizer.json: {e}; tokenizer.model is the sentencepiece model")
  files = sorted(os.listdir(out))
  return {"run": run, "out": out, "step": step, "arch": cfg.arch,
          "num_params": num_params, "files": files, "notes": notes}


def _set_token_ids(config_path: str, tok) -> None:
  """Generation in transformers reads eos / pad from config.json; phi's defaults
  (bos 1, eos 2) are not ours."""
  with open(config_path) as f:
    hf = json.load(f)
  hf.update(bos_token_id=None, eos_token_id=int(tok.eos_id), pad_token_id=int(tok.pad_id))
  with open(config_path, "w") as f:
    json.dump(hf, f, indent=2)

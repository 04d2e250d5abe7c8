"""Training: the loop and what it calls.

    python -m phijax.train --config=configs/tiny.py --workdir=runs/tiny
    from phijax.train import train;  summary = train(config, workdir)

Modules: ``loop`` (``train()``: sets a run up, then steps and calls its pieces),
``step`` (the jitted train step), ``objectives`` (LM, DPO, Rho-1 token selection),
``losses``, ``optim``, ``curriculum`` (sequence length, learning rate, data stages),
``perplexity`` (the held-out evaluation step), ``checkpoint``, ``metrics`` (MFU,
progress, metrics.jsonl, TensorBoard, the run's plot), ``wandb_log``, ``probes``,
``distributed`` (joining JAX's multi-controller runtime). Imports model and data,
never evals or sweeps.
"""

import importlib

# Imported on first use (PEP 562): ``from phijax.train import curriculum`` does not
# load the whole loop, and ``python -m phijax.train`` imports it once.
_EXPORTS = {
    "train": "loop", "run": "loop", "NonFiniteError": "loop", "ConfigError": "loop",
    "check_config": "loop", "apply_epochs": "loop", "enable_compilation_cache": "loop",
}
_SUBMODULES = ("checkpoint", "curriculum", "distributed", "loop", "losses", "metrics",
               "objectives", "optim", "perplexity", "probes", "step", "wandb_log")
__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return __all__

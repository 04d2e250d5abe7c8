"""Training: the loop and what it calls.

    python -m phijax.train --config=configs/tiny.py --workdir=runs/tiny
    from phijax.train import train;  summary = train(config, workdir)

Modules: ``command`` (the command line: flags and config checked before JAX is
imported), ``loop`` (``train()``: sets a run up, then steps and calls its pieces at
named moments), ``pieces`` (the run's capabilities, one job each: evaluation,
checkpoints and best checkpoints, step logs and progress, probes, the stop flag and
non-finite steps, samples, the plot; ``train(..., pieces=[...])`` adds more),
``setup`` (config checks, the run directory, the state restored or made),
``step`` (the jitted train step), ``objectives`` (LM, DPO, Rho-1 token selection),
``losses``, ``optim``, ``curriculum`` (sequence length, learning rate, data stages),
``perplexity`` (the held-out evaluation step), ``checkpoint``, ``metrics`` (MFU,
progress, metrics.jsonl, TensorBoard, the run's plot), ``wandb_log``, ``probes``,
``distributed`` (joining JAX's multi-controller runtime). Imports model, data and
convert (warm starts and reference models read parameters there), never evals or
sweeps.
"""

from phijax import lazy_exports

# Imported on first use (PEP 562): ``from phijax.train import curriculum`` does not
# load the whole loop, and ``python -m phijax.train`` imports it once.
_EXPORTS = {
    "train": "loop", "run": "command", "NonFiniteError": "loop", "ConfigError": "loop",
    "check_config": "setup", "apply_epochs": "setup", "enable_compilation_cache": "setup",
}
_SUBMODULES = ("checkpoint", "command", "curriculum", "distributed", "loop", "losses",
               "metrics", "objectives", "optim", "perplexity", "pieces", "probes", "setup",
               "step", "wandb_log")
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)

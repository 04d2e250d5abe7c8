"""phijax: Phi-style small language models in JAX/Flax.

The package follows the flow of a run; each layer imports only the ones above it in
this list (tests/test_layers.py checks every import):

    kernels/   Pallas flash attention (GPU Triton, TPU Mosaic) and the blocked XLA path
    model/     ModelConfig, the transformer, rope, the attention door, the fused head,
               the mesh and logical-axis rules, KV-cache decoding, parameter files
    data/      tokenizer, sources, the grain pipeline with packing, mixtures
    convert/   Hugging Face <-> phijax; reading parameters from any directory
    train/     the loop and the pieces it calls, the step, objectives, optimizers,
               curriculum, checkpoints, metrics, multi-host start
    evals/     generate and evaluate commands, tasks, the code sandbox
    sweeps/    the sweep runner; results tables and figures

``cli.py``, ``files.py`` and ``config_files.py`` are the command conventions every
layer uses (``files.py``: a corrupt file a user hands us is one error naming it);
``config.py`` is the config tree configs/*.py start from; ``plan.py``, ``mup_check.py``
and ``curriculum_plot.py`` are tools; ``sweep.py``, ``results.py``, ``generate.py``
and ``evaluate.py`` only keep the names of ``python -m phijax.<command>``.

Submodules are imported lazily by the user (``phijax.model``, ``phijax.convert``, ...)
so that ``import phijax`` stays cheap.
"""

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict, submodules: tuple):
  """``(__getattr__, __dir__, __all__)`` for a package whose names are imported on
  first use (PEP 562): ``exports`` maps a name to the submodule that defines it;
  ``submodules`` are importable as attributes. ``import phijax.x`` then stays cheap,
  and ``python -m phijax.x.y`` does not import ``y`` twice (runpy warns when the
  package already did)."""
  import importlib
  names = sorted(exports) + list(submodules)

  def __getattr__(name):
    if name in exports:
      return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
    if name in submodules:
      return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")

  def __dir__():
    return names

  return __getattr__, __dir__, names

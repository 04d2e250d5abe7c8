"""Where parameters come from: a run directory's checkpoint, a phijax parameter
directory (``python -m phijax.convert``), or a Hugging Face directory.

    cfg, params, step = load_run_params("runs/tiny")          # newest checkpoint
    cfg, params = read_params(path)                          # any of the three
    params = load_init_params(path, abstract_params)         # checked against a model

Only parameters are read (never optimizer state), as host numpy arrays. The run
directory's format is written by ``phijax.train.checkpoint.Checkpointer``.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def run_steps(run: str) -> list[int]:
  """Steps with a complete checkpoint in the run directory ``run`` (oldest first).

  Raises ``FileNotFoundError`` / ``NotADirectoryError`` when ``run`` is not a run
  directory (one with ``checkpoints/``).
  """
  run = os.path.abspath(os.path.expanduser(run))
  if not os.path.exists(run):
    raise FileNotFoundError(f"run directory {run} does not exist")
  if not os.path.isdir(run):
    raise NotADirectoryError(f"{run} is a file, not a run directory")
  ckpt_dir = os.path.join(run, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{run} is not a phijax run directory (it has no "
                            "checkpoints/; python -m phijax.train --workdir=... writes one)")
  with _read_manager(ckpt_dir) as mngr:
    return sorted(mngr.all_steps())


class _read_manager:
  """A CheckpointManager that reads ``state`` and ``meta`` of a run and creates nothing."""

  def __init__(self, ckpt_dir: str):
    self.manager = ocp.CheckpointManager(
        ckpt_dir, options=ocp.CheckpointManagerOptions(create=False),
        item_names=("state", "meta"),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def __enter__(self):
    return self.manager

  def __exit__(self, *exc):
    self.manager.close()


def load_run_params(run: str, step: int | None = None):
  """``(model_config, params, step)`` from the run directory ``run``.

  Reads only the parameters of the checkpoint at ``step`` (default: the newest), as
  host numpy arrays; the optimizer state stays on disk. The model config comes from
  the checkpoint's meta, or for checkpoints without it from ``run/config.json``.
  A missing step is a ``ValueError`` listing the steps there.
  """
  import numpy as np

  from phijax import files
  from phijax.model.config import ModelConfig

  run = os.path.abspath(os.path.expanduser(run))
  steps = run_steps(run)
  if not steps:
    raise FileNotFoundError(f"run {run} has no checkpoints yet (checkpoints/ is empty; "
                            "runs save every train.save_every steps and at the end)")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ValueError(f"run {run} has no checkpoint at step {step}; steps there: "
                     f"{', '.join(map(str, steps))}")
  files.drop_late_callbacks()  # a failed restore's abandoned reads, finishing late
  with _read_manager(os.path.join(run, "checkpoints")) as mngr:
    try:
      tree = mngr.item_metadata(step)["state"]
      tree = getattr(tree, "tree", tree)  # orbax >= 0.11.x wraps the tree
      params_meta = {"params": tree["params"]}
      numpy_args = jax.tree_util.tree_map(
          lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
      try:
        state_args = ocp.args.PyTreeRestore(item=params_meta, restore_args=numpy_args,
                                            partial_restore=True)
      except TypeError:  # an orbax without partial restore: read the whole state
        state_args = ocp.args.PyTreeRestore()
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=state_args, meta=ocp.args.JsonRestore()))
    except Exception as e:  # a checkpoint that is incomplete or not phijax's
      first_line = (str(e).strip().splitlines() or [""])[0][:200]
      raise ValueError(f"the checkpoint at step {step} of {run} could not be read "
                       f"({type(e).__name__}: {first_line}); steps there: "
                       f"{', '.join(map(str, steps))}") from e
  params = jax.tree_util.tree_map(np.asarray, restored["state"]["params"])
  model = (restored["meta"] or {}).get("model")
  config_path = None
  if model is None:
    config_path = os.path.join(run, "config.json")
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"the checkpoint at step {step} of {run} names no model "
                              f"config and {config_path} does not exist")
    model = files.read_json_object(config_path, "a phijax run config").get("model")
    if model is None:
      raise ValueError(f"{config_path} has no model section")
  where = config_path or os.path.join(run, "checkpoints", str(step))  # meta's dir
  with files.reading(where, "a phijax model config"):
    return ModelConfig.from_dict(model), params, int(step)


def load_init_params(path: str, abstract_params):
  """Parameters to warm-start from, without optimizer state.

  ``path`` may be a phijax run directory (its newest checkpoint), a parameter
  checkpoint written by ``python -m phijax.convert``, or a Hugging Face directory.
  Shapes must match the run's model; a mismatch names the parameter. A LoRA source
  is read as the model it computes (adapters merged into its base); a LoRA run's own
  adapters, which the source does not have, come back as zeros (``fit_params``).
  """
  return fit_params(read_params(path, merged=True)[1], abstract_params, path)


def read_params(path: str, what: str = "init_from", merged: bool = False):
  """``(model_config, params)`` from any of the directories ``load_init_params``
  reads, as stored (host arrays, no shape check); ``what`` names the setting in
  errors (``train.reference`` for a reference model). ``merged``: LoRA adapters folded
  into their base matrices, the config without them (``phijax.model.lora.merge``)."""
  if merged:
    from phijax.model import lora
    return lora.merge(*read_params(path, what))
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, "checkpoints")):
    if not run_steps(path):
      raise FileNotFoundError(f"{what}: {path} has no checkpoints")
    model_cfg, params, _ = load_run_params(path)
    return model_cfg, params
  if is_adapters_dir(path):  # LoRA adapters alone (phijax.convert.adapters): over their base
    return read_adapters(path, what)
  if os.path.exists(os.path.join(path, "model_config.json")):
    from phijax.model import params_io
    return params_io.load_params(path)
  if os.path.exists(os.path.join(path, "config.json")):
    from phijax import convert
    return convert.from_hf(path)
  raise FileNotFoundError(f"{what}: {path} is not a phijax run directory, a phijax "
                          "parameter checkpoint or a Hugging Face directory")


def fit_params(params, abstract_params, path: str, what: str = "init_from"):
  """``params`` (read from ``path``) as float32 arrays in ``abstract_params``' tree;
  a missing parameter or another shape is an error naming it. LoRA adapter factors
  the source lacks (a base model loaded into a LoRA model) are zeros: with ``B = 0``
  the model computes the source's function exactly."""
  import numpy as np

  leaves = [np.zeros(spec.shape, np.float32) if v is None else np.asarray(v, np.float32)
            for v, spec in zip(check_shapes(params, abstract_params, path, what,
                                            adapters_may_miss=True),
                               jax.tree_util.tree_leaves(abstract_params))]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_params), leaves)


def check_shapes(params, abstract_params, path: str, what: str = "init_from",
                 adapters_may_miss: bool = False) -> list:
  """The leaves of ``params`` in ``abstract_params``' order, each checked to exist and
  to have its shape; else a ``ValueError`` naming the parameter and ``path``.
  ``adapters_may_miss``: a LoRA adapter factor ``params`` lacks is None in the list."""
  from phijax.model import lora

  path = os.path.abspath(os.path.expanduser(path))
  want = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  leaves = []
  for key, spec in want:
    name = jax.tree_util.keystr(key)
    if name not in flat and adapters_may_miss and lora.is_adapter(lora.path_names(key)):
      leaves.append(None)
      continue
    if name not in flat:
      raise ValueError(f"{what}: {path} has no parameter {name}; is it the same "
                       "architecture?")
    if tuple(flat[name].shape) != tuple(spec.shape):
      raise ValueError(f"{what}: parameter {name} has shape {tuple(flat[name].shape)} in "
                       f"{path} but the model needs {tuple(spec.shape)}")
    leaves.append(flat[name])
  return leaves


# LoRA adapters exported alone (phijax.convert.adapters) and read back over their base.
ADAPTERS_MANIFEST = "adapters.json"
LORA_BASE = "lora_base.json"  # in a LoRA run's directory: the base its warm start read


def base_hash(params) -> str:
  """SHA-256 over a float32 base's leaves (tree order, names and bytes)."""
  from phijax.model import sharding
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    h.update("/".join(sharding.path_names(path)).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return h.hexdigest()


def is_adapters_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, ADAPTERS_MANIFEST))


def read_adapters(path: str, what: str = "init_from"):
  """``(model_config, params)``: the adapters of ``path`` over the base it names."""
  from phijax import files
  from phijax.model import init_params, lora, params_io, quant

  manifest = files.read_json_object(os.path.join(path, ADAPTERS_MANIFEST), "an adapters manifest")
  cfg, adapters = params_io.load_params(path)
  base = manifest.get("base", "")
  if not os.path.exists(base):
    raise FileNotFoundError(f"{what}: {path} holds LoRA adapters over the base {base}, "
                            "which does not exist here; put the base back there (or edit "
                            f"{ADAPTERS_MANIFEST}'s \"base\")")
  _, float_base = read_params(base, what, merged=True)
  if base_hash(float_base) != manifest.get("base_sha256"):
    raise ValueError(f"{what}: the base {base} is not the one {path}'s adapters were "
                     "trained over (its parameters' SHA-256 differs); the adapters only "
                     "compute the trained model over that exact base")
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  full = fit_params(float_base, quant.float_like(abstract), base, what)
  if quant.quantized_nodes(abstract):  # on the host CPU, as the run's warm start did
    with jax.default_device(jax.devices("cpu")[0]):
      full = jax.device_get(quant.quantize_like(full, abstract))
  return cfg, jax.device_get(lora.with_adapters_from(full, _overlay(abstract, adapters)))


def _overlay(abstract, adapters):
  """``abstract``'s tree with the adapters where it has them (zeros elsewhere: unused)."""
  from phijax.model import lora, sharding
  flat = {jax.tree_util.keystr(k): v
          for k, v in jax.tree_util.tree_flatten_with_path(adapters)[0]}

  def take(p, x):
    if not lora.is_adapter(sharding.path_names(p)):
      return np.zeros(x.shape, x.dtype)
    if jax.tree_util.keystr(p) not in flat:
      raise ValueError(f"the adapters directory lacks {'/'.join(sharding.path_names(p))}, "
                       "which its model_config.json's LoRA targets: export it again")
    return np.asarray(flat[jax.tree_util.keystr(p)])
  return jax.tree_util.tree_map_with_path(take, abstract)

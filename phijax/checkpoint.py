"""Run checkpoints with orbax's CheckpointManager.

A checkpoint holds two items: ``state`` (params, optimizer state, step, rng; restored
onto the target shardings of the current mesh) and ``meta`` (JSON: training position
``tokens`` and curriculum ``stage``, the data iterator's state, the resolved model
config). Saves are asynchronous; the newest that cannot be read is reported and the
one before it used.

``load_run_params(run, step=None)`` reads just the parameters (and the model config)
of a run's checkpoint, for exports and warm starts.
"""

from __future__ import annotations

import base64
import logging
import os

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("phijax")


def encode_iterator_state(state):
  """grain iterator states are dicts or bytes; JSON needs text."""
  if isinstance(state, bytes):
    return {"bytes_b64": base64.b64encode(state).decode("ascii")}
  return {"value": state}


def decode_iterator_state(blob):
  if blob is None:
    return None
  if "bytes_b64" in blob:
    return base64.b64decode(blob["bytes_b64"])
  return blob["value"]


class Checkpointer:
  """Save / restore ``(state, meta)`` under ``directory`` keeping the last ``keep``."""

  def __init__(self, directory: str, keep: int = 2, async_save: bool = True,
               best_metric: str | None = None):
    """``best_metric``: keep the ``keep`` checkpoints with the lowest value of this
    metric (passed to ``save(metrics=...)``) instead of the newest ones."""
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
        best_mode="min")
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, meta: dict, force: bool = False,
           metrics: dict | None = None) -> bool:
    return self.manager.save(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)),
        force=force, metrics=metrics)

  def restore_latest(self, abstract_state):
    """Newest readable checkpoint as ``(step, state, meta)``, or None if there is none.

    ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with the target
    shardings, so a checkpoint saved on one mesh restores onto another.
    """
    steps = self.all_steps()
    errors = []
    for step in reversed(steps):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        if errors:
          log.warning("resuming from step %d: newer checkpoint(s) could not be read: %s",
                      step, "; ".join(errors))
        return step, restored["state"], restored["meta"]
      except Exception as e:  # an unreadable / incomplete checkpoint: try the previous one
        errors.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        log.error("checkpoint at step %d is unreadable (%s); trying the one before",
                  step, errors[-1])
    if steps:
      raise RuntimeError(
          f"none of the checkpoints in {self.directory} (steps {steps}) could be read: "
          f"{'; '.join(errors)}. Refusing to restart from step 0 over them; move the "
          "directory away to start fresh.")
    return None

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs carrying the target shardings, for restore."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


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
  import json

  import numpy as np

  from phijax.model_config import ModelConfig

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
  if model is None:
    config_path = os.path.join(run, "config.json")
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"the checkpoint at step {step} of {run} names no model "
                              f"config and {config_path} does not exist")
    with open(config_path) as f:
      model = json.load(f).get("model")
    if model is None:
      raise ValueError(f"{config_path} has no model section")
  return ModelConfig.from_dict(model), params, int(step)


def load_init_params(path: str, abstract_params):
  """Parameters to warm-start from, without optimizer state.

  ``path`` may be a phijax run directory (its newest checkpoint), a parameter
  checkpoint written by ``python -m phijax.convert``, or a Hugging Face directory.
  Shapes must match the run's model; a mismatch names the parameter.
  """
  _, params = read_params(path)
  return fit_params(params, abstract_params, path)


def read_params(path: str, what: str = "init_from"):
  """``(model_config, params)`` from any of the directories ``load_init_params``
  reads, as stored (host arrays, no shape check); ``what`` names the setting in
  errors (``train.reference`` for a reference model)."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, "checkpoints")):
    if not run_steps(path):
      raise FileNotFoundError(f"{what}: {path} has no checkpoints")
    model_cfg, params, _ = load_run_params(path)
    return model_cfg, params
  if os.path.exists(os.path.join(path, "model_config.json")):
    from phijax import params_io
    return params_io.load_params(path)
  if os.path.exists(os.path.join(path, "config.json")):
    from phijax import convert
    return convert.from_hf(path)
  raise FileNotFoundError(f"{what}: {path} is not a phijax run directory, a phijax "
                          "parameter checkpoint or a Hugging Face directory")


def fit_params(params, abstract_params, path: str, what: str = "init_from"):
  """``params`` (read from ``path``) as float32 arrays in ``abstract_params``' tree;
  a missing parameter or another shape is an error naming it."""
  import numpy as np

  path = os.path.abspath(os.path.expanduser(path))
  want = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  leaves = []
  for key, spec in want:
    name = jax.tree_util.keystr(key)
    if name not in flat:
      raise ValueError(f"{what}: {path} has no parameter {name}; is it the same "
                       "architecture?")
    value = np.asarray(flat[name], dtype=np.float32)
    if value.shape != spec.shape:
      raise ValueError(f"{what}: parameter {name} has shape {value.shape} in {path} "
                       f"but the model needs {spec.shape}")
    leaves.append(value)
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_params), leaves)

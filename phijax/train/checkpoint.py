"""Run checkpoints with orbax's CheckpointManager.

A checkpoint holds two items: ``state`` (params, optimizer state, step, rng; restored
onto the target shardings of the current mesh) and ``meta`` (JSON: training position
``tokens`` and curriculum ``stage``, the data iterator's state, the resolved model
config). Saves are asynchronous; the newest that cannot be read is reported and the
one before it used.

Reading only the parameters of a run (exports, warm starts, evaluation) is
``phijax.convert.weights``.
"""

from __future__ import annotations

import base64
import logging
import os

import jax
import orbax.checkpoint as ocp

from phijax import files

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
    files.drop_late_callbacks()  # a failed restore's abandoned reads, finishing late
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

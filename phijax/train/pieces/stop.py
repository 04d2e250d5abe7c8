"""Ending a run early: on a signal (``StopFlag``, the ``Stop`` piece: a checkpoint,
then a resumable exit) or after ``train.max_nonfinite`` non-finite steps in a row
(the ``NonFinite`` piece: ``NonFiniteError``)."""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np

from phijax.train.pieces.base import Piece

log = logging.getLogger("phijax")


class NonFiniteError(RuntimeError):
  """``train.max_nonfinite`` steps in a row had a non-finite loss or gradient."""


class StopFlag:
  """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary.

  With several processes every one must stop at the same step. SIGTERM (a
  preemption notice, often sent to one host only) is then left to JAX's own
  notifier, which ``multihost_utils.reached_preemption_sync_point`` reads: a Python
  handler here would replace it. SIGINT sets a local flag that the processes agree
  on with an all-gather each step.
  """

  def __init__(self):
    self.signal = None
    self._old = {}
    self.multihost = jax.process_count() > 1

  def __enter__(self):
    sigs = (signal.SIGINT,) if self.multihost else (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def requested(self, step: int) -> bool:
    flag = self.signal is not None
    if self.multihost:  # every host must stop at the same step: both calls on all
      from jax.experimental import multihost_utils
      preempted = multihost_utils.reached_preemption_sync_point(step)
      flag = bool(multihost_utils.process_allgather(np.int32(flag)).max())
      if preempted and self.signal is None:
        self.signal = "SIGTERM (preemption notice)"
      elif flag and self.signal is None:
        self.signal = "SIGINT (on another process)"
      flag = flag or preempted
    return flag


class Stop(Piece):
  """Holds a ``StopFlag`` over the steps and asks it at every step boundary, after
  that step's evaluation and checkpoint (with several processes the question is a
  collective: every process asks at every step). A stopped run, whatever stopped it,
  says where its checkpoint is and returns ``{"finished": False, ...}``."""

  def __init__(self):
    self.flag = StopFlag()

  def __enter__(self):
    self.flag.__enter__()
    return self

  def __exit__(self, *exc):
    return self.flag.__exit__(*exc)

  def between_steps(self, run):
    if self.flag.requested(run.step):
      run.stop(self.flag.signal or "signal")

  def on_end(self, run):
    if run.outcome != "stopped":
      return
    msg = (f"{run.stop_reason}: checkpoint written at step {run.step} in "
           f"{run.ckpt.directory}; rerun the same command to resume")
    run.progress.write(msg)
    if jax.process_index() > 0:  # progress writes on process 0 only
      log.info("process %d: %s", jax.process_index(), msg)
    run.result = {"finished": False, "step": run.step, "message": msg}


class NonFinite(Piece):
  """Fails the run when ``train.max_nonfinite`` steps in a row had a non-finite loss
  or gradient (the step skips each such update, so the checkpoints hold good states):
  that step is logged, nothing more is saved, and the loop raises ``NonFiniteError``
  naming the last good checkpoint."""

  REASON = "nonfinite"

  def __init__(self):
    self.prev_streak = None

  def after_step(self, run):
    # The previous step's streak: reading it does not wait for the step just queued.
    if self.prev_streak is not None and int(self.prev_streak) >= run.train.max_nonfinite:
      run.stop(self.REASON, failed=True)
    self.prev_streak = run.metrics["nonfinite_streak"]

  def on_end(self, run):
    """After ``Checkpoints.on_end``: the checkpoints are complete and closed."""
    if run.outcome != "failed" or run.stop_reason != self.REASON:
      return
    good = run.ckpt.all_steps()
    run.error = NonFiniteError(
        f"stopping: {run.train.max_nonfinite} steps in a row had a non-finite loss or "
        f"gradient (last at step {run.step}); last good checkpoint: "
        f"{'step %d in %s' % (good[-1], run.ckpt.directory) if good else 'none'}; lower "
        "the learning rate or check the data, then rerun to resume from it")

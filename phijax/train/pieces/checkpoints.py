"""Checkpoints during a run: every ``train.save_every`` steps and every
``train.save_every_minutes``, a last one when the steps end; with
``train.keep_best`` also the best ``keep_best`` by ``train.best_metric`` of the
periodic evaluations, in ``WORKDIR/best``."""

from __future__ import annotations

import os
import time

from phijax.train import checkpoint
from phijax.train.pieces.base import Piece


class Checkpoints(Piece):
  """The run's resumable checkpoints (``run.ckpt``, ``WORKDIR/checkpoints``). A step
  is saved once: the last save is skipped when a periodic one already holds it. A
  failed run saves nothing more (its state is the one that failed)."""

  def __init__(self, run):
    self.saved_step = run.restored_step
    self.last_save_time = None

  def on_start(self, run):
    self.last_save_time = time.time()

  def between_steps(self, run):
    t = run.train
    minutes = (t.save_every_minutes and
               time.time() - self.last_save_time > 60 * t.save_every_minutes)
    if (t.save_every and run.step % t.save_every == 0) or minutes:
      self.save(run)
      self.last_save_time = time.time()

  def save(self, run, force=False):
    if run.step != self.saved_step:
      run.ckpt.save(run.step, run.state, run.meta(), force=force)
      self.saved_step = run.step

  def on_end(self, run):
    if run.outcome != "failed":
      self.save(run, force=True)
    run.ckpt.close()


class BestCheckpoints(Piece):
  """``train.keep_best`` checkpoints with the lowest ``train.best_metric``, one
  candidate per periodic evaluation. The starting model's evaluation (step 0) is no
  candidate: it measures what the run was given, not what it trained."""

  def __init__(self, run):
    t = run.train
    self.best = checkpoint.Checkpointer(os.path.join(run.workdir, "best"), keep=t.keep_best,
                                        best_metric=t.best_metric)

  def on_eval(self, run, ev):
    if run.step > 0:
      self.best.save(run.step, run.state, run.meta(), force=True, metrics=ev)

  def on_end(self, run):
    self.best.close()

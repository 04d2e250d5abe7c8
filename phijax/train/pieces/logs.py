"""What a run writes as it trains: a metrics row per logged step with the progress
line (or bar), the probes' rows, and the finished run's ``loss.png``. Rows go to
``run.writer`` (``metrics.Writer``: ``metrics.jsonl``, TensorBoard, W&B)."""

from __future__ import annotations

import time

import jax

from phijax.train import metrics, probes
from phijax.train.pieces.base import Piece


class StepLog(Piece):
  """Every ``train.log_every`` steps, and a step after which an earlier piece (the
  non-finite check) stopped the run: the training metrics row (loss, the plan's
  scalars, tokens/s and MFU over the window since the last one, the objective's own
  metrics) and a progress update. The bar ends with the steps; later lines are
  plain."""

  def on_start(self, run):
    run.clock.reset()
    run.progress.start(run.step)  # the ETA's clock starts after compilation

  def after_step(self, run):
    if run.step % run.train.log_every and not run.stop_reason:
      return
    m = jax.device_get(run.metrics)
    tps = run.clock.tokens_per_sec()
    cols, peak = run.seq_len, run.peak_flops
    row = {"tokens": run.tokens, "loss": float(m["loss"]), **run.plan.scalars(),
           "seq_len": cols, "grad_norm": float(m["grad_norm"]), "tokens_per_sec": tps,
           "mfu": (tps * metrics.flops_per_token(run.model_cfg, cols) / peak) if peak else 0.0,
           "skipped_steps": int(jax.device_get(run.state.skipped)),
           **{k: float(m[k]) for k in run.objective.log_keys}}
    run.writer.write(run.step, row)
    run.progress.update(run.step, {"loss": row["loss"], "lr": run.plan.lr, "len": cols,
                                   "tok/s": int(tps), "mfu": row["mfu"] if peak else None})
    run.clock.reset()

  def on_end(self, run):
    run.progress.close()  # from here on, one line per phase with the time it took


class Probes(Piece):
  """The measurements of ``phijax.train.probes`` the config asks for (none by
  default), each due one a metrics row before its step's, its time kept out of
  tokens/s."""

  def __init__(self):
    self.probes = []

  def on_start(self, run):
    self.probes = probes.make(run.config, run.fns)

  def after_step(self, run):
    for probe in self.probes:
      if probe.due(run.step):
        start = time.perf_counter()
        # "tokens": those trained before this step's batch.
        run.writer.write(run.step, {"tokens": run.tokens - run.batch_tokens,
                                    **probe.measure(run.state, run.batch, run.plan.lr)})
        run.clock.exclude(time.perf_counter() - start)


class Plot(Piece):
  """A finished run's ``loss.png`` from its complete ``metrics.jsonl`` (process 0)."""

  def after_end(self, run):
    if run.outcome == "finished" and jax.process_index() == 0:
      with run.progress.phase() as phase:
        metrics.plot_run(run.workdir)
        phase.done("plot -> loss.png")

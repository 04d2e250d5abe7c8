"""Held-out evaluation: the starting model's (``train.eval_at_start``), every
``train.eval_every`` steps, and the finished run's final one over the whole held-out
split (or ``train.final_eval_batches`` of it) beside the objective's baseline on the
same batches."""

from __future__ import annotations

from phijax.train.pieces.base import Piece


class Evaluation(Piece):
  """The evaluations during a run. Each writes a metrics row, then tells every piece
  (``on_eval``). The periodic ones read ``train.eval_batches`` held-out batches, built
  once on first use."""

  def __init__(self):
    self._batches = None

  def batches(self, run):
    if self._batches is None:
      self._batches = run.objective.eval_batches(run.train.eval_batches or None)
    return self._batches

  def on_start(self, run):
    # The starting model's evaluation (step 0) measures what the run was given, not
    # what it trained: it starts the eval curve but is no best checkpoint. A run that
    # restarts before its first checkpoint is at step 0 again and logs it again.
    t = run.train
    at_start = t.eval_at_start if t.eval_at_start is not None else bool(t.init_from)
    if at_start and run.step == 0:
      self.evaluate(run)

  def between_steps(self, run):
    every = run.train.eval_every
    if every and run.step % every == 0 and not run.plan.done:  # the last: final eval's
      self.evaluate(run)
      run.clock.restart()  # not in tokens/s

  def evaluate(self, run) -> dict:
    with run.progress.phase() as phase:
      ev = run.objective.evaluate(run.state.params, self.batches(run))
      phase.done(f"step {run.step}: eval loss {ev['eval_loss']:.4f}, "
                 f"{run.objective.describe(ev)}")
    run.writer.write(run.step, {"tokens": run.tokens, **ev})
    run.call("on_eval", ev)
    return ev


class FinalEval(Piece):
  """A finished run's last evaluation and the objective's baseline on the same bytes,
  written as the ``final`` metrics row; ``run.result`` becomes the run's summary."""

  def __init__(self, periodic: Evaluation):
    self.periodic = periodic
    self.ev = self.baseline = None

  def on_end(self, run):
    if run.outcome != "finished":
      return
    t, objective = run.train, run.objective
    with run.progress.phase() as phase:
      if (t.final_eval_batches or None) == (t.eval_batches or None):
        batches = self.periodic.batches(run)  # the periodic evals' rows: built once
      else:
        batches = objective.eval_batches(t.final_eval_batches or None)
      run.progress.write(f"final eval over the whole held-out split ({len(batches)} "
                         "batches)..." if not t.final_eval_batches else
                         f"final eval over {len(batches)} held-out batches...")
      self.ev = objective.evaluate(run.state.params, batches)
      phase.done(f"final eval: {objective.describe(self.ev)}")
    with run.progress.phase() as phase:
      self.baseline, line = objective.baseline(batches)
      phase.done(line)
    # "final": over the whole held-out split, or train.final_eval_batches of it
    # ("eval_whole" says which; periodic evals use train.eval_batches).
    run.writer.write(run.step, {"tokens": run.tokens, **self.ev, **self.baseline,
                                "final": True, "eval_whole": not t.final_eval_batches,
                                "opt_state_bytes_per_param": run.opt_bytes})
    run.result = {"finished": True, "step": run.step, "tokens": run.tokens, **self.ev,
                  **self.baseline}


class Done(Piece):
  """A finished run's last line: where it ended and its held-out score."""

  def __init__(self, final: FinalEval):
    self.final = final

  def after_end(self, run):
    if run.outcome == "finished":
      summary = run.objective.summary(self.final.ev, self.final.baseline)
      print(f"done: step {run.step}, {run.tokens:,} tokens; {summary}", flush=True)
    read = getattr(run.objective, "rows_read", None)
    if run.objective.rows is not None and read is not None:  # a multi-process run
      import jax
      print(f"data: process {jax.process_index()} of {jax.process_count()} read {read:,} "
            f"training rows, {len(run.objective.rows)} of every {run.train.batch_size}-row "
            "global batch", flush=True)

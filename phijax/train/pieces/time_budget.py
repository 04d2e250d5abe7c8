"""``train.time_budget_s``: a run planned to end, decayed, when its wall-clock budget does.

The run starts on the plan its config gives (``train.steps`` or ``train.tokens``: the
provisional plan). When its LR warmup ends (``curriculum.lr.warmup_steps``, at least
``SKIPPED + MEASURED`` steps) it fixes the number of steps that fit what is left of the
budget, counted from the call of ``train()`` (tokenizer training and compilation
included) to the final evaluation's result (samples.txt and loss.png come after it):

- a step's time: the wall time of the steps after the first ``SKIPPED`` (compilation,
  warm caches), synchronised only at the window's ends so that steps overlap as they
  do in the rest of the run, evaluations left out; per token, along the curriculum's
  trajectory (so sequence-length warmup's short early steps count as short);
- an evaluation's: one held-out batch timed at the decision, times the batches of each
  remaining periodic evaluation and of the final one;
- a checkpoint's: ``CKPT_S`` per save still to come (``save_every``,
  ``save_every_minutes``, the last one), and ``END_S`` for the bookkeeping before the
  final evaluation.

The steps that fit are counted on the trajectory of the plan they make (a sequence-length
warmup in a fraction of the run ends sooner in a shorter plan). A step's cost is taken
as proportional to its tokens, so with sequence-length warmup the short rows timed
before the decision (a step also has a per-step cost, the optimizer's above all) make
the plan cautious: such a run ends early rather than late.

The curriculum is then rebuilt for that many steps: the LR schedule decays to its end
at the last step; stages and fractions follow. The plan is written to
``time_budget.json`` in the run directory, and a resumed run reads it and keeps it: the
budget decides once, and a resume finishes the steps the first start planned (however
long it was stopped). The decision comes when warmup ends, so every step before it had
the LR the final plan gives it too, and a resume is exact.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax

from phijax.train.pieces.base import Piece

FILE = "time_budget.json"
SKIPPED, MEASURED = 2, 8
CKPT_S = 0.1  # host time of one asynchronous save of a small model (measured 0.05-0.3 s)
END_S = 0.25  # between the last step and the final evaluation: the last save, the logs


def decision_step() -> int:
  return SKIPPED + MEASURED


def check(config) -> None:
  """A bad combination is an error naming the field before the run starts."""
  from phijax.train.curriculum import CurriculumError
  t, lr = config.train, config.curriculum.lr
  if not t.time_budget_s:
    return
  if t.time_budget_s < 0:
    raise CurriculumError(f"train.time_budget_s={t.time_budget_s} must be >= 0 (0: off)")
  if int(lr.warmup_steps) < decision_step():
    raise CurriculumError(
        f"train.time_budget_s fixes the plan when the LR warmup ends, after timing "
        f"{MEASURED} steps; curriculum.lr.warmup_steps={lr.warmup_steps} must be at least "
        f"{decision_step()} (in steps, not a fraction of a plan not made yet)")


def planned_config(config, workdir: str):
  """``config`` with the budget's decided steps (``time_budget.json``), for a resumed
  run; ``config`` itself when there is no decision yet."""
  saved = read(workdir)
  if not config.train.time_budget_s or saved is None:
    return config
  return with_steps(config, saved["steps"])


def with_steps(config, steps: int):
  c = copy.deepcopy(config)
  c.train.steps, c.train.tokens = int(steps), 0
  return c


def read(workdir: str) -> dict | None:
  try:
    with open(os.path.join(workdir, FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _last_fitting(fits, start: int) -> int:
  """The largest n >= start with ``fits(n)`` (``fits`` true up to some n, then false)."""
  lo, hi = start, start + 1
  while fits(hi):
    lo, hi = hi, start + 2 * (hi - start)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def fitting_steps(config, step: int, per_token: float, room: float) -> int:
  """The most steps whose plan's tokens after ``step`` take at most ``room`` seconds at
  ``per_token``. Each candidate plan's own trajectory: a sequence-length warmup in a
  fraction of the run stretches with it, so the provisional plan's trajectory (short
  rows far past the real warmup's end) would overstate what fits (measured: 315 steps
  planned for 150 s took 261 s)."""
  from phijax.train.curriculum import Curriculum, CurriculumError

  def fits(n):
    try:
      traj = Curriculum(with_steps(config, n)).trajectory
    except CurriculumError:  # too short for its stages or warmup: treated as not fitting
      return False
    return (traj.tokens_at(n) - traj.tokens_at(step)) * per_token <= room

  return _last_fitting(fits, step)


class TimeBudget(Piece):
  """Fixes the run's steps from its measured costs (see the module docstring)."""

  def __init__(self, run):
    self.started = run.started  # time.time() when train() was called
    self.decided = read(run.workdir) is not None
    self.window_start = None  # perf_counter after the skipped steps, synchronised
    self.timed = 0  # steps since then
    self.excluded = 0.0  # evaluations' time inside the window
    self.evaluated = False

  def on_start(self, run) -> None:
    self.first_step = run.step

  def on_eval(self, run, ev) -> None:
    self.evaluated = True

  def after_step(self, run) -> None:
    if self.decided:
      return
    done = run.step - self.first_step
    every = run.train.eval_every
    # Synchronise where a step's compute must not spill into what is measured next
    # (the window's start, an evaluation's time) or must be counted (the decision);
    # elsewhere steps run ahead as usual, so the window sees their real throughput.
    if done == SKIPPED or (every and run.step % every == 0):
      jax.block_until_ready(run.metrics)
    now = time.perf_counter()
    if done == SKIPPED:
      self.window_start = now
    elif done > SKIPPED:
      self.timed += 1
    self.after = now
    if (self.timed >= MEASURED
        and run.step >= int(run.config.curriculum.lr.warmup_steps)):
      jax.block_until_ready(run.metrics)
      self._decide(run, (time.perf_counter() - self.window_start - self.excluded)
                    / self.timed)

  def between_steps(self, run) -> None:
    if self.evaluated and self.window_start is not None:
      self.excluded += time.perf_counter() - self.after  # not a step's time
    self.evaluated = False

  def _batches(self, run, n: int):
    evaluation = next((p for p in run.pieces if hasattr(p, "batches")), None)
    if evaluation is not None and (n or None) == (run.train.eval_batches or None):
      return evaluation.batches(run)  # built once, the periodic evaluations' own
    return run.objective.eval_batches(n or None)

  def _eval_batch_s(self, run, batches) -> float:
    """One held-out batch's evaluation time (its compilation first, untimed: the run's
    evaluations would compile it anyway)."""
    one = batches[:1]
    run.objective.evaluate(run.state.params, one)
    start = time.perf_counter()
    run.objective.evaluate(run.state.params, one)
    return time.perf_counter() - start

  def _decide(self, run, step_s: float) -> None:
    from phijax.train.curriculum import Curriculum
    t = run.train
    per_token = step_s / max(run.batch_tokens, 1)
    final = self._batches(run, t.final_eval_batches)
    batch_s = self._eval_batch_s(run, final)
    final_s = batch_s * len(final)
    periodic_s = batch_s * len(self._batches(run, t.eval_batches)) if t.eval_every else 0.0
    elapsed = time.time() - self.started
    steps = run.step
    for _ in range(3):  # evaluations and saves depend on the steps, the steps on them
      evals = (steps // t.eval_every - run.step // t.eval_every) if t.eval_every else 0
      saves = 1 + ((steps // t.save_every - run.step // t.save_every) if t.save_every else 0)
      if t.save_every_minutes:
        saves += int((t.time_budget_s - elapsed) / (60 * t.save_every_minutes))
      room = (t.time_budget_s - elapsed - END_S - final_s - evals * periodic_s
              - saves * CKPT_S)
      steps = fitting_steps(run.config, run.step, per_token, room)
    steps = max(steps, run.step + 1)
    plan = dict(steps=steps, budget_s=t.time_budget_s, decided_at_step=run.step,
                step_s=round(step_s, 4), elapsed_s=round(elapsed, 2),
                eval_batch_s=round(batch_s, 4), final_eval_s=round(final_s, 2),
                provisional_steps=run.cur.total_steps)
    tmp = os.path.join(run.workdir, FILE + ".tmp")
    with open(tmp, "w") as f:
      json.dump(plan, f, indent=1)
    os.replace(tmp, os.path.join(run.workdir, FILE))
    run.cur = Curriculum(with_steps(run.config, steps))
    run.progress.set_total(steps)
    run.progress.write(
        f"time budget {t.time_budget_s:g} s: {step_s * 1000:.0f} ms a step, "
        f"{plan['elapsed_s']:.0f} s spent, final evaluation ~{final_s:.0f} s: planned "
        f"{steps} steps (was {plan['provisional_steps']}), the LR schedule rebuilt for them")
    self.decided = True

"""``train.time_budget_s``: a run ends, LR decayed, within its wall-clock budget, and a
resumed run keeps the plan its first start fixed (bit for bit).

Oracles: the wall clock around ``train()``; ``Curriculum`` built for the planned steps
(the schedule's own end value); an uninterrupted run handed the same plan."""

import json
import os
import time

import pytest

from phijax import config_files
from phijax.train import curriculum, loop
from phijax.train.pieces import time_budget

BUDGET = 12.0  # seconds: start-up (~4-7 s with compiled steps cached), then steps


def _config(*extra):
  return config_files.load("tiny:runlocal", [
      "--config.curriculum.lr.warmup_steps=12", "--config.train.samples=0",
      "--config.train.log_every=1", "--config.train.eval_every=0",
      "--config.train.final_eval_batches=4", *extra])


def _rows(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


class _StopAt:
  def __init__(self, step):
    self.step = step

  def after_step(self, run):
    if run.step == self.step:
      run.stop("test")


def test_a_resumed_run_keeps_its_plan(tmp_path):
  """Stopped right at the decision, the plan file edited to 14 steps (what any budget
  could have decided), resumed with a budget that would allow thousands: it ends at 14,
  every resumed step on the LR schedule of that plan. (That a resume is otherwise bit
  for bit is tests/test_resume.py's; the steps before the decision had the warmup's LR,
  which the plan does not change.)"""
  config = _config("--config.train.time_budget_s=1000")
  cut = str(tmp_path / "cut")
  loop.train(config, cut, pieces=[_StopAt(time_budget.decision_step() + 2)])
  plan = time_budget.read(cut)
  assert plan["decided_at_step"] == time_budget.decision_step() + 2 == 12
  assert plan["steps"] > 100  # 1000 s: far more than 14
  plan["steps"] = 14
  with open(os.path.join(cut, time_budget.FILE), "w") as f:
    json.dump(plan, f)
  loop.train(config, cut)
  rows = [r for r in _rows(cut) if "lr" in r]
  cur = curriculum.Curriculum(time_budget.with_steps(config, 14))
  assert max(r["step"] for r in rows) == 14
  for r in rows:
    assert r["lr"] == pytest.approx(cur.at(r["step"] - 1, r["tokens"]).lr, rel=1e-6), r


def test_the_run_ends_decayed_within_its_budget(tmp_path):
  """After the resume test above (its steps compiled and cached: start-up is shorter)."""
  config = _config(f"--config.train.time_budget_s={BUDGET}")
  workdir = str(tmp_path / "run")
  start = time.time()
  loop.train(config, workdir)
  plan = time_budget.read(workdir)
  rows = _rows(workdir)
  final = [r for r in rows if r.get("final")][0]
  took = os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) - start  # the final row
  print(f"budget {BUDGET} s: final evaluation written after {took:.1f} s; plan {plan}")
  assert plan["decided_at_step"] == 12 and plan["steps"] != plan["provisional_steps"]
  assert final["step"] == plan["steps"]
  # Noisy shared CI cores: the run's own precision is measured in the closing note.
  assert abs(took - BUDGET) <= 0.25 * BUDGET, (took, plan)
  # The LR decayed to the schedule's end at the last step of the new plan.
  cur = curriculum.Curriculum(time_budget.with_steps(config, plan["steps"]))
  last = [r for r in rows if "lr" in r][-1]
  assert last["step"] == plan["steps"]
  assert last["lr"] == pytest.approx(cur.at(plan["steps"] - 1, 0).lr, rel=1e-6)
  assert plan["steps"] >= 20  # a decay to see (the LR is the peak's at step 12)
  assert last["lr"] == pytest.approx(config.optim.lr * config.curriculum.lr.min_ratio,
                                     rel=0.02)


def test_a_warmup_shorter_than_the_measurement_is_an_error():
  config = _config("--config.train.time_budget_s=60", "--config.curriculum.lr.warmup_steps=4")
  with pytest.raises(curriculum.CurriculumError, match="warmup_steps=4 must be at least 10"):
    time_budget.check(config)


def test_a_fractional_sequence_warmup_is_planned_on_the_plan_it_makes():
  """Sequence-length warmup over 30% of the run stretches with the plan: the steps
  that fit are counted on each candidate plan's own trajectory. The provisional plan's
  (short rows until step 600 of 2000) would fit 2.7x the steps here (315: what an arm
  of experiments/cpu_speedrun.py planned, then took 261 s of its 150)."""
  config = config_files.load(os.path.join(  # that arm's own config
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
      "cpu_speedrun.py:seqwarmup"), ["--config.train.time_budget_s=150"])
  step, per_token, room = 40, 0.19 / 512, 118.0  # that arm's measurements at its decision
  n = time_budget.fitting_steps(config, step, per_token, room)

  def cost(steps):
    traj = curriculum.Curriculum(time_budget.with_steps(config, steps)).trajectory
    return (traj.tokens_at(steps) - traj.tokens_at(step)) * per_token

  assert cost(n) <= room < cost(n + 1)
  provisional = curriculum.Curriculum(config).trajectory
  overstated = time_budget._last_fitting(
      lambda m: (provisional.tokens_at(m) - provisional.tokens_at(step)) * per_token <= room,
      step)
  assert overstated > 2.5 * n, (overstated, n)

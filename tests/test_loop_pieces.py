"""The loop's pieces: a piece added through ``train(..., pieces=[...])``, without
touching the loop, is called at every moment with the run's step, can write metrics
rows, and can stop the run (which then checkpoints and resumes as after a signal)."""

import json
import os

import pytest

from phijax import train
from phijax.train import pieces


def _config(steps=6):
  from phijax.configs import tiny
  c = tiny.get_config("runlocal")
  c.train.update(steps=steps, log_every=2, eval_every=4, save_every=3, eval_at_start=True,
                 samples=0, eval_batches=1, final_eval_batches=1, progress=False)
  return c


class Counter(pieces.Piece):
  """Records each moment with the step it saw; every third step a ``toy_steps`` row;
  at the very end ``counter.json`` in the run directory."""

  def __init__(self):
    self.calls = []

  def on_start(self, run):
    self.calls.append(("on_start", run.step))

  def after_step(self, run):
    self.calls.append(("after_step", run.step))
    if run.step % 3 == 0:
      run.writer.write(run.step, {"toy_steps": len(self._steps("after_step"))})

  def between_steps(self, run):
    self.calls.append(("between_steps", run.step, run.plan.done))

  def on_eval(self, run, ev):
    self.calls.append(("on_eval", run.step, round(ev["eval_loss"], 6)))

  def on_end(self, run):
    self.calls.append(("on_end", run.step, run.outcome))

  def after_end(self, run):
    self.calls.append(("after_end", run.step))
    with open(os.path.join(run.workdir, "counter.json"), "w") as f:
      json.dump(self.calls, f)

  def _steps(self, moment):
    return [c[1] for c in self.calls if c[0] == moment]


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


def test_an_added_piece_is_called_at_each_moment_with_the_step(tmp_path):
  counter = Counter()
  out = train.train(_config(), str(tmp_path), pieces=[counter])
  assert out["finished"] is True and out["step"] == 6
  steps = list(range(1, 7))
  assert counter._steps("on_start") == [0]
  assert counter._steps("after_step") == steps
  assert [c[1:] for c in counter.calls if c[0] == "between_steps"] == [
      (s, s == 6) for s in steps]  # the plan after the last step is done
  rows = _rows(tmp_path)
  evals = [r for r in rows if "eval_loss" in r and not r.get("final")]
  assert [r["step"] for r in evals] == [0, 4]  # at start, then eval_every
  assert [c[1:] for c in counter.calls if c[0] == "on_eval"] == [
      (r["step"], round(r["eval_loss"], 6)) for r in evals]
  # The run's evaluation is a piece before this one: at step 4 it evaluates (and every
  # piece hears of it) before this piece's own between_steps.
  assert counter.calls.index(("on_eval", 4, round(evals[1]["eval_loss"], 6))) == (
      counter.calls.index(("between_steps", 4, False)) - 1)
  assert counter.calls[-2:] == [("on_end", 6, "finished"), ("after_end", 6)]
  assert json.load(open(tmp_path / "counter.json")) == [list(c) for c in counter.calls]
  # The piece's rows sit among the run's, after the step's own row at a logged step.
  toy = [(i, r) for i, r in enumerate(rows) if "toy_steps" in r]
  assert [(r["step"], r["toy_steps"]) for _, r in toy] == [(3, 3), (6, 6)]
  i6 = [i for i, r in enumerate(rows) if r["step"] == 6 and "loss" in r][0]
  assert toy[-1][0] == i6 + 1
  assert rows[-1].get("final") is True
  # The run's own pieces did their jobs beside it.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]


class StopAt(pieces.Piece):
  def __init__(self, step):
    self.step = step

  def between_steps(self, run):
    if run.step == self.step:
      run.stop("toy stop")


def test_a_piece_can_stop_the_run_and_it_resumes(tmp_path):
  counter = Counter()
  out = train.train(_config(), str(tmp_path), pieces=[StopAt(2), counter])
  assert out["finished"] is False and out["step"] == 2
  assert out["message"].startswith("toy stop: checkpoint written at step 2")
  assert counter._steps("after_step") == [1, 2]
  assert counter.calls[-2:] == [("on_end", 2, "stopped"), ("after_end", 2)]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  again = Counter()
  out = train.train(_config(), str(tmp_path), pieces=[again])
  assert out["finished"] is True and out["step"] == 6
  assert again._steps("on_start") == [2] and again._steps("after_step") == [3, 4, 5, 6]
  # The start's evaluation is not repeated on resume.
  assert [r["step"] for r in _rows(tmp_path) if "eval_loss" in r and not r.get("final")
          ] == [0, 4]


class FailAt(pieces.Piece):
  def between_steps(self, run):
    if run.step == 2:
      run.stop("toy failure", failed=True)


def test_a_piece_that_fails_the_run_raises_and_writes_no_final_checkpoint(tmp_path):
  with pytest.raises(RuntimeError, match="the run failed at step 2: toy failure"):
    train.train(_config(), str(tmp_path), pieces=[FailAt()])
  assert not os.listdir(tmp_path / "checkpoints")  # save_every=3: none before step 2
  assert not any(r.get("final") for r in _rows(tmp_path))

"""Curriculum stages in a real run: the data iterator switches at the stage boundary,
and a run stopped exactly at the boundary resumes into the new stage as an
uninterrupted run does (same losses, bit for bit)."""

import json
import os

from phijax import train
from phijax.train import curriculum
from phijax.train.pieces import stop
from phijax.data import config as data_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  from phijax.configs import tiny
  c = tiny.get_config("runlocal")
  c.train.update(steps=8, log_every=1, eval_every=0, save_every=0, samples=0,
                 final_eval_batches=1, progress=False)
  # A second source (the same stdlib split) so the anneal stage has its own mixture.
  c.data.sources.hq = data_config.source("stdlib", weight=0.0)
  c.curriculum.stages.pretrain = curriculum.stage(4, "steps", "stdlib:1")
  c.curriculum.stages.anneal = curriculum.stage(0, "steps", "stdlib:1,hq:1", lr_scale=0.5)
  c.curriculum.stage_order = "pretrain,anneal"
  return c


def _rows(workdir):
  return {r["step"]: r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
          if "loss" in r}


def test_stage_switch_and_resume_at_the_boundary(tmp_path, monkeypatch):
  train.train(_config(), str(tmp_path / "full"))
  full = _rows(tmp_path / "full")
  assert [full[s]["stage"] for s in sorted(full)] == [0, 0, 0, 0, 1, 1, 1, 1]
  assert full[5]["mix/hq"] == 0.5 and full[4]["mix/hq"] == 0.0

  calls = {"n": 0}

  def stop_after_step_4(self, step):
    calls["n"] += 1
    return calls["n"] == 4

  monkeypatch.setattr(stop.StopFlag, "requested", stop_after_step_4)
  cut = tmp_path / "cut"
  out = train.train(_config(), str(cut))
  assert out["finished"] is False and out["step"] == 4
  monkeypatch.undo()
  train.train(_config(), str(cut))
  resumed = _rows(cut)
  for step, row in full.items():
    for key in ("loss", "lr", "stage", "grad_norm"):
      assert resumed[step][key] == row[key], (step, key)

"""Runs that never lose work: kill -9 and rerun equals an uninterrupted run bit for
bit; SIGTERM checkpoints and exits; a corrupt newest checkpoint is skipped; a config
that does not fit the run directory is refused; non-finite steps are skipped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=configs/tiny.py:runlocal", "--config.train.steps=10",
        "--config.train.log_every=1", "--config.train.eval_every=0",
        "--config.train.save_every=2", "--config.train.keep_last=3",
        "--config.train.samples=0", "--config.train.final_eval_batches=2",
        "--config.train.progress=false", "--config.model.resid_pdrop=0.1"]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "phijax.train", f"--workdir={workdir}", *ARGS, *extra]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


def _run(workdir, *extra):
  proc = subprocess.run(_cmd(workdir, *extra), capture_output=True, text=True, cwd=ROOT,
                        env=_env(), timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _losses(workdir):
  """step -> (loss, grad_norm); a rerun's rows replace the killed run's."""
  out = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    if "loss" in row:
      out[row["step"]] = (row["loss"], row["grad_norm"])
  return out


def _start_and_wait(workdir, until_checkpoint, *extra):
  # Output to a file: a pipe nobody reads can fill up and stall the child.
  log = open(workdir.parent / f"{workdir.name}.log", "w+")
  proc = subprocess.Popen(_cmd(workdir, *extra), stdout=log, stderr=subprocess.STDOUT,
                          text=True, cwd=ROOT, env=_env())
  proc.log = log
  deadline = time.time() + 300
  target = workdir / "checkpoints" / str(until_checkpoint)
  while not target.exists():
    assert proc.poll() is None, open(log.name).read()[-3000:]
    assert time.time() < deadline, "training did not reach the checkpoint in time"
    time.sleep(0.05)
  return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """The uninterrupted 10-step run: checkpoints 6, 8 and 10 (keep_last=3). Tests that
  need a run directory with checkpoints start from a copy of it."""
  workdir = tmp_path_factory.mktemp("full")
  _run(workdir)
  return workdir


@pytest.fixture(scope="module")
def uninterrupted(full_run):
  return _losses(full_run)


def _copy_of(run_dir, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(run_dir, work)
  return work


def test_kill9_and_rerun_is_bit_identical(tmp_path, uninterrupted):
  proc = _start_and_wait(tmp_path, 4)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = max(_losses(tmp_path))
  assert killed_at < 10  # it really was interrupted
  rerun = _run(tmp_path)
  assert "resumed from step" in rerun.stderr
  got = _losses(tmp_path)
  assert sorted(got) == sorted(uninterrupted) == list(range(1, 11))
  for step in uninterrupted:
    assert got[step] == uninterrupted[step], (step, got[step], uninterrupted[step])


def test_sigterm_checkpoints_and_rerun_continues(tmp_path, uninterrupted):
  # Also: an evaluation before the first step (train.eval_at_start) changes no step's
  # loss, is logged once (not again on resume) and is kept as no best checkpoint.
  start = ["--config.train.eval_at_start=true", "--config.train.keep_best=1"]
  proc = _start_and_wait(tmp_path, 2, *start)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=300)
  text = open(proc.log.name).read()
  assert proc.returncode == 0, text[-3000:]
  assert "SIGTERM: checkpoint written at step" in text
  stopped = int(text.split("checkpoint written at step ")[1].split()[0])
  assert (tmp_path / "checkpoints" / str(stopped)).exists()
  rerun = _run(tmp_path, *start)
  assert f"resumed from step {stopped}" in rerun.stderr
  got = _losses(tmp_path)
  for step in uninterrupted:
    assert got[step] == uninterrupted[step]
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "eval_loss" in r and not r.get("final")] == [0]
  assert not (tmp_path / "best" / "0").exists()


def test_corrupt_newest_checkpoint_is_reported_and_skipped(tmp_path, full_run):
  work = _copy_of(full_run, tmp_path)
  assert sorted(os.listdir(work / "checkpoints")) == ["10", "6", "8"]
  for root, _, files in os.walk(work / "checkpoints" / "10" / "state"):
    for f in files:
      if not f.startswith("_"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"not a checkpoint")
  rerun = _run(work, "--config.train.steps=12")
  assert "checkpoint at step 10 is unreadable" in rerun.stderr
  assert "resumed from step 8" in rerun.stderr
  assert max(_losses(work)) == 12


def test_different_model_in_run_dir_is_refused(tmp_path, full_run):
  work = _copy_of(full_run, tmp_path)
  proc = subprocess.run(_cmd(work, "--config.train.steps=12", "--config.model.num_layers=3"),
                        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
  assert proc.returncode != 0
  assert "different model config" in proc.stderr and "num_layers" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
  from phijax import train
  from phijax.train import curriculum
  from phijax.configs import tiny
  config = tiny.get_config("runlocal")
  config.train.update(steps=12, log_every=1, eval_every=0, save_every=2, samples=0,
                      final_eval_batches=1, progress=False, max_nonfinite=3)
  calls = {"n": 0}
  real = curriculum.shorten_batch
  # 1-based: one isolated bad batch, then a run of them. Checkpoints during the run
  # hold the unchanged (good) state, so the last one (step 8) is the one to resume.
  bad_steps = {3, 6, 7, 8, 9, 10}

  def poisoned(batch, seq_len, mode="truncate"):
    calls["n"] += 1
    out = real(batch, seq_len, mode)
    if calls["n"] in bad_steps:
      out["loss_mask"] = np.full_like(out["loss_mask"], np.nan)
    return out

  monkeypatch.setattr(curriculum, "shorten_batch", poisoned)
  with pytest.raises(RuntimeError, match="3 steps in a row.*last good checkpoint: step 8"):
    train.train(config, str(tmp_path))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  by_step = {r["step"]: r for r in rows if "loss" in r}
  # Step 3's update was skipped: counted, and the state did not advance.
  assert by_step[3]["skipped_steps"] == 1
  assert not np.isfinite(float(by_step[3]["loss"]))
  assert np.isfinite(by_step[4]["loss"]) and by_step[5]["skipped_steps"] == 1


def test_a_run_started_before_new_model_fields_still_resumes(tmp_path):
  from phijax import train
  from phijax.configs import tiny
  from phijax.train import setup
  config = tiny.get_config("runlocal")
  (tmp_path / "checkpoints").mkdir()
  setup.write_config(config, str(tmp_path))
  old = json.loads((tmp_path / "config.json").read_text())
  del old["model"]["position_encoding"], old["model"]["random_position_offset"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  setup.write_config(config, str(tmp_path))  # the new fields' defaults: same model
  config.model.hidden_size *= 2
  with pytest.raises(train.ConfigError, match=r"different model config \(fields "
                                              r"\['hidden_size'\]\)"):
    setup.write_config(config, str(tmp_path))


def test_a_run_from_before_data_shuffle_resumes_with_its_row_order():
  """Its saved iterator state belongs to the documents pipeline it started with."""
  from phijax import config_files
  from phijax.train import setup
  c = config_files.load("tiny:runlocal")
  setup.keep_row_order(c, {"data": {"seq_len": 64}})  # an old run's config.json
  assert c.data.shuffle == "documents"
  c = config_files.load("tiny:runlocal")
  setup.keep_row_order(c, {"data": {"shuffle": "global"}})
  assert c.data.shuffle == "global"

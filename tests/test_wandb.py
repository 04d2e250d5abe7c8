"""Weights & Biases logging, in W&B's offline mode (no account, no network): a run with
``train.wandb.project`` set logs its config and exactly its metrics.jsonl rows; a
resumed run continues the same W&B run; a sweep names the group and the arms; asking
for W&B without wandb installed is a one-line error before anything is built."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest

from phijax import config_files
from phijax.sweeps import arms
from phijax.train import wandb_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=configs/tiny.py:runlocal", "--config.train.log_every=1",
        "--config.train.eval_every=2", "--config.train.eval_batches=1",
        "--config.train.final_eval_batches=1", "--config.train.save_every=0",
        "--config.train.samples=0", "--config.train.progress=false",
        "--config.curriculum.lr.warmup_steps=1",
        "--config.train.wandb.project=phijax-test", "--config.train.wandb.tags=a,b"]


def _env(tmp):
  """Offline and quiet, every W&B file (settings, cache) inside the test's tmp dir."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="offline", WANDB_SILENT="true")
  for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
              "WANDB_ARTIFACT_DIR"):
    env[var] = str(tmp)
  env.pop("WANDB_API_KEY", None)
  return env


def _train(workdir, env, *extra):
  proc = subprocess.run([sys.executable, "-m", "phijax.train", f"--workdir={workdir}",
                         *ARGS, *extra], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def read_records(path):
  """The protobuf records of an offline run's ``run-ID.wandb`` file: a LevelDB-style log
  (a 7-byte ``:W&B`` header, then 32 KiB blocks of records: crc32, length, kind),
  read here because wandb no longer ships a Python reader for it."""
  from wandb.proto import wandb_internal_pb2
  data = open(path, "rb").read()
  assert data[:4] == b":W&B", path
  block, pos, pending, out = 32768, 7, b"", []
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a header is padding
      pos += block - pos % block
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
    if kind == 0:
      break
    pending += data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE.../LAST
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      out.append(record)
      pending = b""
  return out


def offline_run(run_dir):
  """(run record, {step: {metric: value}}) of one offline run directory."""
  (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
  run, history = None, {}
  for r in read_records(path):
    kind = r.WhichOneof("record_type")
    if kind == "run":
      run = r.run
    elif kind == "history":
      row = history.setdefault(r.history.step.num, {})
      for item in r.history.item:
        key = item.key or "/".join(item.nested_key)
        if not key.startswith("_"):  # W&B's own _step, _runtime, _timestamp
          row[key] = json.loads(item.value_json)
  return run, history


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
  """3 steps, then the same command with a larger budget: it resumes at step 4."""
  tmp = tmp_path_factory.mktemp("wandb")
  workdir, env = tmp / "run", _env(tmp)
  _train(workdir, env, "--config.train.steps=3")
  first_id = (workdir / "wandb_id").read_text().strip()
  _train(workdir, env, "--config.train.steps=6")
  return workdir, first_id


def test_offline_run_logs_the_config_and_every_metrics_row(resumed_run):
  workdir, run_id = resumed_run
  runs = sorted(glob.glob(str(workdir / "wandb" / "offline-run-*")))
  assert len(runs) == 2, runs  # one per invocation
  expected = {}  # rows of one step merge into one W&B row
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    expected.setdefault(row.pop("step"), {}).update(row)
  logged = {}
  for run_dir in runs:
    run, history = offline_run(run_dir)
    assert run.run_id == run_id and run.project == "phijax-test"
    assert run.display_name == "run" and list(run.tags) == ["a", "b"]
    logged.update(history)
  assert sorted(logged) == sorted(expected) == [1, 2, 3, 4, 5, 6]
  for step, row in expected.items():
    assert logged[step] == pytest.approx(row, rel=1e-12), step
  assert logged[6]["final"] is True and "eval_bpb" in logged[4] and "loss" in logged[4]
  # The resumed run's config is the config.json it wrote (steps=6).
  config = json.loads((workdir / "config.json").read_text())
  run, _ = offline_run(runs[-1])
  got = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
  assert got == config and got["train"]["steps"] == 6


def test_resumed_run_keeps_the_wandb_run_id(resumed_run):
  workdir, first_id = resumed_run
  runs = sorted(glob.glob(str(workdir / "wandb" / "offline-run-*")))
  assert [os.path.basename(r).rsplit("-", 1)[1] for r in runs] == [first_id, first_id]
  assert wandb_log.run_id(str(workdir)) == first_id


def test_enabled_without_wandb_is_one_line_and_builds_nothing(tmp_path):
  """wandb made unimportable in the child: exit 2, one line naming the extra."""
  workdir = tmp_path / "run"
  code = ("import sys; sys.modules['wandb'] = None; from phijax import train; "
          f"train.run({[f'--workdir={workdir}', *ARGS]!r})")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=ROOT, env=_env(tmp_path), timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert lines[0].endswith("error: train.wandb.project is set but wandb is not installed: "
                           "pip install 'phijax[wandb]'"), lines
  assert not (workdir / "config.json").exists() and not (workdir / "wandb").exists()


EXPERIMENT = textwrap.dedent('''
    from phijax import config as base
    from phijax.configs import tiny

    def get_config(arg=None):
      return base.finish(tiny.get_config("runlocal"), arg)

    def get_sweep(h):
      return h.sweep("optim.lr", [1e-3, 1e-2])
''')


def test_sweep_arms_get_the_sweep_as_group_and_their_name(tmp_path, monkeypatch):
  path = tmp_path / "lrs.py"
  path.write_text(EXPERIMENT)
  module = arms.load_experiment(str(path))
  workdir = str(tmp_path / "small")
  off = arms.make_arms(str(path), module, workdir)
  assert not any("wandb" in f for a in off for f in a.flags)  # off: commands unchanged
  on = arms.make_arms(str(path), module, workdir, ["--config.train.wandb.project=p"])
  for arm in on:
    config = config_files.load(str(path), arm.flags)
    assert config.train.wandb.project == "p"
    assert config.train.wandb.group == "lrs-small" and config.train.wandb.name == arm.name
  assert arms.wandb_group(str(path), str(tmp_path / "lrs")) == "lrs"
  own = arms.make_arms(str(path), module, workdir, ["--config.train.wandb.project=p",
                                                    "--config.train.wandb.group=mine"])
  assert config_files.load(str(path), own[0].flags).train.wandb.group == "mine"
  monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: refused up front
  with pytest.raises(ValueError, match=r"pip install 'phijax\[wandb\]'"):
    arms.make_arms(str(path), module, workdir, ["--config.train.wandb.project=p"])


def test_off_by_default_and_bad_mode():
  config = config_files.load("configs/tiny.py:runlocal")
  assert config.train.wandb.project == "" and wandb_log.sinks(config, "unused") == []
  config = config_files.load("configs/tiny.py:runlocal", [
      "--config.train.wandb.project=p", "--config.train.wandb.mode=ofline"])
  with pytest.raises(ValueError, match="train.wandb.mode='ofline' is not a W&B mode"):
    wandb_log.check(config.train.wandb)

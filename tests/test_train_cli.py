"""The CLI end to end: a few steps in a temp dir, the run directory's contents, resume
of a finished run, and one clear error per kind of bad input."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config=configs/tiny.py:runlocal", "--config.train.steps=6",
         "--config.train.log_every=2", "--config.train.eval_every=4",
         "--config.train.save_every=3", "--config.train.samples=2",
         "--config.train.sample_tokens=8", "--config.train.progress=false",
         # Two held-out batches for the final eval: the whole-split default (~200
         # batches of stdlib) is test_own_corpus's, checked there token for token.
         "--config.train.final_eval_batches=2"]


def train_cli(workdir, *args, devices=1):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(devices))
  return subprocess.run([sys.executable, "-m", "phijax.train", f"--workdir={workdir}", *args],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  proc = train_cli(workdir, *SMOKE)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


def test_run_directory_contents(run_dir):
  workdir, proc = run_dir
  for name in ("config.json", "metrics.jsonl", "samples.txt", "tokenizer.model"):
    assert (workdir / name).exists(), name
  assert glob.glob(str(workdir / "tb" / "events.out.tfevents.*"))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["steps"] == 6 and config["model"]["num_layers"] == 2
  assert "=== prompt: 'def '" in (workdir / "samples.txt").read_text()
  assert "bits/byte (gzip -9:" in proc.stdout


def test_metrics_fields(run_dir):
  workdir, _ = run_dir
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [2, 4, 6]
  for r in train_rows:
    for key in ("step", "tokens", "loss", "lr", "seq_len", "grad_norm", "tokens_per_sec",
                "mfu"):
      assert isinstance(r[key], (int, float)), key
    assert r["tokens"] == r["step"] * 8 * 64  # batch 8 x seq_len 64 per step
  evals = [r for r in rows if "eval_loss" in r]
  assert {r["step"] for r in evals} == {4, 6}
  assert all(0 < r["eval_bpb"] < 20 for r in evals)
  final = evals[-1]
  assert final["gzip_bpb"] > 0


def test_finished_run_says_so_and_exits_0(run_dir):
  workdir, _ = run_dir
  proc = train_cli(workdir, *SMOKE)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "already finished at step 6" in proc.stdout + proc.stderr


def _error_line(proc):
  lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
  return lines[-1]


@pytest.mark.parametrize("args,devices,expected", [
    (["--config.train.nonexistent=3"], 1, "nonexistent"),
    (["--config.mesh.data=3"], 1, "mesh"),
    (["--config.mesh.data=8", "--config.train.batch_size=12"], 8, "batch_size=12"),
    (["--config.model.num_heads=5"], 1, "num_heads"),
    (["--config.data.tokenizer.path=/nonexistent/tok.model"], 1, "/nonexistent/tok.model"),
])
def test_bad_input_gives_one_clear_error(tmp_path, args, devices, expected):
  proc = train_cli(tmp_path / "run", *SMOKE, *args, devices=devices)
  assert proc.returncode != 0
  line = _error_line(proc)
  assert expected in line, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  # A refused start leaves no empty run directory behind.
  assert not (tmp_path / "run").exists()

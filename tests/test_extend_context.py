"""configs/extend_context.py end to end at smoke size: a tiny run continued at 4x its
length with YaRN, through sequence-length warmup, evaluated before and after."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_extend_context_continues_a_run_at_four_times_its_length(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
  common = ["--config.train.samples=0", "--config.train.progress=false",
            "--config.train.final_eval_batches=1", "--config.train.eval_batches=1"]

  def train(*args):
    proc = subprocess.run([sys.executable, "-m", "phijax.train", *common, *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

  train("--config=tiny:runlocal", f"--workdir={tmp_path}/pre", "--config.train.steps=3",
        "--config.train.batch_size=4", "--config.curriculum.lr.warmup_steps=1")
  train("--config=configs/extend_context.py:yarn,runlocal", f"--workdir={tmp_path}/long",
        f"--config.train.init_from={tmp_path}/pre", "--config.train.steps=8",
        "--config.train.log_every=1", "--config.train.eval_every=0")
  config = json.loads((tmp_path / "long" / "config.json").read_text())
  assert config["data"]["seq_len"] == 256 and config["model"]["max_position_embeddings"] == 256
  assert config["model"]["rope_scaling"] == {"type": "yarn", "factor": 4.0,
                                             "original_max_position_embeddings": 64}
  rows = [json.loads(l) for l in open(tmp_path / "long" / "metrics.jsonl")]
  lengths = [r["seq_len"] for r in rows if "loss" in r]
  assert lengths[0] == 64 and lengths[-1] == 256 and lengths == sorted(lengths)
  assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
  # The warm start is evaluated before its first step (at 256 tokens, YaRN on), and
  # at the end.
  evals = [r for r in rows if "eval_loss" in r]
  assert evals[0]["step"] == 0 and evals[-1].get("final") and len(evals) == 2

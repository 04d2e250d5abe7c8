"""configs/extend_context.py end to end at smoke size: a tiny run continued at 4x its
length with YaRN, through sequence-length warmup, evaluated before and after."""

import json

import numpy as np

from phijax import config_files
from phijax.train import loop


def test_extend_context_continues_a_run_at_four_times_its_length(tmp_path):
  common = ["--config.train.samples=0", "--config.train.progress=false",
            "--config.train.final_eval_batches=1", "--config.train.eval_batches=1"]

  def train(spec, workdir, *args):  # in this process: the two runs share its start-up
    loop.train(config_files.load(spec, [*common, *args]), str(workdir))

  train("tiny:runlocal", tmp_path / "pre", "--config.train.steps=3",
        "--config.train.batch_size=4", "--config.curriculum.lr.warmup_steps=1")
  train("configs/extend_context.py:yarn,runlocal", tmp_path / "long",
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

"""Sequence-length warmup in a real run: one compiled step per bucket (counted with
JAX's own compile log), and a resume mid-warmup continues the schedule exactly."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.test_resume import ROOT

WARMUP = ["--config=configs/tiny.py:runlocal", "--config.data.seq_len=128",
          "--config.train.steps=16", "--config.curriculum.seq_warmup.enabled=true",
          "--config.curriculum.seq_warmup.start=32",
          "--config.curriculum.seq_warmup.duration=0.75", "--config.train.log_every=1",
          "--config.train.eval_every=0", "--config.train.save_every=2",
          "--config.train.samples=0", "--config.train.final_eval_batches=1",
          "--config.train.progress=false"]


def _cmd(workdir, *extra):
  # The three runs use the default persistent cache (~/.cache/phijax/xla), as the suite's
  # other training runs do: the cut and resumed runs read what the first one compiled,
  # and a rerun of the suite all three (a fresh cache cost ~3 s of compiling a run).
  # JAX logs each compile it is asked for, cache hit or not: the count holds either way.
  return [sys.executable, "-m", "phijax.train", f"--workdir={workdir}", *WARMUP, *extra]


# Only the cut run needs periodic saves (its SIGTERM waits for checkpoints/4); the full
# run and the resumed one save just their last step: the rows compared do not depend on
# when a run saves.
NO_SAVES = "--config.train.save_every=0"


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1")


def _rows(workdir):
  rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
  return {r["step"]: r for r in rows if "loss" in r}


def test_one_compile_per_bucket_and_exact_resume_mid_warmup(tmp_path):
  full = tmp_path / "full"
  proc = subprocess.run(_cmd(full, NO_SAVES), capture_output=True, text=True, cwd=ROOT,
                        env=_env(), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  compiles = proc.stderr.count("Finished XLA compilation of jit(train_step)")
  assert compiles == 3  # buckets 32, 64, 128 = log2(128/32) + 1
  rows = _rows(full)
  lengths = [rows[s]["seq_len"] for s in sorted(rows)]
  assert lengths[0] == 32 and lengths[-1] == 128 and set(lengths) == {32, 64, 128}
  assert lengths == sorted(lengths)

  cut = tmp_path / "cut"
  log_path = tmp_path / "cut.log"
  with open(log_path, "w") as log:  # a file, not a pipe: the compile log is long
    p = subprocess.Popen(_cmd(cut), stdout=log, stderr=subprocess.STDOUT, text=True,
                         cwd=ROOT, env=_env())
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "4").exists():
      assert p.poll() is None, log_path.read_text()[-3000:]
      assert time.time() < deadline, "no checkpoint at step 4 in time"
      time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=300)
  text = log_path.read_text()
  assert p.returncode == 0, text[-3000:]
  stopped = int(text.split("checkpoint written at step ")[1].split()[0])
  assert rows[stopped + 1]["seq_len"] < 128  # the cut fell inside the warmup
  again = subprocess.run(_cmd(cut, NO_SAVES), capture_output=True, text=True, cwd=ROOT,
                         env=_env(), timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  resumed = _rows(cut)
  for step, row in rows.items():
    for key in ("seq_len", "lr", "tokens", "loss", "grad_norm"):
      assert resumed[step][key] == row[key], (step, key)

"""What a person reads: plain step lines in a log (no bar, no carriage returns), one
timed line per after-training phase, sampled (not looping greedy) samples, and a
loss.png whose bits/byte has its own panel."""

import ast
import io
import json
import os
import re
import subprocess
import sys

import pytest

from phijax.train import metrics
from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"^step +(\d+)/8  loss \d+\.\d{3}  lr \d\.\de[-+]\d\d  len 64  "
                       r"[\d,]+ tok/s  mfu [\d.]+%  \w+ elapsed, ETA \w+$")


@pytest.fixture(scope="module")
def log_run(tmp_path_factory):
  """8 steps, stdout captured (not a tty), bar left on: the log must still be lines."""
  workdir = tmp_path_factory.mktemp("run")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(1))
  proc = subprocess.run(
      [sys.executable, "-m", "phijax.train", "--config=configs/tiny.py:runlocal",
       f"--workdir={workdir}", "--config.train.steps=8", "--config.train.log_every=2",
       "--config.train.eval_every=4", "--config.train.save_every=8",
       "--config.train.final_eval_batches=2", "--config.train.samples=2",
       "--config.train.sample_tokens=8"],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


def test_log_has_a_plain_line_per_logged_step(log_run):
  _, proc = log_run
  assert "\r" not in proc.stdout
  steps = [int(m.group(1)) for l in proc.stdout.splitlines() if (m := STEP_LINE.match(l))]
  assert steps == [2, 4, 6, 8], proc.stdout


def test_log_times_each_phase_after_training(log_run):
  _, proc = log_run
  lines = proc.stdout.splitlines()
  timed = r" \(\d+\.\ds\)$"
  expected = [r"^final eval over 2 held-out batches\.\.\.$",
              r"^final eval: \d+\.\d{3} bits/byte over [\d,]+ held-out tokens" + timed,
              r"^gzip baseline: gzip -9 \d+\.\d{3} bits/byte .*" + timed,
              r"^samples -> samples\.txt" + timed,
              r"^plot -> loss\.png" + timed,
              r"^done: .*bits/byte \(gzip -9: .*"]
  tail = lines[-len(expected):]
  for pattern, line in zip(expected, tail):
    assert re.match(pattern, line), (pattern, tail)
  assert any(re.match(r"^step 4: eval loss .* bits/byte .*" + timed, l) for l in lines)


def test_no_absl_info_lines_in_stderr(log_run):
  _, proc = log_run
  assert not re.search(r"^[IW]\d{4} ", proc.stderr, re.M), proc.stderr[-3000:]


def test_run_writes_sampled_samples_and_plot(log_run):
  workdir, _ = log_run
  text = (workdir / "samples.txt").read_text()
  assert text.startswith("# sampled: temperature 0.8, top_k off, top_p 0.95, seed 0")
  blocks = text.split("=== prompt: ")[1:]
  assert len(blocks) == 2
  for block in blocks:  # the prompt's trailing space survives: the first token has one
    prompt, body = block.split("\n", 1)
    assert body.startswith(ast.literal_eval(prompt)), block
  assert (workdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_step_line_format_and_eta():
  line = metrics.format_step_line(
      120, 400, {"loss": 4.2134, "lr": 9.8e-3, "len": 256, "tok/s": 3412.7, "mfu": 0.021},
      elapsed=62.0, eta=145.0)
  assert line == ("step 120/400  loss 4.213  lr 9.8e-03  len 256  3,412 tok/s  mfu 2.1%  "
                  "1m02s elapsed, ETA 2m25s")
  assert metrics.format_step_line(5, 400, {"loss": 1.0, "mfu": None}, 3.0, None) == (
      "step   5/400  loss 1.000  3s elapsed")
  assert metrics.format_duration(7300) == "2h01m"
  rate = metrics.StepRate(window=2)
  rate.mark(0, now=100.0)
  assert rate.eta(400) is None  # one point: no rate yet
  rate.mark(10, now=120.0)  # 2 s/step
  assert rate.eta(400) == pytest.approx(390 * 2.0)
  rate.mark(20, now=130.0)
  rate.mark(30, now=135.0)  # the window keeps the last 2 intervals: 20 steps in 15 s
  assert rate.eta(400) == pytest.approx(370 * 0.75)


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_only_on_a_terminal_and_when_enabled():
  for enabled in (True, False):
    out = io.StringIO()
    p = metrics.Progress(total=10, initial=0, enabled=enabled, stream=out)
    p.update(5, {"loss": 2.0, "lr": 1e-3})
    p.close()
    assert out.getvalue().startswith("step  5/10  loss 2.000  lr 1.0e-03  ")
    assert "\r" not in out.getvalue()
  tty = _Tty()
  p = metrics.Progress(total=10, initial=0, enabled=True, stream=tty)
  p.update(5, {"loss": 2.0})
  p.close()
  assert "\r" in tty.getvalue() and "step  5/10" not in tty.getvalue()
  quiet = _Tty()
  metrics.Progress(total=10, initial=0, enabled=False, stream=quiet).update(5, {})
  assert quiet.getvalue().startswith("step  5/10") and "\r" not in quiet.getvalue()


def test_phase_writes_its_time_and_nothing_on_error():
  out = []
  with metrics.Phase(out.append) as phase:
    phase.done("plot -> loss.png")
  assert re.fullmatch(r"plot -> loss\.png \(\d+\.\ds\)", out[0])
  with pytest.raises(RuntimeError):
    with metrics.Phase(out.append) as phase:
      phase.done("never")
      raise RuntimeError
  assert len(out) == 1


def _metrics_file(workdir, seq_lens):
  rows = []
  for step, seq_len in zip(range(10, 10 * len(seq_lens) + 1, 10), seq_lens):
    rows.append({"step": step, "tokens": step * 512, "loss": 8.0 - step / 10, "lr": 1e-3,
                 "seq_len": seq_len})
  rows.append({"step": 20, "tokens": 20 * 512, "eval_loss": 6.5, "eval_bpb": 2.5})
  rows.append({"step": 40, "tokens": 40 * 512, "eval_loss": 5.0, "eval_bpb": 1.9,
               "gzip_bpb": 2.06, "final": True})
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("seq_lens,n_axes", [([64] * 4, 3), ([32, 32, 64, 64], 4)])
def test_plot_puts_bits_per_byte_on_its_own_axes(tmp_path, seq_lens, n_axes):
  _metrics_file(tmp_path, seq_lens)
  path = metrics.plot_run(str(tmp_path))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  axes = metrics.run_figure(str(tmp_path)).axes
  assert len(axes) == n_axes  # loss, bits/byte, LR (+ sequence length when it changes)
  loss_ax, bpb_ax = axes[0], axes[1]
  assert bpb_ax.get_ylabel() == "bits / byte" and "loss" in loss_ax.get_ylabel()
  bpb_labels = bpb_ax.get_legend_handles_labels()[1]
  assert any(l.startswith("final, whole held-out split: 1.900") for l in bpb_labels)
  assert any(l.startswith("gzip -9") for l in bpb_labels)
  assert not any("bits/byte" in l or "gzip" in l
                 for l in loss_ax.get_legend_handles_labels()[1])

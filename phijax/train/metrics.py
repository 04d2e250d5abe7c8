"""Run metrics: ``metrics.jsonl``, TensorBoard events, progress (a bar on a terminal,
plain lines in a log), phase timings, MFU, and the run's ``loss.png``.

MFU = model FLOPs per second / peak FLOPs of the devices. Model FLOPs per trained
token are ``6 * N`` (N = parameters outside the embedding lookup) plus causal
attention ``6 * layers * heads * head_dim * T`` (the ``12 L H E T`` of PaLM's
appendix, halved because a causal mask skips half the scores).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# bf16 dense peak per chip (FLOP/s), from the vendors' data sheets.
PEAK_FLOPS = {
    "a100": 312e12, "h100": 989e12, "h200": 989e12, "h800": 989e12, "l4": 121e12,
    "a10": 125e12, "v100": 125e12, "b200": 2250e12,
    "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12, "tpu v5p": 459e12,
    "tpu v5": 459e12, "tpu v6 lite": 918e12, "tpu v6e": 918e12,
}


def flops_per_token(cfg, seq_len: int) -> float:
  from phijax.model import count_params
  n = count_params(cfg) - cfg.vocab_size * cfg.hidden_size  # embedding lookup: no FLOPs
  attn = 6 * cfg.num_layers * cfg.num_heads * cfg.dim_per_head * seq_len
  return 6.0 * n + attn


def measure_cpu_peak(n: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of a float32 matmul on this host: the CPU 'peak' MFU is measured against."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def device_peak_flops(configured: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s of all local devices, where the number comes from)."""
  devices = jax.local_devices()
  if configured:
    return configured * len(devices), "configured (train.peak_flops)"
  kind = devices[0].device_kind.lower()
  if devices[0].platform == "cpu":
    # A CPU "device" count is simulated; all of them share the host's cores.
    return measure_cpu_peak(), "measured f32 matmul on this CPU"
  for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if name in kind:
      return flops * len(devices), f"{devices[0].device_kind} bf16 data sheet"
  return 0.0, f"unknown device kind {devices[0].device_kind!r}: MFU not reported"


class Writer:
  """metrics.jsonl + TensorBoard (tensorboardX, no TensorFlow), and every row to each
  extra sink (``phijax.train.wandb_log.sinks``: an object with ``write(step, row)`` and
  ``close()``). Host 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True, sinks=()):
    self.enabled = enabled and jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    self._sinks = list(sinks) if self.enabled else []
    if self.enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      try:
        self._tb = summary_writer_class()(os.path.join(workdir, "tb"))
      except ImportError:
        self._tb = None

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    values = {k: _item(v) for k, v in scalars.items()}
    row = {"step": int(step)}
    row.update({k: _json_safe(v) for k, v in values.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
    for sink in self._sinks:  # non-finite values stay floats here (NaN, not "nan")
      sink.write(int(step), values)

  def close(self):
    if self._jsonl:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    for sink in self._sinks:
      sink.close()
    self._sinks = []


def summary_writer_class():
  """tensorboardX's ``SummaryWriter``, imported without torch. tensorboardX imports
  torch when it is installed (about a second at every run's start, on a CPU) only to
  accept torch tensors; this writer is given Python floats. A torch imported later,
  or already imported, is untouched."""
  import sys
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


def _item(v):
  """A Python scalar for a numpy or jax scalar (or 0-d array)."""
  if isinstance(v, (np.generic, np.ndarray)) or hasattr(v, "item"):
    v = v.item()
  return v


def _json_safe(v):
  """A non-finite float as text ("nan", "inf"): strict JSON has no NaN."""
  if isinstance(v, float) and not np.isfinite(v):
    return str(v)
  return v


def format_duration(seconds: float) -> str:
  """``42s``, ``1m02s``, ``2h05m``: compact wall-clock durations for the log."""
  s = int(round(max(0.0, seconds)))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_step_line(step: int, total: int, scalars: dict, elapsed: float,
                     eta: float | None) -> str:
  """One plain log line for a logged step, e.g. (one line)::

    step 120/400  loss 4.213  lr 9.8e-03  len 256  3,412 tok/s  mfu 2.1%
    1m02s elapsed, ETA 2m25s

  ``scalars`` may hold ``loss``, ``lr``, ``len``, ``tok/s``, ``mfu`` (a fraction);
  a missing or None one is left out, and so is the ETA when it is None.
  """
  parts = [f"step {step:>{len(str(total))}}/{total}"]
  if scalars.get("loss") is not None:
    parts.append(f"loss {scalars['loss']:.3f}")
  if scalars.get("lr") is not None:
    parts.append(f"lr {scalars['lr']:.1e}")
  if scalars.get("len") is not None:
    parts.append(f"len {scalars['len']}")
  if scalars.get("tok/s") is not None:
    parts.append(f"{int(scalars['tok/s']):,} tok/s")
  if scalars.get("mfu") is not None:
    parts.append(f"mfu {100 * scalars['mfu']:.{1 if scalars['mfu'] >= 0.01 else 2}f}%")
  when = f"{format_duration(elapsed)} elapsed"
  if eta is not None:
    when += f", ETA {format_duration(eta)}"
  return "  ".join(parts + [when])


class StepRate:
  """ETA from the recent step rate: steps per second over the last ``window`` logged
  points (wall clock, so periodic evals and checkpoints inside the window count), times
  the steps left. A sliding window follows a rate that changes mid-run (sequence-length
  warmup) and forgets start-up costs once they slide out."""

  def __init__(self, window: int = 10):
    self.points = collections.deque(maxlen=window + 1)

  def mark(self, step: int, now: float | None = None) -> None:
    self.points.append((time.perf_counter() if now is None else now, step))

  def eta(self, total: int) -> float | None:
    """Seconds to ``total`` steps; None before two points (or with no progress)."""
    if len(self.points) < 2:
      return None
    (t0, s0), (t1, s1) = self.points[0], self.points[-1]
    if s1 <= s0 or t1 <= t0:
      return None
    return max(0, total - s1) * (t1 - t0) / (s1 - s0)


class Phase:
  """Times one phase for the log; the message given to ``done`` is written on exit
  with the seconds taken: ``final eval: 1.568 bits/byte ... (12.3s)``."""

  def __init__(self, write):
    self._write = write
    self._message = None

  def done(self, message: str) -> None:
    self._message = message

  def __enter__(self):
    self._start = time.perf_counter()
    return self

  def __exit__(self, exc_type, *exc):
    if exc_type is None and self._message is not None:
      self._write(f"{self._message} ({time.perf_counter() - self._start:.1f}s)")


class Progress:
  """Training progress for people, from process 0 only.

  On a terminal (stdout is a tty) with ``enabled``: a tqdm bar with the scalars people
  watch. Otherwise (a log file, a pipe, CI, or ``train.progress=false``): one plain
  line per logged step (``format_step_line``), with elapsed time and an ETA.
  """

  def __init__(self, total: int, initial: int, enabled: bool = True, stream=None):
    self.total = total
    self.stream = stream or sys.stdout
    self.main = jax.process_index() == 0
    self.start_time = time.perf_counter()
    self.rate = StepRate()
    self.rate.mark(initial)
    self.bar = None
    if enabled and self.main and _isatty(self.stream):
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                      mininterval=1.0, file=self.stream)

  def set_total(self, total: int) -> None:
    """A new number of planned steps (train.time_budget_s decided it)."""
    self.total = total
    if self.bar is not None:
      self.bar.total = total
      self.bar.refresh()

  def start(self, step: int) -> None:
    """The step clock starts here (after compilation), so the first ETA is not
    inflated by start-up; elapsed time still counts from the start of the run."""
    self.rate.points.clear()
    self.rate.mark(step)

  def update(self, step: int, scalars: dict) -> None:
    self.rate.mark(step)
    if self.bar is not None:
      self.bar.n = step
      self.bar.set_postfix({k: (f"{100 * v:.1f}%" if k == "mfu" else
                                f"{v:.4g}" if isinstance(v, float) else v)
                            for k, v in scalars.items() if v is not None}, refresh=True)
    elif self.main:
      self.write(format_step_line(step, self.total, scalars,
                                  time.perf_counter() - self.start_time,
                                  self.rate.eta(self.total)))

  def write(self, msg: str) -> None:
    if self.bar is not None:
      self.bar.write(msg, file=self.stream)
    elif self.main:
      print(msg, file=self.stream, flush=True)

  def phase(self) -> Phase:
    """``with progress.phase() as p: ...; p.done("samples -> samples.txt")``."""
    return Phase(self.write)

  def close(self):
    """Ends the bar; later ``write`` calls print plain lines."""
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def _isatty(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


def plot_run(workdir: str, path: str | None = None) -> str:
  """The run's ``loss.png`` (see ``run_figure``); returns its path."""
  path = path or os.path.join(workdir, "loss.png")
  run_figure(workdir).savefig(path, dpi=100)
  return path


def _final_covers(row) -> str:
  """What a final evaluation row measured: the whole held-out split or some batches
  of it (rows written before ``eval_whole`` existed were always the whole split)."""
  if row.get("eval_whole", True):
    return "whole held-out split"
  n = row.get("eval_batches")
  return f"{n} held-out batches" if n else "part of the held-out split"


def run_figure(workdir: str):
  """Three panels against tokens trained: loss (train and held-out, nats/token);
  held-out bits per byte with the final value (over the whole held-out split or the
  batches the row names) and gzip -9 on the bytes it scored; learning rate (and
  sequence length when it changes). Legends sit outside the axes, to the right, so they
  cover no data."""
  from matplotlib.figure import Figure  # no pyplot: no global backend state
  from matplotlib.ticker import EngFormatter

  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if isinstance(r.get("loss"), (int, float))]
  evals = [r for r in rows if "eval_loss" in r and not r.get("final")]
  final = [r for r in rows if r.get("final")][-1:]
  fig = Figure(figsize=(10, 8), layout="constrained")
  ax_loss, ax_bpb, ax_lr = fig.subplots(3, 1, sharex=True, height_ratios=[3, 2, 1.2])
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  outside = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                 fontsize="small")
  tokens = [r["tokens"] for r in train]

  ax_loss.plot(tokens, [r["loss"] for r in train], color="tab:blue", label="train loss")
  if evals:
    ax_loss.plot([r["tokens"] for r in evals], [r["eval_loss"] for r in evals], "o-",
                 color="tab:orange", label="held-out loss")
  for r in final:
    _to_final(ax_loss, evals, r, "eval_loss", "tab:orange")
    ax_loss.plot([r["tokens"]], [r["eval_loss"]], "*", color="tab:orange", markersize=13,
                 label=f"final held-out loss: {r['eval_loss']:.3f}")
  ax_loss.set_ylabel("loss (nats / token)")
  ax_loss.grid(alpha=0.3)
  ax_loss.legend(**outside)

  # Bits per byte; a DPO run (phijax.train.objectives) has reward accuracy there instead.
  key, what, unit = "eval_bpb", "held-out bits/byte", "bits / byte"
  if any("eval_reward_accuracy" in r for r in evals + final):
    key, what, unit = "eval_reward_accuracy", "held-out reward accuracy", "reward accuracy"
  if evals:
    ax_bpb.plot([r["tokens"] for r in evals], [r[key] for r in evals], "s-",
                color="tab:green", label=what)
  for r in final:
    _to_final(ax_bpb, evals, r, key, "tab:green")
    ax_bpb.plot([r["tokens"]], [r[key]], "*", color="tab:green", markersize=13,
                label=f"final, {_final_covers(r)}: {r[key]:.3f}")
    if r.get("gzip_bpb"):
      ax_bpb.axhline(r["gzip_bpb"], color="gray", linestyle="--",
                     label=f"gzip -9 on the bytes scored: {r['gzip_bpb']:.3f}")
  ax_bpb.set_ylabel(unit)
  ax_bpb.margins(y=0.12)  # the final star clear of the frame
  ax_bpb.grid(alpha=0.3)
  if ax_bpb.get_legend_handles_labels()[0]:
    ax_bpb.legend(**outside)

  # Each y-axis label in its line's colour stands for a legend here (one would cover
  # the right-hand axis's label or the data).
  ax_lr.plot(tokens, [r["lr"] for r in train], color="tab:red")
  ax_lr.set_ylabel("learning rate", color="tab:red")
  ax_lr.set_xlabel("tokens")
  ax_lr.xaxis.set_major_formatter(EngFormatter(sep=""))  # 400k, 1.2M
  ax_lr.grid(alpha=0.3)
  if len({r["seq_len"] for r in train}) > 1:
    ax_len = ax_lr.twinx()
    ax_len.step(tokens, [r["seq_len"] for r in train], where="post", color="tab:purple")
    ax_len.set_ylabel("sequence length", color="tab:purple")
  return fig


def _to_final(ax, evals, final, key, color):
  """A dotted segment from the last periodic eval to the final one (which may read
  more of the held-out split: ``train.eval_batches``), so the trend reads at a glance."""
  if evals:
    ax.plot([evals[-1]["tokens"], final["tokens"]], [evals[-1][key], final[key]], ":",
            color=color)

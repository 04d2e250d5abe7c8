"""Run metrics: ``metrics.jsonl``, TensorBoard events, a progress bar, MFU.

MFU = model FLOPs per second / peak FLOPs of the devices. Model FLOPs per trained
token are ``6 * N`` (N = parameters outside the embedding lookup) plus causal
attention ``6 * layers * heads * head_dim * T`` (the ``12 L H E T`` of PaLM's
appendix, halved because a causal mask skips half the scores).
"""

from __future__ import annotations

import json
import os
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
  """metrics.jsonl + TensorBoard (tensorboardX, no TensorFlow). Host 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self.enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:
        self._tb = None

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _py(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)

  def close(self):
    if self._jsonl:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _py(v):
  if isinstance(v, (np.generic, np.ndarray)) or hasattr(v, "item"):
    v = v.item()
  if isinstance(v, float) and not np.isfinite(v):
    return str(v)
  return v


class Progress:
  """A tqdm bar with the scalars people watch; a plain line per update when not a tty."""

  def __init__(self, total: int, initial: int, enabled: bool = True):
    self.bar = None
    if enabled and jax.process_index() == 0:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                      mininterval=1.0)

  def update(self, step: int, postfix: dict) -> None:
    if self.bar is None:
      return
    self.bar.n = step
    self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                          for k, v in postfix.items()}, refresh=True)

  def write(self, msg: str) -> None:
    if self.bar is not None:
      self.bar.write(msg)
    elif jax.process_index() == 0:
      print(msg, flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def plot_run(workdir: str, path: str | None = None) -> str:
  """Training and held-out loss (and LR / sequence length) against tokens, as a PNG."""
  from matplotlib.figure import Figure  # no pyplot: no global backend state

  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if "loss" in r and isinstance(r["loss"], (int, float))]
  evals = [r for r in rows if "eval_loss" in r and not r.get("final")]
  final = [r for r in rows if r.get("final")]
  fig = Figure(figsize=(8, 6), layout="constrained")
  ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
  ax_loss.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train loss")
  if evals:
    ax_loss.plot([r["tokens"] for r in evals], [r["eval_loss"] for r in evals], "o-",
                 label="held-out loss")
    ax_bpb = ax_loss.twinx()
    ax_bpb.plot([r["tokens"] for r in evals], [r["eval_bpb"] for r in evals], "s--",
                color="tab:green", label="held-out bits/byte")
    for r in final:
      ax_bpb.plot([r["tokens"]], [r["eval_bpb"]], "*", color="tab:green", markersize=12,
                  label=f"final, whole held-out: {r['eval_bpb']:.3f}")
      if r.get("gzip_bpb"):
        ax_bpb.axhline(r["gzip_bpb"], color="gray", linestyle=":",
                       label=f"gzip -9: {r['gzip_bpb']:.3f}")
    ax_bpb.set_ylabel("bits / byte")
    ax_bpb.legend(loc="upper center")
  ax_loss.set_ylabel("loss (nats / token)")
  ax_loss.legend(loc="upper right")
  ax_loss.set_title(os.path.basename(os.path.abspath(workdir)))
  ax_lr.plot([r["tokens"] for r in train], [r["lr"] for r in train], color="tab:red")
  ax_lr.set_ylabel("learning rate")
  ax_lr.set_xlabel("tokens")
  if train and len({r["seq_len"] for r in train}) > 1:
    ax_len = ax_lr.twinx()
    ax_len.step([r["tokens"] for r in train], [r["seq_len"] for r in train], color="tab:purple")
    ax_len.set_ylabel("sequence length")
  path = path or os.path.join(workdir, "loss.png")
  fig.savefig(path, dpi=100)
  return path

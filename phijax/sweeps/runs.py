"""One run directory's numbers: its ``metrics.jsonl`` read and split into training
rows, periodic evaluations and the final one, and summarized (``run_summary``: the
final held-out loss, spikes, throughput, the curves; one row of a sweep's table).
"""

from __future__ import annotations

import json
import math
import os
import statistics

from phijax.sweeps.status import arm_state

SMOOTHING = 0.1  # EMA weight of the newest step's loss (spikes and curves)
SPIKE_RATIO = 1.05  # a spike step: smoothed loss > ratio x its running minimum


def finite(v) -> bool:
  """A real number, not nan or inf (a bool is no number here)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ema(values, alpha: float = SMOOTHING) -> list[float]:
  """Exponential moving average; non-finite values are skipped (the average holds)."""
  out, avg = [], None
  for v in values:
    if finite(v):
      avg = v if avg is None else (1 - alpha) * avg + alpha * v
    out.append(avg if avg is not None else math.nan)
  return out


def loss_rises(losses, ratio: float = SPIKE_RATIO) -> tuple[int, float]:
  """(steps whose smoothed loss exceeds ``ratio`` x the minimum smoothed loss before
  them, the largest smoothed loss / that minimum): Li et al.'s loss ratio on an EMA.
  Smoothed because one hard batch of a heterogeneous corpus moves a step's loss by
  10-20% in every arm alike, while a training instability lasts several steps.
  Non-finite losses count as spikes."""
  count, worst, running_min = 0, 1.0, math.inf
  for raw, loss in zip(losses, ema(losses)):
    if not finite(raw):
      count += 1
    elif loss > ratio * running_min:
      count += 1
    if finite(loss) and running_min < math.inf:
      worst = max(worst, loss / running_min)
    if finite(loss):
      running_min = min(running_min, loss)
  return count, worst


def read_rows(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict], dict | None]:
  """(train rows, periodic eval rows, final row). A resumed run re-logs the steps after
  its last checkpoint: each step's last row counts."""
  train = {r["step"]: r for r in rows if "loss" in r}
  evals = {r["step"]: r for r in rows if "eval_loss" in r and not r.get("final")}
  finals = [r for r in rows if r.get("final")]
  return ([train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)],
          finals[-1] if finals else None)


def _num(v) -> float:
  return float(v) if isinstance(v, (int, float)) else math.nan  # "nan"/"inf" strings


def run_summary(run_dir: str) -> dict:
  """One arm's numbers (math.nan where it has none)."""
  train, evals, final = split_rows(read_rows(run_dir))
  losses = [_num(r["loss"]) for r in train]
  grads = [_num(r.get("grad_norm")) for r in train]
  grads = [g for g in grads if math.isfinite(g)]
  tps = [r["tokens_per_sec"] for r in train if finite(r.get("tokens_per_sec"))]
  # Step 0 (train.eval_at_start) is the starting model, not a result of training.
  scored = [r for r in evals if r["step"] > 0] + ([final] if final else [])
  eval_losses = [_num(r.get("eval_loss")) for r in scored]
  eval_losses = [v for v in eval_losses if math.isfinite(v)]
  last = final or (train[-1] if train else {})
  spikes, max_ratio = loss_rises(losses)
  status_record = _status_record(run_dir)
  return {
      "status": status_record.get("state") or ("done" if final else "pending"),
      "eval_loss": _num(final.get("eval_loss")) if final else math.nan,  # none: a step arm
      # A DPO run's evaluation has no bits per byte (phijax.train.objectives).
      "eval_bpb": _num(final.get("eval_bpb")) if final else math.nan,
      "best_eval_loss": min(eval_losses) if eval_losses else math.nan,
      "tokens": last.get("tokens", 0), "steps": last.get("step", 0),
      "wall_s": status_record.get("wall_s", math.nan),
      "tokens_per_sec": statistics.median(tps) if tps else math.nan,
      "skipped": train[-1].get("skipped_steps", 0) if train else 0,
      "spikes": spikes, "max_loss_ratio": max_ratio if train else math.nan,
      "max_grad_norm": max(grads) if grads else math.nan,
      "gzip_bpb": _num(final.get("gzip_bpb")) if final else math.nan,
      "error": status_record.get("error") or "",
      # Token-selection (Rho-1) arms' ``loss`` covers the tokens they train on; their
      # ``lm_loss`` covers every token, as a plain arm's ``loss`` does: the curves
      # compare like with like.
      "curve": ([r["tokens"] for r in train],
                [_num(r["lm_loss"]) if "lm_loss" in r else v for r, v in zip(train, losses)]),
      "eval_curve": ([r["tokens"] for r in evals], [_num(r["eval_loss"]) for r in evals]),
  }


def _status_record(run_dir: str) -> dict:
  state, record = arm_state(run_dir)
  return dict(record, state=state) if record else {}

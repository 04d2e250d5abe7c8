"""Edge of stability (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically
Occurs at the Edge of Stability", arXiv 2103.00065): with full-batch gradient descent at
a constant step size lr, does the sharpness (top Hessian eigenvalue of the training
loss) rise during training until it reaches about 2/lr, and then hover at or just above
2/lr while the loss keeps falling, non-monotonically?

    python -m phijax.sweep experiments/edge_of_stability.py \\
        --workdir=experiments/results/edge_of_stability --parallel=2
    # smoke: 1 arm, 60 steps, ~1 min
    python -m phijax.sweep experiments/edge_of_stability.py --workdir=runs/eos_quick \\
        --only='lr=0.06,seed=0' --config.train.steps=60

Full-batch GD: data.fixed_batch trains every step on one 8 x 64-token batch (data_seed
0's first, in every arm), plain SGD (no momentum, weight decay or clipping), a constant
LR; the sharpness probe (phijax.train.probes) measures on that batch every
SHARPNESS_EVERY steps. Model: a very small phi (hidden 32, 2 layers, MLP 128), float32.
Arms: lr {0.015, 0.03, 0.06} (2/lr = 133, 67, 33; an earlier run's first sharpness:
24-39) x initialisation seeds {0, 1, 2}: 9 arms, ~15 min on 2 cores at --parallel=2.

EVALS ``eos`` (from metrics.jsonl, over the last LATE steps): ``sharpening`` (median
sharpness / the first probe's), ``sharp_x_lr2`` (median sharpness x lr / 2: 1 at 2/lr),
``loss_drop`` (mean loss of the window's first 10 steps - of its last 10), ``loss_rises``
(steps whose loss rose). Figure ``edge_of_stability.png``: raw per-step loss and
sharpness x lr / 2. No generic figures: curves.png's smoothing hides the oscillation,
and held-out loss (final.png) means little after fitting one batch.
"""

import os
import statistics

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps import evals, runs
from phijax.sweeps.stats import Comparison

ALIASES = {"optim.lr": "lr"}
LRS = [0.015, 0.03, 0.06]
STEPS, SHARPNESS_EVERY, SHARPNESS_ITERS = 300, 5, 20
LATE = 100  # the window at the end of each run, in steps
PLOTS = ()


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=0, batch_size=8, eval_every=0,
                         final_eval_batches=2, log_every=1)
  c.model.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128,
                 vocab_size=2048)
  c.data.seq_len = 64
  c.data.fixed_batch = True  # full batch: the same 8 x 64 tokens every step
  c.train.update(steps=STEPS, tokens=0, sharpness_every=SHARPNESS_EVERY,
                 sharpness_iters=SHARPNESS_ITERS)
  # Plain gradient descent: SGD's momentum is optim.b1, clip 0 is off (train/optim.py).
  c.optim.update(name="sgd", lr=LRS[0], b1=0.0, weight_decay=0.0, clip=0.0)
  c.curriculum.lr.update(schedule="constant", warmup_steps=0, warmup_fraction=0.0)
  return base.finish(c, arg)


def get_sweep(h):
  return h.product(h.sweep("optim.lr", LRS), h.seeds(3, vary="init"))  # one batch: init


def _series(arm_dir):
  """{step: loss}, {step: sharpness x lr / 2} (each step's last row: a resume re-logs)."""
  rows = runs.read_rows(arm_dir)
  train, _, _ = runs.split_rows(rows)
  sharp = {r["step"]: r["sharpness"] / r["two_over_lr"] for r in rows if "sharpness" in r}
  return {r["step"]: float(r["loss"]) for r in train}, dict(sorted(sharp.items()))


def eos_numbers(arm_dir):
  loss, sharp = _series(arm_dir)
  end = max(loss)
  late = [v for s, v in sharp.items() if s > end - LATE]
  window = [v for s, v in loss.items() if s > end - LATE]
  return {"sharpening": statistics.median(late) / next(iter(sharp.values())),
          "sharp_x_lr2": statistics.median(late),
          "loss_drop": statistics.fmean(window[:10]) - statistics.fmean(window[-10:]),
          "loss_rises": sum(b > a for a, b in zip(window, window[1:]))}


EVALS = [evals.ArmEval("eos", fn=eos_numbers, fmt=".3f")]
CLAIMS = [  # (what, metric, claim, the stated value it is compared with)
    ("sharpness rises during training", "sharpening", "higher", 1.0),
    ("sharpness ends at or above 2/lr", "sharp_x_lr2", "higher", 1.0),
    ("... just above it: under 1.5 x 2/lr", "sharp_x_lr2", "lower", 1.5),  # our bound
    ("the loss still falls at the edge", "loss_drop", "higher", 0.0),
    ("... non-monotonically", "loss_rises", "higher", 0.0)]
COMPARISONS = [Comparison(f"lr {lr:g}: {what}", metric=metric, claim=claim, arm={"lr": lr},
                          control=value) for lr in LRS for what, metric, claim, value in CLAIMS]


def plot(table, sweep_dir):
  """edge_of_stability.png: raw training loss (top) and sharpness x lr / 2 (bottom; 1 is
  2/lr) per step, one colour per lr, one line per seed."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(8, 6), layout="constrained")
  top, bottom = fig.subplots(2, 1, sharex=True)
  for r in table.rows:
    if r["status"] == "done":
      loss, sharp = _series(os.path.join(sweep_dir, r["arm"]))
      color = f"C{LRS.index(r['lr'])}" if r["lr"] in LRS else "gray"
      label = f"lr {r['lr']:g}" if r["seed"] == 0 else None  # one legend entry per lr
      top.plot(list(loss), list(loss.values()), color=color, lw=0.8, label=label)
      bottom.plot(list(sharp), list(sharp.values()), ".-", color=color, lw=0.8, ms=2)
  bottom.axhline(1.0, color="black", ls="--", lw=1)
  top.set(ylabel="training loss (full batch, raw)")
  bottom.set(ylabel="sharpness x lr / 2 (dashed: 2/lr)", xlabel="step")
  top.legend(fontsize="small")
  for ax in (top, bottom):
    ax.grid(alpha=0.3)
  path = os.path.join(sweep_dir, "edge_of_stability.png")
  fig.savefig(path, dpi=110)
  return [path]

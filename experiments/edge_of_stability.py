"""Edge of stability (Cohen et al. 2021, "Gradient Descent on Neural Networks Typically
Occurs at the Edge of Stability", arXiv 2103.00065): with full-batch gradient descent at
a constant step size lr, does the sharpness (top Hessian eigenvalue of the training
loss) rise during training until it reaches about 2/lr, and then hover at or just above
2/lr while the loss keeps falling, non-monotonically?

    python -m phijax.sweep experiments/edge_of_stability.py \\
        --workdir=experiments/results/edge_of_stability --parallel=2
    # smoke: 1 arm, 60 steps, ~40 s
    python -m phijax.sweep experiments/edge_of_stability.py --workdir=runs/eos_quick \\
        --only='lr=0.06,seed=0' --config.train.steps=60

Full-batch gradient descent: data.fixed_batch trains every step on the same 8 x 64
tokens (the first batch of the seed's stream, so each seed has its own batch), plain
SGD (optim.b1 = 0: no momentum; no weight decay; clip 0: off), a constant LR with no
warmup. The sharpness probe (phijax.train.probes, train.sharpness_every) measures on the
first batch it sees, here the same fixed batch, every SHARPNESS_EVERY steps after the
step's update, with SHARPNESS_ITERS Hessian-vector products of power iteration. The
model is a very small phi (hidden 32, 2 layers, 2 heads, MLP 128, 2048-token
vocabulary: 158,464 parameters, most of them the embedding and head), float32.
Arms: lr {0.015, 0.03, 0.06} (2/lr = 133, 67, 33; the sharpness after 5 steps is
24-30, below every threshold, except 39 at lr 0.06 seed 1) x seeds {0, 1}, STEPS steps
each.

Measured on 2 CPU cores shared with a test-suite run and other experiments (load
average ~9): 10m14s for the 6 arms at --parallel=2, 136-298 s per arm; the smoke arm
36 s.
"""

import json
import math
import os
import statistics

from phijax import config as base
from phijax.configs import tiny

ALIASES = {"optim.lr": "lr"}
LRS = [0.015, 0.03, 0.06]  # 2/lr = 133, 67, 33; sharpness starts near 20-24
STEPS = 300
SHARPNESS_EVERY = 5
SHARPNESS_ITERS = 20
LATE = 100  # summary window at the end of each run, in steps


def get_config(arg=None):
  c = base.small_ablation(tiny.get_config(), tokens=0, batch_size=8, eval_every=0,
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
  return h.product(h.sweep("optim.lr", LRS), h.seeds(2))


def _series(run_dir):
  """(steps, losses), (steps, sharpness) from an arm's metrics.jsonl; each step's last
  row counts (a resumed run re-logs the steps after its checkpoint)."""
  from phijax.sweeps import runs
  loss, sharp = {}, {}
  for r in runs.read_rows(run_dir):
    if "loss" in r:
      loss[r["step"]] = float(r["loss"])
    if "sharpness" in r:
      sharp[r["step"]] = float(r["sharpness"])
  return ([(s, loss[s]) for s in sorted(loss)], [(s, sharp[s]) for s in sorted(sharp)])


def arm_stats(lr, loss, sharp):
  """One arm's numbers (see summarize's docstring); loss, sharp: [(step, value)]."""
  threshold = 2.0 / lr
  reach = next((s for s, v in sharp if v >= 0.9 * threshold), None)
  after = [v / threshold for s, v in sharp if reach is not None and s >= reach]
  losses = [v for _, v in loss]
  rose = [s for (_, a), (s, b) in zip(loss, loss[1:]) if b > a]  # steps whose loss rose
  cut = reach if reach is not None else math.inf
  # The last LATE steps: measured every few steps along an oscillating iterate, the
  # sharpness zigzags; its median there says where it settles.
  end = loss[-1][0] if loss else 0
  late = list(v / threshold for s, v in sharp if s > end - LATE)
  return {
      "lr": lr, "2/lr": threshold,
      "first sharpness": sharp[0][1] if sharp else math.nan,
      "max sharpness": max(v for _, v in sharp) if sharp else math.nan,
      "step reaching 0.9 x 2/lr": reach if reach is not None else "never",
      "mean sharpness / (2/lr) after": sum(after) / len(after) if after else math.nan,
      "late median": statistics.median(late) if late else math.nan,
      "late above": f"{sum(v >= 1 for v in late)} / {len(late)}",
      "loss rises (steps)":
          f"{sum(s <= cut for s in rose)} / {sum(s > cut for s in rose)}",
      "loss first -> last": (f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"),
      "min loss": min(losses) if losses else math.nan}


def summarize(table):
  """Nothing here: the per-arm edge-of-stability numbers need each arm's metrics.jsonl
  (sharpness is not a column of the runner's table, and summarize gets no sweep
  directory), so plot() computes them and writes them into results.md: per arm the
  first measured sharpness (after SHARPNESS_EVERY steps), the max, the first step at
  which sharpness >= 0.9 x 2/lr, mean sharpness / (2/lr) from that step on, the median
  of sharpness / (2/lr) over the last LATE steps and how many probes there were >= 2/lr,
  the count of steps whose training loss rose over the previous step's up to and after
  that step, the loss at the first and last step, and the min loss."""
  return None


def plot(table, sweep_dir):
  """edge_of_stability.png (the paper's Figure 1 layout: one column per step size,
  training loss on top, sharpness below with 2/lr dashed) and the per-arm table in
  results.md (see summarize) and eos_stats.csv."""
  from matplotlib.figure import Figure
  from phijax.sweeps import tables

  lrs = table.values("lr")
  rows, curves = [], {}
  for r in sorted(table.rows, key=lambda r: (r["lr"], r["seed"])):
    loss, sharp = _series(os.path.join(sweep_dir, r["arm"]))
    curves[(r["lr"], r["seed"])] = (loss, sharp)
    rows.append({"arm": r["arm"], "seed": r["seed"], **arm_stats(r["lr"], loss, sharp)})

  columns = [("lr", "step size lr", "g"), ("seed", "seed", "d"), ("2/lr", "2/lr", ".1f"),
             ("first sharpness", f"sharpness at step {SHARPNESS_EVERY}", ".1f"),
             ("max sharpness", "max sharpness", ".1f"),
             ("step reaching 0.9 x 2/lr", "first step with sharpness >= 0.9 x 2/lr", ""),
             ("mean sharpness / (2/lr) after", "mean sharpness / (2/lr) from then on",
              ".3f"),
             ("late median", f"median sharpness / (2/lr), last {LATE} steps", ".3f"),
             ("late above", f"probes >= 2/lr, last {LATE} steps", ""),
             ("loss rises (steps)", "steps whose loss rose: up to / after that step", ""),
             ("loss first -> last", "training loss, first -> last step", ""),
             ("min loss", "min training loss", ".3f")]
  md = ("## Edge of stability per arm\n\n" + tables.markdown(
      [{k: (str(v) if k == "step reaching 0.9 x 2/lr" else v) for k, v in r.items()}
       for r in rows], columns) +
      f"\n\nSharpness: top Hessian eigenvalue of the training loss on the fixed batch "
      f"(power iteration, {SHARPNESS_ITERS} Hessian-vector products), measured every "
      f"{SHARPNESS_EVERY} steps after the step's update. Training loss: the full-batch "
      "loss before each step's update. The held-out loss in the tables above says little "
      "here: every arm fits one fixed 512-token batch. Plot: `edge_of_stability.png`.")
  md_path = os.path.join(sweep_dir, "results.md")
  with open(md_path) as f:
    text = f.read()
  cut = text.rfind("\nPlots: ")
  section = "\n" + md + "\n"
  text = text[:cut] + section + text[cut:] if cut >= 0 else text + section
  with open(md_path, "w") as f:
    f.write(text)
  csv_path = os.path.join(sweep_dir, "eos_stats.csv")
  with open(csv_path, "w") as f:
    keys = list(rows[0]) if rows else []
    f.write(",".join(json.dumps(k) for k in keys) + "\n")
    for r in rows:
      f.write(",".join(json.dumps(r[k]) for k in keys) + "\n")

  fig = Figure(figsize=(4.2 * max(len(lrs), 1), 7), layout="constrained")
  axes = fig.subplots(2, max(len(lrs), 1), squeeze=False, sharex=True)
  styles = {0: ("tab:blue", "-"), 1: ("tab:orange", "-")}
  for j, lr in enumerate(lrs):
    top, bottom = axes[0][j], axes[1][j]
    for (arm_lr, seed), (loss, sharp) in curves.items():
      if arm_lr != lr:
        continue
      color, ls = styles.get(seed, ("tab:gray", "-"))
      if loss:
        top.plot(*zip(*loss), color=color, ls=ls, lw=1, label=f"seed {seed}")
      if sharp:
        bottom.plot(*zip(*sharp), color=color, ls=ls, lw=1, marker=".", ms=3,
                    label=f"seed {seed}")
    bottom.axhline(2.0 / lr, color="black", ls="--", lw=1, label=f"2/lr = {2 / lr:.3g}")
    top.set_title(f"step size lr = {lr:g}")
    top.set_ylabel("training loss (nats/token)")
    bottom.set_ylabel("sharpness (top Hessian eigenvalue)")
    bottom.set_xlabel("step (full-batch gradient descent)")
    top.legend(fontsize="small")
    bottom.legend(fontsize="small")
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
  fig.suptitle("Full-batch gradient descent on a fixed 8 x 64-token batch: training loss "
               "(top) and sharpness (bottom)")
  path = os.path.join(sweep_dir, "edge_of_stability.png")
  fig.savefig(path, dpi=110)
  return [csv_path, path]

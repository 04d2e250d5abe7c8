"""GaLore vs AdamW (Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by Gradient
Low-Rank Projection", arXiv 2403.03507).

Question: GaLore projects each block matrix's gradient onto a rank-r subspace (top
singular vectors of the gradient, refreshed every ``galore_update_every`` steps), runs
Adam there and projects the update back, scaled by ``galore_scale``. The paper reports
pretraining loss close to full-rank Adam's with much less optimizer state (LLaMA 60M,
rank 128 of hidden 512: 34.88 vs 34.06 perplexity). At the ablation model's scale, how
much held-out loss does GaLore cost against AdamW at the same tokens, and how much
optimizer state does it save?

    python -m phijax.sweep experiments/galore.py \\
        --workdir=experiments/results/galore --parallel=2
    # smoke: 2 arms (AdamW and GaLore rank 8, seed 0, 20 steps), ~1 min (56 s measured)
    python -m phijax.sweep experiments/galore.py --workdir=runs/galore_quick \\
        --only='optim=(adamw|galore,rank=8,lr=0.008),seed=0' \\
        --config.train.tokens=40960 --config.train.eval_batches=4 \\
        --config.train.final_eval_batches=4 --parallel=2

Measured on 2 CPU cores shared with other jobs (load average 8-10): 151-207 s per arm,
about 18 minutes for the 12 arms at --parallel=2 (12m10s for the first 8, 5m49s for the
last 4); the smoke variant 56 s.

Arms (x seeds {0, 1}): AdamW at LR = 8e-3 (lr_sweep.py's best AdamW LR); GaLore rank 8
and rank 32 at the same 8e-3 (the paper's recipe: Adam's LR, scale 0.25); GaLore rank
FULL_RANK = 128 at 8e-3, a control that compresses nothing (the smaller side of every
block matrix) but keeps GaLore's SVD basis and scale 0.25; GaLore rank 8 and rank 32 at
1.6e-2 (2x, labelled lr=0.016: scale 0.25 shrinks the block matrices' update, so Adam's
LR need not suit GaLore). GaLore's projector is refreshed every UPDATE_EVERY = 20 steps
(at steps 0, 20, 40, 60 of the 80). Adam takes embeddings, head, norms and biases (57%
of the parameters); weight decay 0.1 and clip 1.0 as for AdamW. Model and budget as
lr_sweep.py: hidden 128 (the block matrices are 128 x 128 and 128 x 512, so rank 32 is
a quarter of the smaller side, as the paper's 128 of 512), 2 layers, 2048-token
vocabulary, batch 8 x 256, TOKENS per arm (80 steps), 10 LR-warmup steps, cosine decay
over tokens to 0.1x. Every evaluation (every 20 steps and the final one) reads the same
FINAL_EVAL_BATCHES = 32 held-out batches (65k tokens) in every arm.

``summarize``: per arm, the seed-mean held-out loss, its difference from AdamW's seed
by seed, bits/byte, and optimizer-state bytes per parameter for the whole model and for
the block matrices alone (from the abstract optimizer state of the arm's config, as
the training loop (phijax/train/loop.py) computes the ``opt_state_bytes_per_param`` it
logs; Adam's 8 bytes on the rest are taken out). ``plot``: galore.png, final held-out
loss against the logged bytes per parameter, each arm minus AdamW paired by seed, and
the held-out loss curves.
"""

import math
import os

from phijax import config as base
from phijax.configs import tiny

ALIASES = {"optim.name": "optim", "optim.galore_rank": "rank", "optim.lr": "lr"}
LR = 8e-3  # lr_sweep.py's best AdamW LR for this model and budget
TOKENS = 163_840  # 80 steps of 8 x 256
UPDATE_EVERY = 20  # projector refreshes at steps 0, 20, 40, 60
FINAL_EVAL_BATCHES = 32
FULL_RANK = 128  # the smaller side of every block matrix: GaLore compressing nothing


def get_config(arg=None):
  c = base.small_ablation(tiny.get_config(), tokens=TOKENS, batch_size=8, eval_every=20,
                         final_eval_batches=FINAL_EVAL_BATCHES, log_every=2)
  c.optim.update(lr=LR, galore_update_every=UPDATE_EVERY, galore_scale=0.25)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  # Periodic evals use the final eval's batches, so every eval point is comparable.
  c.train.eval_batches = FINAL_EVAL_BATCHES
  return base.finish(c, arg)


def get_sweep(h):
  galore = lambda rank, lr: {"optim.name": "galore", "optim.galore_rank": rank,
                             "optim.lr": lr}
  arms = [{"optim.name": "adamw"}, galore(8, LR), galore(32, LR),
          galore(FULL_RANK, LR),  # control: full rank (nothing compressed), scale 0.25
          galore(8, 2 * LR), galore(32, 2 * LR)]
  return h.product(arms, h.seeds(2))


# ------------------------------------------------------------------- summary and plot

def _label(r) -> str:
  if r.get("optim") != "galore":
    return f"AdamW lr {r.get('lr') or LR:g}"
  control = " (full rank)" if r.get("rank") == FULL_RANK else ""
  return f"GaLore r{r.get('rank')}{control} lr {r.get('lr'):g}"


def _groups(table):
  """[(label, [finished rows])] in arm order, seeds together."""
  out = {}
  for r in table.rows:
    if r.get("status") == "done" and math.isfinite(r.get("eval_loss", math.nan)):
      out.setdefault(_label(r), []).append(r)
  return list(out.items())


def _final_row(run_dir) -> dict:
  from phijax.sweeps import runs
  _, _, final = runs.split_rows(runs.read_rows(run_dir))
  return final or {}


def state_bytes(r) -> dict:
  """Optimizer-state bytes per parameter of arm ``r``'s config (the experiment's config
  with the arm's optimizer, rank and LR), as the training loop (phijax/train/loop.py)
  computes them from the abstract optimizer state: the whole model and the block
  matrices alone (Adam on the rest is 8 bytes per parameter; its step counters, a few
  bytes, are counted with the rest)."""
  import jax
  import numpy as np
  from flax import linen as nn
  from phijax import model
  from phijax.train import optim

  cfg = get_config()
  cfg.optim.name = r.get("optim") or cfg.optim.name
  if r.get("rank") is not None:
    cfg.optim.galore_rank = int(r["rank"])
  params = nn.unbox(model.abstract_params(cfg.model))
  state = jax.eval_shape(optim.make_direction(cfg.optim).init, params)
  total = sum(int(np.prod(x.shape)) * x.dtype.itemsize
              for x in jax.tree_util.tree_leaves(state))
  mask = jax.tree_util.tree_leaves(optim.block_matrix_mask(params))
  sizes = [int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)]
  block = sum(s for s, m in zip(sizes, mask) if m)
  rest = sum(sizes) - block
  return {"total": total / sum(sizes), "block": (total - 8 * rest) / block,
          "block_share": block / sum(sizes), "params": sum(sizes)}


def summarize(table):
  """Per arm, seed means: held-out loss, minus AdamW (per seed), bits/byte, state bytes."""
  groups = _groups(table)
  adamw = {r["seed"]: r["eval_loss"] for label, rows in groups if label.startswith("AdamW")
           for r in rows}
  rows = []
  for label, members in groups:
    diffs = [r["eval_loss"] - adamw[r["seed"]] for r in members if r["seed"] in adamw]
    sb = state_bytes(members[0])
    rows.append({
        "arm": label, "n": len(members),
        "held-out loss (mean)": sum(r["eval_loss"] for r in members) / len(members),
        "minus AdamW, seed 0 / 1": " / ".join(f"{d:+.3f}" for d in diffs),
        "bits/byte (mean)": sum(r["eval_bpb"] for r in members) / len(members),
        "state bytes/param, whole model": sb["total"],
        "state bytes/param, block matrices": sb["block"]})
  return rows


def plot(table, sweep_dir):
  """galore.png: final held-out loss vs optimizer-state bytes per parameter | each arm
  minus AdamW, paired by seed | held-out loss curves."""
  from matplotlib.figure import Figure
  from phijax.sweeps import runs

  groups = _groups(table)
  colors = ["black", "tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple"]
  fig = Figure(figsize=(19, 7.5), layout="constrained")
  ax, ax3, ax2 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 0.8, 1.1]})
  adamw = {r["seed"]: r["eval_loss"] for label, rows in groups if label.startswith("AdamW")
           for r in rows}
  # The runs' own number (the training loop logs it in the final metrics row).
  xs = [_final_row(os.path.join(sweep_dir, m[0]["arm"])).get(
      "opt_state_bytes_per_param", state_bytes(m[0])["total"]) for _, m in groups]
  for i, ((label, members), color) in enumerate(zip(groups, colors)):
    sb = state_bytes(members[0])
    # Arms with the same state size sit side by side, 0.12 apart.
    same = [j for j, x in enumerate(xs) if abs(x - xs[i]) < 1e-6]
    x = xs[i] + 0.12 * (same.index(i) - (len(same) - 1) / 2)
    losses = [r["eval_loss"] for r in members]
    mean = sum(losses) / len(losses)
    ax.plot([x, x], [min(losses), max(losses)], "-", color=color, linewidth=1, alpha=0.6)
    ax.plot([x] * len(losses), losses, "_", color=color, markersize=14, mew=2)
    ax.plot([x], [mean], "o", color=color, markersize=10,
            label=f"{label}: {xs[i]:.2f} B/param (block matrices {sb['block']:.2f})")
    for r in members:
      if r["seed"] in adamw:
        ax3.bar(i + (0.2 if r["seed"] else -0.2), r["eval_loss"] - adamw[r["seed"]],
                width=0.38, color=color, alpha=1.0 if r["seed"] == 0 else 0.5,
                edgecolor="black", linewidth=0.5)
      _, evals, final = runs.split_rows(runs.read_rows(
          os.path.join(sweep_dir, r["arm"])))
      pts = [(e["tokens"], e["eval_loss"]) for e in evals]
      if final:
        pts.append((final["tokens"], final["eval_loss"]))
      pts = sorted(dict(pts).items())
      ax2.plot([p[0] / 1000 for p in pts], [p[1] for p in pts], marker="o", color=color,
               alpha=0.8, linewidth=1.5, markersize=4,
               linestyle="-" if r["seed"] == 0 else "--",
               label=f"{label}, seed {r['seed']}")
  ax.set(xlabel="optimizer state, bytes per parameter (whole model, float32)",
         ylabel="final held-out loss (nats / token)",
         title="final held-out loss vs optimizer memory\n(dot: seed mean, dashes: seeds 0 and 1)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
  ax3.axhline(0, color="black", linewidth=0.8)
  ax3.set_xticks(range(len(groups)), [
      label.replace("GaLore ", "").replace(" (full rank)", "\nfull rank").replace(" lr", "\nlr")
      for label, _ in groups], fontsize="small")
  ax3.set(ylabel="held-out loss minus AdamW's, same seed (nats / token)",
          title="paired by seed: arm minus AdamW\n(left bar: seed 0, right bar, paler: seed 1)")
  ax3.grid(alpha=0.3, axis="y")
  ax2.set(xlabel="training tokens (thousands)", ylabel="held-out loss (nats / token)",
          title=f"held-out loss during training (the same {FINAL_EVAL_BATCHES} held-out "
                "batches)\n(solid: seed 0, dashed: seed 1)")
  ax2.grid(alpha=0.3)
  ax2.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
  fig.suptitle(f"GaLore vs AdamW, {TOKENS:,} tokens per arm, projector refreshed every "
               f"{UPDATE_EVERY} steps, scale 0.25")
  path = os.path.join(sweep_dir, "galore.png")
  fig.savefig(path, dpi=100)
  return [path]

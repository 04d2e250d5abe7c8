"""muP learning-rate transfer: MiniCPM's "model wind tunnel" (Hu et al. 2024, arXiv
2404.06395; muP: Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466).

Question: under muP (``model.mup=True``: MiniCPM's scale_emb, scale_depth / sqrt(L)
residual branches, logits divided by width_mult, block matrices at init_std /
sqrt(width_mult) and lr / width_mult) does the best AdamW learning rate found at a
small width stay the best at larger widths, while under the standard parametrisation
it moves (usually lower for wider models)?

    python -m phijax.sweep experiments/mup_transfer.py \\
        --workdir=experiments/results/mup_transfer --parallel=2
    # smoke: 2 arms (width 64, standard and muP, one LR), ~1 min
    python -m phijax.sweep experiments/mup_transfer.py --workdir=runs/mup_quick \\
        --only='.*width=64,.*lr=0.008,seed=0' --parallel=2

Measured on 2 CPU cores beside other jobs (load average 4-11): 62 arms, 14-143 s per
arm (about 20 s at width 64 on a quiet machine, half of it start-up and
compilation), 29m45s in all at --parallel=2, in three resumed passes as the grid grew
(18m23s, 6m32s, 4m50s; a quiet machine would take roughly 15-20 minutes).

Arms: width (hidden size) {64, 128, 256} with head_dim 32 (2, 4, 8 heads) and MLP
4 x hidden, 2 layers, a 2048-token vocabulary, x {standard, muP with
mup_dim_model_base = 64, so width_mult = 1, 2, 4} x AdamW peak LR LRS = {2e-3, 4e-3,
8e-3, 1.6e-2, 3.2e-2} (2x apart; 1e-3 added for the standard width 256, whose seed-0
best was at 2e-3, the grid's edge) x seeds {0, 1}.
Every arm: the same TOKENS (STEPS = 48 steps of 8 x 128 tokens, 49,152 tokens), 5
LR-warmup steps, cosine decay over tokens to 0.1x, AdamW b2 0.95, weight decay 0.1
and clip 1.0 (configs/tiny.py's), final held-out loss on the same FINAL_EVAL_BATCHES
= 16 batches (16,384 tokens). At width 64 width_mult is 1, so the two
parametrisations differ only by muP's constant multipliers (embedding output x 12,
residual branches x 1.4 / sqrt(2)).

``summarize``: per (parametrisation, width) the best LR by seed mean and per seed, the
loss there, the vertex of a parabola in log2(LR) through the best LR and its
neighbours (a best LR between grid points) and the seed-mean loss per LR; per
parametrisation the spread of log2(best LR) across widths (grid and fitted) and the
penalty at width 256 of using width 64's best LR.
``plot``: wind_tunnel.png, held-out loss vs LR, one curve per width, standard | muP.
"""

import math
import os

from phijax import config as base
from phijax.configs import tiny

ALIASES = {"model.mup": "mup", "model.hidden_size": "width", "model.num_heads": "heads",
           "model.intermediate_size": "mlp", "optim.lr": "lr"}
WIDTHS = [64, 128, 256]
HEAD_DIM = 32
BASE_WIDTH = 64  # model.mup_dim_model_base: width_mult = width / 64
LRS = [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]  # every (mup, width), both seeds
# ... and one octave lower where seed 0's best was at the grid's low edge (added
# after seed 0 had run).
EXTRA_LRS = {(False, 256): [1e-3]}
SEEDS = [0, 1]
BATCH, SEQ_LEN, STEPS = 8, 128, 48
TOKENS = BATCH * SEQ_LEN * STEPS
FINAL_EVAL_BATCHES = 16


def get_config(arg=None):
  c = base.small_ablation(tiny.get_config(), tokens=TOKENS, batch_size=BATCH,
                         eval_every=STEPS, final_eval_batches=FINAL_EVAL_BATCHES,
                         log_every=2)
  c.data.seq_len = SEQ_LEN
  c.model.mup_dim_model_base = BASE_WIDTH
  c.optim.name = "adamw"
  c.curriculum.lr.update(schedule="cosine", warmup_steps=5, min_ratio=0.1,
                         token_based_decay=True)
  return base.finish(c, arg)


def _width(w):
  return {"model.hidden_size": w, "model.num_heads": w // HEAD_DIM,
          "model.intermediate_size": 4 * w}


def get_sweep(h):
  arms = []
  for seed in SEEDS:  # seed 0 first: it chose EXTRA_LRS
    for mup in (False, True):
      for w in reversed(WIDTHS):  # widest first: the parallel slots fill evenly
        lrs = sorted(LRS + EXTRA_LRS.get((mup, w), []))
        arms += h.product([{"model.mup": mup}], [_width(w)], h.sweep("optim.lr", lrs),
                          h.seeds([seed]))
  return arms


# ------------------------------------------------------------------- summary and plot

PARAMS = [(False, "standard"), (True, "muP")]


def _losses(table, mup, width):
  """{lr: {seed: final held-out loss}} of the finished arms."""
  out = {}
  for r in table.where(mup=mup, width=width):
    loss = r.get("eval_loss")
    if r.get("status") == "done" and isinstance(loss, float) and math.isfinite(loss):
      out.setdefault(r["lr"], {})[r["seed"]] = loss
  return out


def _best(losses, seeds):
  """The LR with the lowest mean over ``seeds``, among the LRs every one of them ran."""
  full = {lr: sum(v[s] for s in seeds) / len(seeds) for lr, v in losses.items()
          if all(s in v for s in seeds)}
  return (min(full, key=full.get), full) if full else (None, full)


def _fitted(curve, best):
  """The vertex of the parabola in log2(LR) through the best LR and its two grid
  neighbours: a best LR between grid points (None at the grid's edge)."""
  lrs = sorted(curve)
  i = lrs.index(best)
  if i == 0 or i == len(lrs) - 1:
    return None
  (x0, x1, _), (y0, y1, y2) = ([math.log2(lr) for lr in lrs[i - 1:i + 2]],
                                [curve[lr] for lr in lrs[i - 1:i + 2]])
  h = x1 - x0  # the grid is 2x apart: h = x2 - x1 too
  curv = y0 - 2 * y1 + y2
  return 2 ** (x1 + h * (y0 - y2) / (2 * curv)) if curv > 0 else None


def _both(table):
  return [s for s in table.values("seed")]


def summarize(table):
  """Per (parametrisation, width): best LR per seed and by seed mean, and its loss; per
  parametrisation: spread of log2(best LR) across widths and the penalty at the widest
  width of using the narrowest width's best LR."""
  rows = []
  seeds = _both(table)
  for mup, label in PARAMS:
    bests, fits = {}, {}
    for w in table.values("width"):
      losses = _losses(table, mup, w)
      if not losses:
        continue
      b0, by0 = _best(losses, [0])
      b1, _ = _best(losses, [1])
      bm, bymean = _best(losses, seeds)
      bests[w] = (bm or b0, bymean if bm else by0)
      fit = _fitted(bymean, bm) if bm else None
      fits[w] = fit
      rows.append({
          "parametrisation": label, "width": w,
          "best LR, seed mean": f"{bm:g}" if bm else "-",
          "held-out loss there (seed mean)": bymean[bm] if bm else math.nan,
          "best LR, seed 0 / seed 1": f"{b0:g} / {b1:g}" if b1 else f"{b0:g} / -",
          "fitted best LR (parabola, seed mean)": f"{fit:.2g}" if fit else "-",
          "held-out loss per LR, low -> high (seed mean)":
              " / ".join(f"{bymean[lr]:.3f}" for lr in sorted(bymean))})
    if len(bests) > 1:
      lo, hi = min(bests), max(bests)
      logs = [math.log2(b) for b, _ in bests.values()]
      flogs = [math.log2(f) for f in fits.values() if f]
      (blo, _), (bhi, curve_hi) = bests[lo], bests[hi]
      losses_hi = _losses(table, mup, hi)
      pen = curve_hi[blo] - curve_hi[bhi] if blo in curve_hi else math.nan
      per_seed = []
      for seed in seeds:  # each seed against its own best LR at the widest width
        _, by_s = _best(losses_hi, [seed])
        if blo in by_s:
          per_seed.append(f"seed {seed}: {by_s[blo] - min(by_s.values()):+.3f}")
      rows.append({
          "parametrisation": label, "width": "transfer",
          "best LR, seed mean": " -> ".join(f"{bests[w][0]:g}" for w in sorted(bests)),
          "held-out loss there (seed mean)": math.nan,
          "best LR, seed 0 / seed 1": "",
          "fitted best LR (parabola, seed mean)": " -> ".join(
              f"{fits[w]:.2g}" if fits[w] else "-" for w in sorted(fits)),
          "held-out loss per LR, low -> high (seed mean)":
              f"spread of log2(best LR): {max(logs) - min(logs):.0f} octave(s)"
              + (f" (fitted: {max(flogs) - min(flogs):.2f})" if len(flogs) == len(fits) else "")
              + f"; at width "
              f"{hi}, width {lo}'s best LR ({blo:g}) costs {pen:+.3f} nats (seed mean; "
              + ", ".join(per_seed) + ")"})
  return rows


def plot(table, sweep_dir):
  """wind_tunnel.png: held-out loss vs LR per width, standard | muP."""
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D

  colors = {64: "tab:blue", 128: "tab:orange", 256: "tab:green"}
  seeds = _both(table)
  fig = Figure(figsize=(13, 5.6), layout="constrained")
  axes = fig.subplots(1, 2, sharey=True)
  for ax, (mup, label) in zip(axes, PARAMS):
    for w in table.values("width"):
      losses = _losses(table, mup, w)
      if not losses:
        continue
      color = colors.get(w)
      best, mean = _best(losses, seeds)
      lrs = sorted(mean)
      ax.plot(lrs, [mean[x] for x in lrs], "o-", color=color, linewidth=2, markersize=5,
              label=f"width {w}" + (f" (width_mult {w // BASE_WIDTH})" if mup else ""))
      for lr, by_seed in losses.items():
        ax.plot([lr] * len(by_seed), list(by_seed.values()), ".", color=color, alpha=0.4,
                markersize=7)
      if best is not None:
        ax.plot([best], [mean[best]], "*", color=color, markersize=18,
                markeredgecolor="black", zorder=5)
    ax.set_xscale("log", base=2)
    ticks = sorted(set(LRS).union(*EXTRA_LRS.values()))
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.minorticks_off()
    ax.set(title=label + (f" (MiniCPM's, dim_model_base {BASE_WIDTH})" if mup
                          else " parametrisation"),
           xlabel="AdamW peak learning rate (log scale)")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="gray", marker=".", linestyle="", alpha=0.5,
                       markersize=7, label="single seeds"),
                Line2D([], [], color="gray", marker="*", markersize=14, linestyle="",
                       markeredgecolor="black", label="best LR (seed mean)")]
    ax.legend(handles=handles, fontsize="small", loc="upper center")
  axes[0].set_ylabel(f"held-out loss after {STEPS} steps, {TOKENS // 1024}k tokens "
                     "(nats / token)")
  fig.suptitle("Learning-rate transfer across width (2 layers, head_dim 32, AdamW; "
               f"lines: mean of seeds {', '.join(map(str, seeds))})")
  path = os.path.join(sweep_dir, "wind_tunnel.png")
  fig.savefig(path, dpi=100)
  return [path]

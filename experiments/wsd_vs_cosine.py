"""Warmup-stable-decay (WSD) vs cosine at equal tokens, and the WSD "cosine envelope"
(Hu et al. 2024, "MiniCPM", arXiv 2404.06395, section 4; Hägele et al. 2024, "Scaling
Laws and Compute-Optimal Training Beyond Fixed Training Durations", arXiv 2405.18392).

Questions: (1) at the same token budget and peak LR, does WSD with an exponential or a
linear decay over the last DECAY_FRACTION of the run reach the held-out loss of cosine
decay? (2) MiniCPM's property: decays branched off one WSD run's stable phase at
several points each end near a cosine run whose whole budget ends there, so one WSD
run traces the curve of cosine runs tuned to every shorter budget.

    python -m phijax.sweep experiments/wsd_vs_cosine.py \\
        --workdir=experiments/results/wsd_vs_cosine --parallel=2
    # smoke: 3 arms of 40 steps, ~1.5 min
    python -m phijax.sweep experiments/wsd_vs_cosine.py --workdir=runs/wsd_quick \\
        --only='budget=81920,.*seed=0' --parallel=2

Expected on 2 CPU cores: 30 arms, ~21 minutes at --parallel=2 on an idle machine (an
estimate from the arms that ran at low load: 33-35 s per 40-step arm, 110-116 s per
160-step arm); measured: 52 minutes beside other jobs (load average 5-10).
Arms: schedule {cosine, WSD-exp, WSD-linear} x budget {1/4, 2/4, 3/4, 4/4 of the full
budget: 40, 80, 120, 160 steps of 8 x 256 tokens} x seeds {0, 1}, and DIAGNOSTICS at
the full budget x seeds {0, 1}: WSD-exp decaying over the last half, and cosine and
WSD-exp at half the peak LR. Every arm: Muon (the default optimizer of
configs/tiny.py) at PEAK_LR (the best Muon LR of experiments/lr_sweep.py), 10
LR-warmup steps, decay over tokens to 0.1x peak; WSD decays over the last
DECAY_FRACTION of the arm's own budget (Hägele et al.'s 20% cooldown; MiniCPM's is
~10%, 4 steps at the shortest budget here). The model is experiments/lr_sweep.py's
(hidden 128, 2 layers, 2048-token vocabulary).

Branching: a WSD arm with a shorter budget is the long WSD run's branch. Training on
CPU is deterministic and the data order depends only on the seed, so a WSD arm of
budget T trains exactly the steps of the full-budget WSD run (same warmup, same
stable LR) until its own decay starts at (1 - DECAY_FRACTION) * T; from there it
decays, as a branch resumed from the stable run's checkpoint with its optimizer state
would. It costs the prefix's compute again but needs no checkpoint copying, and
``summarize`` checks the claim: the training losses of the shared prefix must agree
between the WSD arms of one seed. The cosine arms at the shorter budgets are the
envelope's reference.

Every evaluation (every EVAL_EVERY steps and the final one) reads the same
EVAL_BATCHES held-out batches, so the long runs' periodic evaluations at 40, 80 and
120 steps compare directly with the shorter arms' final ones. ``plot`` adds
envelope.png and training.png to the runner's results.
"""

import math
import os

from phijax import config as base
from phijax.configs import tiny

ALIASES = {"curriculum.lr.schedule": "schedule", "curriculum.lr.wsd_decay": "decay",
           "train.tokens": "budget", "curriculum.lr.decay_fraction": "decay_fraction",
           "optim.lr": "lr"}
STEP_TOKENS = 8 * 256
FULL_STEPS = 160
BUDGETS = [FULL_STEPS * STEP_TOKENS * k // 4 for k in (1, 2, 3, 4)]  # tokens per arm
PEAK_LR = 2.4e-2
DECAY_FRACTION = 0.2
EVAL_EVERY = 40
EVAL_BATCHES = 32
# Diagnostics at the full budget, added after the main arms: WSD-exp behind cosine
# there, is its decay too short or its peak LR too high for a long stable phase?
DIAGNOSTICS = [("wsd-exp", {"curriculum.lr.decay_fraction": 0.5}),
               ("cosine", {"optim.lr": PEAK_LR / 2}), ("wsd-exp", {"optim.lr": PEAK_LR / 2})]
SCHEDULES = [("cosine", {"curriculum.lr.schedule": "cosine"}),
             ("wsd-exp", {"curriculum.lr.schedule": "wsd", "curriculum.lr.wsd_decay": "exp"}),
             ("wsd-linear", {"curriculum.lr.schedule": "wsd",
                             "curriculum.lr.wsd_decay": "linear"})]


def get_config(arg=None):
  c = base.small_ablation(tiny.get_config(), tokens=BUDGETS[-1], batch_size=8,
                         eval_every=EVAL_EVERY, final_eval_batches=EVAL_BATCHES)
  c.train.eval_batches = EVAL_BATCHES  # periodic evals on the final eval's rows
  c.optim.lr = PEAK_LR
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         decay_fraction=DECAY_FRACTION, wsd_decay="exp",
                         token_based_decay=True)
  return base.finish(c, arg)


def get_sweep(h):
  arms = []
  for tokens in reversed(BUDGETS):  # longest first: the parallel slots fill evenly
    for _, overrides in SCHEDULES:
      arms += h.product([dict(overrides, **{"train.tokens": tokens})], h.seeds(2))
  schedules = dict(SCHEDULES)
  for label, extra in DIAGNOSTICS:
    arms += h.product([dict(schedules[label], **{"train.tokens": BUDGETS[-1]}, **extra)],
                      h.seeds(2))
  return arms


# ------------------------------------------------------------------- summary and plot

ARMS = {"cosine": dict(schedule="cosine"), "wsd-exp": dict(schedule="wsd", decay="exp"),
        "wsd-linear": dict(schedule="wsd", decay="linear")}
COLORS = {"cosine": "tab:blue", "wsd-exp": "tab:orange", "wsd-linear": "tab:green"}


def _seeds(table):
  return table.values("seed")


def _row(table, label, tokens, seed, **extra):
  """The finished arm; ``extra``: a diagnostic's fields (lr=, decay_fraction=), which
  the main arms do not set."""
  rows = [r for r in table.where(budget=tokens, seed=seed, **ARMS[label])
          if r["status"] == "done" and all(r.get(f) == extra.get(f)
                                           for f in ("lr", "decay_fraction"))]
  return rows[0] if rows else None


def _final(table, label, tokens, seed, **extra):
  r = _row(table, label, tokens, seed, **extra)
  return r["eval_loss"] if r else math.nan


def _along_full(table, label, tokens, seed):
  """The full-budget run's held-out loss after ``tokens`` (a periodic evaluation on
  the final evaluation's rows, or the final one at the full budget)."""
  r = _row(table, label, BUDGETS[-1], seed)
  if r is None:
    return math.nan
  if tokens == BUDGETS[-1]:
    return r["eval_loss"]
  at = dict(zip(*r["eval_curve"]))
  return at.get(tokens, math.nan)


def _stats(values):
  from phijax.sweeps import tables
  return tables.mean_std(values)


def _pm(values, paired=False):
  """``mean ± std (n)``; paired differences also list each seed's value."""
  mean, std, n = _stats(values)
  if n == 0:
    return "-"
  text = f"{mean:+.4f}" if paired else f"{mean:.4f}"
  text += f" ± {std:.4f}" if n > 1 else ""
  if paired:
    text += " (" + ", ".join(f"{v:+.3f}" for v in values if math.isfinite(v)) + ")"
  return text + ("" if paired else f" (n={n})")


def _prefix_check(table):
  """Shared-prefix check of the branch construction: per seed, every WSD arm's training
  losses against the full-budget WSD-exp run's over the steps both train at the peak
  LR with the same updates behind them. Returns (pairs, steps compared, max |diff|)."""
  pairs = steps = 0
  worst = 0.0
  for seed in _seeds(table):
    ref = _row(table, "wsd-exp", BUDGETS[-1], seed)
    if ref is None:
      continue
    ref_loss = dict(zip(*ref["curve"]))
    for label in ("wsd-exp", "wsd-linear"):
      for tokens in BUDGETS:
        r = _row(table, label, tokens, seed)
        if r is None or r is ref:
          continue
        # Both arms are at the peak LR until the earlier decay starts; the loss logged
        # after a step reflects the updates before it.
        shared = (1 - DECAY_FRACTION) * min(tokens, BUDGETS[-1])
        pairs += 1
        for t, loss in zip(*r["curve"]):
          if t <= shared and t in ref_loss:
            steps += 1
            worst = max(worst, abs(loss - ref_loss[t]))
  return pairs, steps, worst


def summarize(table):
  """(1) Per budget: held-out loss of cosine, WSD-exp and WSD-linear, and the per-seed
  differences to cosine. (2) The envelope: the full-budget WSD run before its decay at
  each shorter budget, the branches decayed there, and the cosine runs of that budget.
  (3) The check that the branches share the long run's stable prefix."""
  from phijax.sweeps.tables import summary_table
  seeds = _seeds(table)
  rows1, rows2 = [], []
  for tokens in BUDGETS:
    finals = {label: [_final(table, label, tokens, s) for s in seeds] for label in ARMS}
    diff = {label: [a - b for a, b in zip(finals[label], finals["cosine"])]
            for label in ("wsd-exp", "wsd-linear")}
    rows1.append({
        "tokens": f"{tokens:,}", "steps": tokens // STEP_TOKENS,
        "cosine": _pm(finals["cosine"]), "WSD-exp": _pm(finals["wsd-exp"]),
        "WSD-linear": _pm(finals["wsd-linear"]),
        "WSD-exp - cosine (per seed)": _pm(diff["wsd-exp"], paired=True),
        "WSD-linear - cosine (per seed)": _pm(diff["wsd-linear"], paired=True)})
    if tokens == BUDGETS[-1]:
      continue
    stable = [_along_full(table, "wsd-exp", tokens, s) for s in seeds]
    rows2.append({
        "tokens": f"{tokens:,}",
        "full WSD run here (no decay yet)": _pm(stable),
        "WSD-exp branch": _pm(finals["wsd-exp"]),
        "WSD-linear branch": _pm(finals["wsd-linear"]),
        "cosine of this budget": _pm(finals["cosine"]),
        "full cosine run here": _pm([_along_full(table, "cosine", tokens, s)
                                     for s in seeds]),
        "decay gain, exp (stable - branch)": _pm(
            [a - b for a, b in zip(stable, finals["wsd-exp"])], paired=True)})
  full, half = BUDGETS[-1], PEAK_LR / 2
  rows3 = []
  for label, text, extra, ref in (
      ("cosine", f"cosine, peak LR {PEAK_LR:g}", {}, {}),
      ("wsd-exp", f"WSD-exp, decay {DECAY_FRACTION:g}, peak LR {PEAK_LR:g}", {}, {}),
      ("wsd-exp", f"WSD-exp, decay 0.5, peak LR {PEAK_LR:g}", dict(decay_fraction=0.5), {}),
      ("cosine", f"cosine, peak LR {half:g}", dict(lr=half), dict(lr=half)),
      ("wsd-exp", f"WSD-exp, decay {DECAY_FRACTION:g}, peak LR {half:g}", dict(lr=half),
       dict(lr=half))):
    vals = [_final(table, label, full, s, **extra) for s in seeds]
    cos = [_final(table, "cosine", full, s, **ref) for s in seeds]
    rows3.append({"arm (full budget)": text, "held-out loss": _pm(vals),
                  "minus cosine at the same peak LR (per seed)":
                      "-" if label == "cosine" and extra == ref else
                      _pm([a - b for a, b in zip(vals, cos)], paired=True),
                  f"minus cosine at {PEAK_LR:g} (per seed)":
                      "-" if label == "cosine" and not extra else
                      _pm([a - _final(table, "cosine", full, s) for a, s in zip(vals, seeds)],
                          paired=True)})
  pairs, steps, worst = _prefix_check(table)
  lin_stable = [_along_full(table, "wsd-linear", t, s) for t in BUDGETS[:-1] for s in seeds]
  exp_stable = [_along_full(table, "wsd-exp", t, s) for t in BUDGETS[:-1] for s in seeds]
  evals_equal = all(a == b for a, b in zip(lin_stable, exp_stable)
                    if math.isfinite(a) and math.isfinite(b))
  return "\n\n".join([
      f"Held-out loss at equal tokens (nats/token; mean ± sample std over seeds, n; "
      f"differences: mean ± std of the per-seed differences, each seed in brackets). "
      f"WSD decays over the last {DECAY_FRACTION:g} of its own budget:",
      summary_table(rows1),
      "The envelope: the full-budget WSD run evaluated along its stable phase (the "
      "periodic evaluations, same rows as every final one), the branches decayed at "
      "that budget, the cosine run whose whole budget ends there, and the full-budget "
      "cosine run passing through the same point:",
      summary_table(rows2),
      f"Diagnostics at the full budget ({full:,} tokens): a longer WSD decay (the last "
      f"half of the run) and both schedules at half the peak LR:",
      summary_table(rows3),
      f"Shared-prefix check (branches = the long run until their decay): {pairs} WSD "
      f"arms compared with the full-budget WSD-exp run of their seed over {steps} "
      f"step losses of their shared stable prefix; max |difference| = {worst:.3g}"
      + (" (bit-identical)." if pairs and worst == 0 else ".")
      + (" The full-budget WSD-exp and WSD-linear runs' periodic evaluations before "
         "their decay are equal: " + ("yes." if evals_equal else "NO.")),
      "Plots of this experiment: `envelope.png` (left: final held-out loss against the "
      "budget, with the full-budget runs' evaluations along the way; middle: each WSD "
      "arm minus the cosine arm of the same budget and seed; right: the learning rates) "
      "and `training.png` (the full-budget arms' training loss; every budget's arms "
      "minus the full-budget WSD-exp run on the same batches). `curves.png` holds every "
      "arm but is crowded (15 groups)."])


def plot(table, sweep_dir):
  """envelope.png: the envelope, the paired differences, the LR schedules."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import EngFormatter
  from phijax.sweeps import runs

  seeds = _seeds(table)
  names = {"cosine": "cosine", "wsd-exp": "WSD, exp decay", "wsd-linear":
           "WSD, linear decay"}
  markers = {"cosine": "o", "wsd-exp": "s", "wsd-linear": "^"}
  fig = Figure(figsize=(18, 5.6), layout="constrained")
  ax_env, ax_diff, ax_lr = fig.subplots(1, 3)
  for label in ARMS:
    c = COLORS[label]
    per_seed = [[_final(table, label, t, s) for t in BUDGETS] for s in seeds]
    means = [_stats(col)[0] for col in zip(*per_seed)]
    ax_env.plot(BUDGETS, means, markers[label] + "-", color=c, linewidth=2,
                markersize=7, label=f"{names[label]}: the run of each budget, at its end")
    for vals in per_seed:
      ax_env.plot(BUDGETS, vals, markers[label], color=c, alpha=0.35, markersize=4)
  for label, style, text in (
      ("wsd-exp", "k--", "full-budget WSD run, before its decay (stable LR)"),
      ("cosine", ":", "full-budget cosine run along the way")):
    xs = BUDGETS[:-1] if label == "wsd-exp" else BUDGETS
    means = [_stats([_along_full(table, label, t, s) for s in seeds])[0] for t in xs]
    kw = dict(color="navy") if label == "cosine" else {}
    ax_env.plot(xs, means, style, marker="x", markersize=8, linewidth=1.5, label=text,
                **kw)
  ax_env.set(title="held-out loss vs budget (lines: seed mean; small marks: seeds)",
             xlabel="tokens", ylabel="held-out loss (nats / token)")
  ax_env.legend(fontsize="small", loc="upper right")

  ax_diff.axhline(0, color=COLORS["cosine"], linewidth=1.5,
                  label="cosine run of the same budget and seed")
  for label in ("wsd-exp", "wsd-linear"):
    c = COLORS[label]
    per_seed = [[_final(table, label, t, s) - _final(table, "cosine", t, s)
                 for t in BUDGETS] for s in seeds]
    means = [_stats(col)[0] for col in zip(*per_seed)]
    ax_diff.plot(BUDGETS, means, markers[label] + "-", color=c, linewidth=2,
                 markersize=7, label=f"{names[label]} (seed mean)")
    for seed, vals in zip(seeds, per_seed):
      ax_diff.plot(BUDGETS, vals, markers[label], color=c, alpha=0.35, markersize=5)
  full, half = BUDGETS[-1], PEAK_LR / 2
  for extra, ref, marker, color, text in (
      (dict(decay_fraction=0.5), {}, "D", "tab:red", "WSD-exp decaying over the last half"),
      (dict(lr=half), dict(lr=half), "P", "tab:purple",
       f"WSD-exp minus cosine, both at peak LR {half:g}")):
    vals = [_final(table, "wsd-exp", full, s, **extra) - _final(table, "cosine", full, s, **ref)
            for s in seeds]
    mean = _stats(vals)[0]
    if math.isfinite(mean):
      ax_diff.plot([full], [mean], marker, color=color, markersize=9,
                   label=f"{text} (diagnostic; seed mean)")
      ax_diff.plot([full] * len(vals), vals, marker, color=color, alpha=0.35, markersize=5)
  ax_diff.set(title="WSD minus cosine at equal tokens (small marks: seeds)",
              xlabel="tokens (budget of the run)",
              ylabel="held-out loss difference (nats / token)")
  ax_diff.legend(fontsize="small", loc="best")

  styles = {"cosine": "-", "wsd-exp": "--", "wsd-linear": ":"}
  for label in ARMS:
    for i, tokens in enumerate(BUDGETS):
      r = _row(table, label, tokens, seeds[0]) if seeds else None
      if r is None:
        continue
      train, _, _ = runs.split_rows(runs.read_rows(os.path.join(sweep_dir, r["arm"])))
      # A step's LR belongs to the tokens before it (the logged tokens are after it).
      ax_lr.plot([x["tokens"] - STEP_TOKENS for x in train], [x["lr"] for x in train],
                 styles[label], color=COLORS[label], linewidth=1.6,
                 label=names[label] if i == 0 else None)
  ax_lr.set(title="learning rate of the main arms (one line per budget)", xlabel="tokens",
            ylabel="learning rate")
  ax_lr.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
  for ax in (ax_env, ax_diff, ax_lr):
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.secondary_xaxis("top", functions=(lambda t: t / STEP_TOKENS,
                                         lambda n: n * STEP_TOKENS)).set_xlabel("steps")
  path = os.path.join(sweep_dir, "envelope.png")
  fig.savefig(path, dpi=100)
  return [path, _plot_training(table, sweep_dir)]


def _mean_ema(rows, minus=None):
  """The seeds' mean training loss, smoothed as in curves.png, on their common steps;
  ``minus``: each seed's rows to subtract first (the same batches, so a paired
  difference with little noise)."""
  import numpy as np
  from phijax.sweeps import runs
  curves = []
  for i, r in enumerate(rows):
    if r is None or (minus is not None and minus[i] is None):
      continue
    t, v = r["curve"]
    if minus is not None:
      ref = dict(zip(*minus[i]["curve"]))
      t, v = zip(*[(x, y - ref[x]) for x, y in zip(t, v) if x in ref])
    curves.append((list(t), runs.ema(v)))
  if not curves:
    return [], []
  n = min(len(t) for t, _ in curves)
  return curves[0][0][:n], np.mean([v[:n] for _, v in curves], axis=0)


def _plot_training(table, sweep_dir):
  """training.png: the full-budget arms' training loss, and every budget's cosine and
  WSD-exp arm relative to the full-budget WSD-exp run on the same batches (curves.png
  holds all arms, but crowded)."""
  from matplotlib import colormaps
  from matplotlib.figure import Figure
  from matplotlib.ticker import EngFormatter

  seeds = _seeds(table)
  window = 1024 * 256  # data.shuffle_rows rows of data.seq_len tokens
  fig = Figure(figsize=(15, 6.4), layout="constrained")
  ax_full, ax_rel = fig.subplots(1, 2)
  full, half = BUDGETS[-1], PEAK_LR / 2
  for label, extra, style, color, text in (
      ("cosine", {}, "-", COLORS["cosine"], f"cosine, peak LR {PEAK_LR:g}"),
      ("wsd-exp", {}, "-", COLORS["wsd-exp"],
       f"WSD, exp decay over the last {DECAY_FRACTION:g}"),
      ("wsd-linear", {}, "-", COLORS["wsd-linear"],
       f"WSD, linear decay over the last {DECAY_FRACTION:g}"),
      ("wsd-exp", dict(decay_fraction=0.5), "--", "tab:red",
       "WSD, exp decay over the last 0.5 (diagnostic)"),
      ("cosine", dict(lr=half), "--", "navy", f"cosine, peak LR {half:g} (diagnostic)"),
      ("wsd-exp", dict(lr=half), "--", "tab:purple",
       f"WSD, exp decay over the last {DECAY_FRACTION:g}, peak LR {half:g} (diagnostic)")):
    t, v = _mean_ema([_row(table, label, full, s, **extra) for s in seeds])
    ax_full.plot(t, v, style, color=color, linewidth=1.6, label=text)
  ax_full.set(title=f"full-budget arms: training loss (EMA 0.1, mean of {len(seeds)} seeds)",
              xlabel="tokens", ylabel="training loss (nats / token)")
  ax_full.set_xlim(40_000, full * 1.02)
  ax_full.set_ylim(3.6, 5.6)
  stable = [_row(table, "wsd-exp", full, s) for s in seeds]
  shades = {"cosine": colormaps["Blues"], "wsd-exp": colormaps["Oranges"]}
  for label in ("wsd-exp", "cosine"):
    for i, tokens in enumerate(BUDGETS):
      if label == "wsd-exp" and tokens == full:
        continue  # the reference itself
      t, v = _mean_ema([_row(table, label, tokens, s) for s in seeds], minus=stable)
      name = "cosine" if label == "cosine" else "WSD-exp branch"
      ax_rel.plot(t, v, "-", color=shades[label](0.45 + 0.55 * i / (len(BUDGETS) - 1)),
                  linewidth=1.5, label=f"{name}, {tokens // STEP_TOKENS} steps")
  ax_rel.axhline(0, color="black", linewidth=1, linestyle="--",
                 label="full-budget WSD-exp run (stable LR until step "
                       f"{round((1 - DECAY_FRACTION) * full / STEP_TOKENS)})")
  ax_rel.set(title="training loss minus the full-budget WSD-exp run's, on the same batches"
                   f"\n(EMA 0.1, mean of {len(seeds)} seeds; darker: longer budget)",
             xlabel="tokens", ylabel="training loss difference (nats / token)")
  ax_rel.set_xlim(0, full * 1.02)
  for ax in (ax_full, ax_rel):
    ax.axvline(window, color="gray", linewidth=1, linestyle=":")
    ax.text(window, 0.98, "new row-shuffle window \n(unseen documents) ", color="gray",
            fontsize="small", va="top", ha="right", transform=ax.get_xaxis_transform())
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.secondary_xaxis("top", functions=(lambda x: x / STEP_TOKENS,
                                         lambda n: n * STEP_TOKENS)).set_xlabel("steps")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
  path = os.path.join(sweep_dir, "training.png")
  fig.savefig(path, dpi=100)
  return path

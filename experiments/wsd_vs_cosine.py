"""Warmup-stable-decay (WSD) vs cosine at equal tokens, and the WSD "cosine envelope"
(Hu et al. 2024, "MiniCPM", arXiv 2404.06395, section 4; Hägele et al. 2024, arXiv
2405.18392). (1) At the same budget and peak LR, does WSD with a short exponential or
linear decay reach cosine's held-out loss? (2) MiniCPM's envelope: decays branched off
one WSD run's stable phase land on the cosine run whose whole budget ends there.

    python -m phijax.sweep experiments/wsd_vs_cosine.py --workdir=runs/wsd --parallel=2
    # smoke: 3 arms of 40 steps
    python -m phijax.sweep experiments/wsd_vs_cosine.py --workdir=runs/wsd_quick \\
        --only='budget=81920,seed=0' --parallel=2

Arms: schedule {cosine, WSD-exp, WSD-linear} x {40, 80, 120, 160 steps of 8 x 256} x
seeds {0, 1, 2}, and diagnostics at 160 steps x seeds: WSD-exp decaying over the last
half; cosine and WSD-exp at half the peak LR (45 arms). lr_sweep.py's model and best Muon
LR, 10 warmup steps, decay over tokens to 0.1x; WSD decays over the last 20% of the arm's
own budget (Hägele et al.'s). CPU training is deterministic and the data order depends
only on the seed, so the T-step WSD arm is the 160-step WSD run's branch (same steps and
optimizer state until its decay starts). Every evaluation (every 40 steps, and the final
one) reads the same held-out batches: the 160-step runs' ``loss@T`` (EVALS) compare
directly with the T-step arms' final loss.
"""

import os

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps import runs
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

ALIASES = {"curriculum.lr.schedule": "schedule", "curriculum.lr.wsd_decay": "decay",
           "train.tokens": "budget", "curriculum.lr.decay_fraction": "decay_fraction",
           "optim.lr": "lr"}
STEP_TOKENS = 8 * 256
STEPS = [40, 80, 120, 160]  # budgets, and where the long runs evaluate
BUDGETS = [s * STEP_TOKENS for s in STEPS]
PEAK_LR, EVAL_BATCHES = 2.4e-2, 32
SCHEDULES = {"cosine": {"curriculum.lr.schedule": "cosine"},
             "wsd-exp": {"curriculum.lr.schedule": "wsd", "curriculum.lr.wsd_decay": "exp"},
             "wsd-linear": {"curriculum.lr.schedule": "wsd",
                            "curriculum.lr.wsd_decay": "linear"}}
DIAGNOSTICS = [("wsd-exp", {"curriculum.lr.decay_fraction": 0.5}),
               ("cosine", {"optim.lr": PEAK_LR / 2}), ("wsd-exp", {"optim.lr": PEAK_LR / 2})]


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=BUDGETS[-1], batch_size=8,
                          eval_every=STEPS[0], final_eval_batches=EVAL_BATCHES)
  c.train.eval_batches = EVAL_BATCHES  # periodic evals on the final eval's rows
  c.optim.lr = PEAK_LR
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         decay_fraction=0.2, wsd_decay="exp", token_based_decay=True)
  return base.finish(c, arg)


def get_sweep(h):
  arms = [dict(s, **{"train.tokens": t}) for t in reversed(BUDGETS) for s in SCHEDULES.values()]
  arms[3:3] = [dict(SCHEDULES[label], **{"train.tokens": BUDGETS[-1]}, **x)
               for label, x in DIAGNOSTICS]  # the long arms first: the slots fill evenly
  return h.product(arms, h.seeds(3))


def _loss_at(arm_dir):
  """``loss@STEP``: held-out loss after STEP steps (periodic evaluations and the final)."""
  _, evals, final = runs.split_rows(runs.read_rows(arm_dir))
  return {f"loss@{r['step']}": r["eval_loss"] for r in evals + [final or {}] if r.get("step")}


EVALS = [ArmEval("along", fn=_loss_at, columns={f"loss@{s}": None for s in STEPS})]
PLOTS = ("curves",)  # envelope.png shows final.png's loss-vs-budget with the runs along it


def arm(label, steps=STEPS[-1], **diagnostic):
  """A comparison's selector: the arm ``label`` of ``steps``, no diagnostic unless given."""
  return {**{ALIASES[k]: v for k, v in SCHEDULES[label].items()}, "lr": None,
          "budget": steps * STEP_TOKENS, "decay_fraction": None, **diagnostic}


# "Reaches cosine" as claim="lower": refuted = reliably worse, inconclusive = a match.
# A WSD arm shorter than 160 steps is the 160-step run's decayed branch: the envelope.
COMPARISONS = [
    *[Comparison(f"{s} steps: {w} reaches cosine", metric="eval_loss", claim="lower",
                 arm=arm(w, s), control=arm("cosine", s))
      for s in STEPS for w in ("wsd-exp", "wsd-linear")],
    # MiniCPM's premise: a cosine run tuned to T beats a longer one passing through T ...
    *[Comparison(f"{s} steps: the 160-step cosine run is worse there than the {s}-step one",
                 metric=f"loss@{s}", claim="higher", arm=arm("cosine"),
                 control=arm("cosine", s)) for s in STEPS[:-1]],
    # ... and decaying the stable WSD run at T gains what the stable phase lacks.
    *[Comparison(f"{s} steps: the decayed branch beats the 160-step WSD run's stable phase",
                 metric=f"loss@{s}", claim="lower", arm=arm("wsd-exp", s),
                 control=arm("wsd-exp")) for s in STEPS[:-1]],
    # Diagnostics of a 160-step gap: is the decay too short, or the peak LR too high?
    Comparison("160 steps: WSD-exp decaying over the last half reaches cosine",
               metric="eval_loss", claim="lower", arm=arm("wsd-exp", decay_fraction=0.5),
               control=arm("cosine")),
    Comparison("160 steps, half the peak LR: WSD-exp reaches cosine", metric="eval_loss",
               claim="lower", arm=arm("wsd-exp", lr=PEAK_LR / 2),
               control=arm("cosine", lr=PEAK_LR / 2)),
]


def plot(table, sweep_dir):
  """envelope.png: per schedule, each budget's arm at its end and the 160-step run
  along the way (seed means)."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(7.5, 5), layout="constrained")
  ax = fig.subplots()
  for label, color in zip(SCHEDULES, ("tab:blue", "tab:orange", "tab:green")):
    ax.plot(STEPS, [table.mean("eval_loss", **arm(label, s)) for s in STEPS], "o-",
            color=color, label=f"{label}: the run of each budget, at its end")
    ax.plot(STEPS, [table.mean(f"loss@{s}", **arm(label)) for s in STEPS], "x--",
            color=color, label=f"{label}: the 160-step run along the way")
  ax.set(xlabel="steps of 8 x 256 tokens", ylabel="held-out loss (nats/token, seed mean)",
         title="WSD branches vs cosine runs of each budget")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.savefig(path := os.path.join(sweep_dir, "envelope.png"), dpi=100)
  return [path]

"""Sequence-length warmup where the no-warmup baseline is unstable: at a harsh setting
(AdamW at a high peak LR, no gradient clipping, b2=0.99, 0 or 10 LR-warmup steps) does
warming up the sequence length keep a small phi model stable, and what does it do to
held-out loss at equal tokens? (Li, Zhang & He 2022, "The Stability-Efficiency Dilemma",
arXiv 2108.06084.) experiments/seq_warmup.py found nothing unstable without warmup
(clip 1.0, 10 LR-warmup steps, LR up to 1e-1), so this file removes those safeguards.

    python -m phijax.sweep experiments/seq_warmup_stability.py \\
        --workdir=experiments/results/seq_warmup_stability --parallel=2

Expected on 2 CPU cores, idle: 36 arms, ~11 minutes at --parallel=2 (33-51 s per arm).
Arms (SETTINGS): AdamW with 0 LR-warmup steps at peak LR {3e-2, 1e-1, 3e-1} and with 10
LR-warmup steps at {3e-1, 1.0}, each x {no warmup, linear sequence-length warmup
32 -> 256 over 30% of the tokens, pow2 buckets, mode=reshape} x seeds {0, 1, 2}
(initialisation and data order), plus mode=truncate at the harshest LR of each (36 arms). reshape splits each
256-token row into shorter rows, so its arms take the same optimizer steps on the same
tokens as the no-warmup arms; a truncate arm drops row tails and takes more steps.
Model as experiments/lr_sweep.py (hidden 128, 2 layers, 2048-token vocabulary), batch
8 x 256, TOKENS per arm, cosine decay over tokens to 0.1x, final held-out loss over the
same FINAL_EVAL_BATCHES batches in every arm. Compare on held-out loss: training loss
during warmup is measured on shorter rows (lower context, so higher loss) and the loss
ratio of a warmup arm partly reflects that change of row length.
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps.stats import Comparison

ALIASES = {"curriculum.seq_warmup.enabled": "seq_warmup",
           "curriculum.seq_warmup.mode": "mode",
           "curriculum.lr.warmup_steps": "lr_warmup"}
# (LR-warmup steps, peak LRs, LRs that also get a truncate arm): without LR warmup
# 3e-2 is a stable control, 1e-1 and 3e-1 unstable; with 10 LR-warmup steps (the
# paper's baselines warm up the LR) 3e-1 is mildly and 1.0 strongly unstable.
SETTINGS = [(0, [3e-2, 1e-1, 3e-1], [3e-1]), (10, [3e-1, 1.0], [1.0])]
TOKENS = 163_840  # 80 steps of 8 x 256
FINAL_EVAL_BATCHES = 32
OFF = {"curriculum.seq_warmup.enabled": False}
RESHAPE = {"curriculum.seq_warmup.enabled": True, "curriculum.seq_warmup.mode": "reshape"}
TRUNCATE = {"curriculum.seq_warmup.enabled": True,
            "curriculum.seq_warmup.mode": "truncate"}


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=8, eval_every=40,
                         final_eval_batches=FINAL_EVAL_BATCHES)
  # The harsh setting: no gradient clipping (train/optim.py clips only when clip > 0), a
  # short second-moment memory and no LR warmup.
  c.optim.update(name="adamw", lr=3e-1, clip=0.0, b2=0.99)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=0, min_ratio=0.1,
                         token_based_decay=True)
  c.curriculum.seq_warmup.update(
      enabled=False, kind="linear", start=32, duration=0.3, duration_unit="fraction",
      buckets="pow2", mode="reshape")
  return base.finish(c, arg)


def get_sweep(h):
  arms = []
  for warmup_steps, lrs, truncate_lrs in SETTINGS:
    for lr in lrs:
      variants = [OFF, RESHAPE] + ([TRUNCATE] if lr in truncate_lrs else [])
      arms += h.product([{"curriculum.lr.warmup_steps": warmup_steps, "optim.lr": lr}],
                        variants, h.seeds(3))
  return arms


def _vs_off(warmup_steps, lr, variant, metric, what):
  mode = variant["curriculum.seq_warmup.mode"]
  return Comparison(f"LR warmup {warmup_steps}, lr {lr:g}: {mode} {what}", metric=metric,
                    claim="lower", control={"lr_warmup": warmup_steps, "lr": lr,
                                            "seq_warmup": False},
                    arm={"lr_warmup": warmup_steps, "lr": lr, "seq_warmup": True,
                         "mode": mode})


# The paper's claims at each unstable setting: sequence-length warmup trains more
# stably (a lower peak of the smoothed loss over its running minimum) and reaches a
# lower held-out loss at equal tokens. The stable control (3e-2, no LR warmup) checks
# that warmup is not simply better everywhere.
COMPARISONS = [
    _vs_off(w, lr, v, metric, what)
    for w, lrs, truncate_lrs in SETTINGS for lr in lrs
    for v in [RESHAPE] + ([TRUNCATE] if lr in truncate_lrs else [])
    for metric, what in (("eval_loss", "lowers held-out loss"),
                         ("max_loss_ratio", "lowers the max loss ratio"))
]

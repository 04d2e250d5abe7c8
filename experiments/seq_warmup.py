"""Sequence-length warmup at a high learning rate: does warming up the sequence length
let a small phi model train stably at a high LR, and what does it do to held-out loss
at equal tokens? (Li, Zhang & He 2022, "The Stability-Efficiency Dilemma",
arXiv 2108.06084: GPT-2 stable at 8x batch and 4x LR.)

    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/seq_warmup
    # smoke: 2 arms, 100k tokens each, ~2 min
    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/sw_quick \\
        --only='lr=0.003,seq_warmup=off,seed=0|lr=0.003,.*mode=reshape,seed=0' \\
        --config.train.tokens=100000 --config.train.final_eval_batches=4

Arms: AdamW peak LR {3e-3, 3e-2, 1e-1} x {no warmup; linear sequence-length warmup 32 ->
256 over 30% of the tokens, pow2 buckets, in mode ``truncate`` (each row's tail
dropped: a warmup step has fewer tokens, so the same tokens take more, smaller steps)
or ``reshape`` (each row cut into shorter rows: the same tokens per step and the same
steps as no warmup)} x seeds {0, 1, 2} (initialisation and data order), each on the
same 640k tokens, 10 LR-warmup steps, cosine decay over tokens to 0.1x. ``reshape``
is the control: a gain that truncate shows and reshape does not comes from the extra
optimizer steps, not from the short sequences. The model is smaller than tiny's
(hidden 128, 2 layers, 2048-token vocabulary) so every arm fits the budget. Training
loss during warmup is measured on shorter rows: compare arms on held-out loss.
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps.stats import Comparison

ALIASES = {"curriculum.seq_warmup.enabled": "seq_warmup",
           "curriculum.seq_warmup.mode": "mode"}
LRS = (3e-3, 3e-2, 1e-1)


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=640_000, batch_size=16, eval_every=25)
  c.optim.update(name="adamw", lr=3e-3)  # the paper's optimizer; the arms' LRs are AdamW's
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  c.curriculum.seq_warmup.update(
      enabled=False, kind="linear", start=32, duration=0.3, duration_unit="fraction",
      buckets="pow2", mode="truncate")
  return base.finish(c, arg)


def get_sweep(h):
  warmups = [{"curriculum.seq_warmup.enabled": False}] + [
      {"curriculum.seq_warmup.enabled": True, "curriculum.seq_warmup.mode": m}
      for m in ("truncate", "reshape")]
  return h.product(h.sweep("optim.lr", LRS), warmups, h.seeds(3))


def _vs_none(lr, mode, metric, claim, what):
  return Comparison(f"lr {lr:g}: {mode} warmup {what}", metric=metric, claim=claim,
                    arm={"lr": lr, "seq_warmup": True, "mode": mode},
                    control={"lr": lr, "seq_warmup": False})


# The paper's claims, per LR: warmup lowers held-out loss at equal tokens (truncate,
# and the equal-step control reshape), and at the high LR it trains more stably
# (fewer loss-spike steps).
COMPARISONS = [
    *[_vs_none(lr, m, "eval_loss", "lower", "lowers held-out loss")
      for lr in LRS for m in ("truncate", "reshape")],
    *[_vs_none(1e-1, m, "spikes", "lower", "has fewer spike steps")
      for m in ("truncate", "reshape")],
]

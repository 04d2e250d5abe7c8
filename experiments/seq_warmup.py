"""Sequence-length warmup at a high learning rate: does warming up the sequence length
let a small phi model train stably at a high LR, and what does it do to held-out loss
at equal tokens? (Li, Zhang & He 2022, "The Stability-Efficiency Dilemma",
arXiv 2108.06084: GPT-2 stable at 8x batch and 4x LR.)

    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/seq_warmup
    # smoke: 2 arms, 100k tokens each, ~2 min
    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/sw_quick \\
        --only='lr=0.003,.*seed=0' --config.train.tokens=100000 --config.train.final_eval_batches=4

Expected on 2 CPU cores: 12 arms, ~15-25 minutes (the higher figure with other jobs
running). Arms: AdamW peak LR {3e-3, 3e-2, 1e-1} x {no warmup, linear sequence-length
warmup 32 -> 256 over 30% of the tokens, pow2 buckets, truncate} x seeds {0, 1}, each
on the same 640k tokens (a warmup arm takes more, shorter steps), 10 LR-warmup steps,
cosine decay over tokens to 0.1x. The model is smaller than tiny's (hidden 128, 2
layers, 2048-token vocabulary) so every arm fits the budget. Compare arms on held-out
loss: training loss during warmup is measured on shorter rows.
"""

from phijax import config as base
from phijax.configs import tiny

ALIASES = {"curriculum.seq_warmup.enabled": "seq_warmup"}


def get_config(arg=None):
  c = base.small_ablation(tiny.get_config(), tokens=640_000, batch_size=16, eval_every=25)
  c.optim.update(name="adamw", lr=3e-3)  # the paper's optimizer; the arms' LRs are AdamW's
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  c.curriculum.seq_warmup.update(
      enabled=False, kind="linear", start=32, duration=0.3, duration_unit="fraction",
      buckets="pow2", mode="truncate")
  return base.finish(c, arg)


def get_sweep(h):
  return h.product(h.sweep("optim.lr", [3e-3, 3e-2, 1e-1]),
                   h.sweep("curriculum.seq_warmup.enabled", [False, True]),
                   h.seeds(2))


def summarize(table):
  """Per LR: seed-mean held-out loss, spikes and max loss ratio, without vs with warmup."""
  rows = []
  for lr in table.values("lr"):
    def both(col, fmt):
      none, warm = (table.mean(col, lr=lr, seq_warmup=w) for w in (False, True))
      return none, warm, f"{none:{fmt}} / {warm:{fmt}}"
    none, warm, _ = both("eval_loss", ".4f")
    rows.append({"peak LR": f"{lr:g}", "held-out loss, no warmup": none,
                 "held-out loss, seq warmup": warm, "difference (warmup - none)": warm - none,
                 "spike steps, none / warmup": both("spikes", ".1f")[2],
                 "max loss ratio, none / warmup": both("max_loss_ratio", ".3f")[2]})
  return rows

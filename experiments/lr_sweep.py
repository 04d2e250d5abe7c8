"""Learning-rate sensitivity of a tiny-model proxy for AdamW and Muon: how does held-out
loss at a fixed token budget depend on the peak LR, where is each optimizer's best LR,
and how wide is its good range? (configs/tiny.py uses Muon at 1e-2; AdamW's earlier
proxies put it around 3e-3..6e-3.)

    python -m phijax.sweep experiments/lr_sweep.py --workdir=runs/lr_sweep --parallel=2
    # smoke: 1 arm, ~1 min
    python -m phijax.sweep experiments/lr_sweep.py --workdir=runs/lr_quick \\
        --only='optim=muon,lr=0.012,seed=0' --config.train.tokens=40960

Expected on 2 CPU cores: 30 arms, ~15-20 minutes at --parallel=2. Arms: {AdamW at 1e-3,
2e-3, 4e-3, 8e-3, 1.6e-2; Muon (Adam on embeddings, head, norms and biases at the same
LR) at 6e-3, 1.2e-2, 2.4e-2, 4.8e-2, 9.6e-2} x seeds {0, 1, 2} (initialisation and data
order), each grid wide enough to hold its optimum. COMPARISONS were fixed from an
earlier 2-seed run (best LRs: AdamW 8e-3, Muon 2.4e-2) before these seeds ran. The model is tiny's phi shrunk as experiments/seq_warmup.py does (hidden 128,
2 layers, 2048-token vocabulary) so every arm fits: batch 8 x 256, the same TOKENS per
arm (80 steps), 10 LR-warmup steps, cosine decay over tokens to 0.1x, final held-out
loss over the same FINAL_EVAL_BATCHES batches (65k tokens) in every arm.
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps.stats import Comparison

ALIASES = {"optim.name": "optim"}
ADAMW_LRS = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
MUON_LRS = [6e-3, 1.2e-2, 2.4e-2, 4.8e-2, 9.6e-2]
TOKENS = 163_840  # 80 steps of 8 x 256
FINAL_EVAL_BATCHES = 32


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=8, eval_every=40,
                         final_eval_batches=FINAL_EVAL_BATCHES, log_every=2)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  return base.finish(c, arg)


def get_sweep(h):
  arms = []
  for name, lrs in (("adamw", ADAMW_LRS), ("muon", MUON_LRS)):
    arms += h.product(h.sweep("optim.name", [name]), h.sweep("optim.lr", lrs), h.seeds(3))
  return arms


ADAMW_BEST, MUON_BEST = {"optim": "adamw", "lr": 8e-3}, {"optim": "muon", "lr": 2.4e-2}
COMPARISONS = [
    # Muon (Jordan et al. 2024) trains faster than AdamW: at each one's best LR ...
    Comparison("Muon at its best LR beats AdamW at its best", metric="eval_loss",
               claim="lower", arm=MUON_BEST, control=ADAMW_BEST),
    # ... and even Muon's lowest LR in the grid (4x below its best) beats AdamW's best.
    Comparison("Muon at 4x below its best LR beats AdamW's best", metric="eval_loss",
               claim="lower", arm={"optim": "muon", "lr": 6e-3}, control=ADAMW_BEST),
    # Each grid brackets its optimum: one octave up and down cost loss.
    *[Comparison(f"{arm['optim']} {x:g}x its best LR is worse", metric="eval_loss",
                 claim="higher", arm=dict(arm, lr=arm["lr"] * x), control=arm)
      for arm in (ADAMW_BEST, MUON_BEST) for x in (0.5, 2)],
]


def summarize(table):
  """Per optimizer: best LR by seed-mean held-out loss, and the spread over the grid."""
  rows = []
  for opt in table.values("optim"):
    by_lr = {lr: table.mean("eval_loss", optim=opt, lr=lr)
             for lr in table.values("lr") if table.where(optim=opt, lr=lr)}
    best = min(by_lr, key=by_lr.get)
    worst = max(by_lr, key=by_lr.get)
    rows.append({
        "optimizer": opt, "best LR": f"{best:g}", "held-out loss at best LR": by_lr[best],
        "worst LR": f"{worst:g}", "spread (worst - best)": by_lr[worst] - by_lr[best],
        "held-out loss per LR, low -> high":
            " / ".join(f"{v:.3f}" for _, v in sorted(by_lr.items()))})
  return rows

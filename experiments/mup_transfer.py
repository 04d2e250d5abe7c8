"""muP learning-rate transfer: MiniCPM's "model wind tunnel" (Hu et al. 2024, arXiv
2404.06395; muP: Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466).

Question: under muP (``model.mup=True``: MiniCPM's scale_emb, scale_depth / sqrt(L)
residual branches, logits divided by width_mult, block matrices at init_std /
sqrt(width_mult) and lr / width_mult) does the best AdamW learning rate found at a
small width stay the best at larger widths, while under the standard parametrisation
it moves (lower for wider models)?

    python -m phijax.sweep experiments/mup_transfer.py \\
        --workdir=experiments/results/mup_transfer --parallel=2
    # smoke: 2 arms (width 64, standard and muP, one LR), ~1 min
    python -m phijax.sweep experiments/mup_transfer.py --workdir=runs/mup_quick \\
        --only='width=64,lr=0.008,seed=0' --parallel=2

Arms: width (hidden size; get_config's argument) {64, 128, 256} with head_dim 32 (2, 4,
8 heads) and MLP 4 x hidden, 2 layers, a 2048-token vocabulary, x {standard, muP with
mup_dim_model_base = 64: width_mult 1, 2, 4} x AdamW peak LR {4e-3, 8e-3, 1.6e-2} x
seeds {0, 1, 2} (initialisation and data order): 54 arms, ~25 min on 2 cores at
--parallel=2 (40-75 s an arm). Every arm: the same TOKENS
(48 steps of 8 x 128), 5 LR-warmup steps, cosine decay over tokens to 0.1x, AdamW b2
0.95, weight decay 0.1, clip 1.0, held-out loss on the same FINAL_EVAL_BATCHES = 16
batches. At width 64 the two parametrisations differ only by muP's constant
multipliers (embedding output x 12, residual branches x 1.4 / sqrt(2)).

The grid is the octave either side of BEST, width 64's best LR in both parametrisations
in an earlier 2-seed run over 1e-3..3.2e-2 (standard: best 8e-3 at width 64 and 4e-3 at
128 and 256; muP: 8e-3 or 1.6e-2, a tie, at every width); COMPARISONS were declared
from it before these seeds ran. Figure: final.png, held-out loss against LR, one line
per (parametrisation, width): the wind tunnel.
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps.stats import Comparison

ALIASES = {"model.mup": "mup", "config": "width", "optim.lr": "lr"}
WIDTHS = ["64", "128", "256"]  # get_config's argument: a string
HEAD_DIM = 32
BASE_WIDTH = 64  # model.mup_dim_model_base: width_mult = width / 64
BEST = 8e-3
LRS = [BEST / 2, BEST, BEST * 2]
BATCH, SEQ_LEN, STEPS = 8, 128, 48
TOKENS = BATCH * SEQ_LEN * STEPS
FINAL_EVAL_BATCHES = 16
PLOTS = ("final",)  # curves.png: 18 arm groups, unreadable


def get_config(arg=None):
  """``arg``: the width (hidden size), BASE_WIDTH if none."""
  if arg is not None and not arg.isdigit():
    raise ValueError(f"mup_transfer.py: argument {arg!r}; give the width, e.g. :128")
  width = int(arg or BASE_WIDTH)
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=BATCH,
                         eval_every=STEPS, final_eval_batches=FINAL_EVAL_BATCHES,
                         log_every=2)
  c.model.update(hidden_size=width, num_heads=width // HEAD_DIM,
                 intermediate_size=4 * width, mup_dim_model_base=BASE_WIDTH)
  c.data.seq_len = SEQ_LEN
  c.optim.name = "adamw"
  c.curriculum.lr.update(schedule="cosine", warmup_steps=5, min_ratio=0.1,
                         token_based_decay=True)
  return base.finish(c, None)


def get_sweep(h):
  # Widest first: the parallel slots fill evenly.
  return h.product(h.sweep("model.mup", [False, True]), h.sweep("config", WIDTHS[::-1]),
                   h.sweep("optim.lr", LRS), h.seeds(3))


def _vs_best(mup, width, lr, claim, what):
  name = f"{'muP' if mup else 'standard'}, width {width}: {what}"
  return Comparison(name, metric="eval_loss", claim=claim,
                    arm={"mup": mup, "width": width, "lr": lr},
                    control={"mup": mup, "width": width, "lr": BEST})


HALF = "half width 64's best LR is"
COMPARISONS = [
    # Width 64's best LR: half of it costs loss at width 64 in both parametrisations.
    *[_vs_best(mup, "64", BEST / 2, "higher", f"{HALF} worse") for mup in (False, True)],
    # Standard: the best LR moves down as the model widens, so at width 128 and 256
    # half of width 64's best beats it, and twice it (a tie at width 64) is worse.
    *[_vs_best(False, w, BEST / 2, "lower", f"{HALF} better") for w in WIDTHS[1:]],
    *[_vs_best(False, w, BEST * 2, "higher", "twice width 64's best LR is worse")
      for w in WIDTHS[1:]],
    # muP: the best LR stays, so half of it is still worse at every width.
    *[_vs_best(True, w, BEST / 2, "higher", f"{HALF} worse") for w in WIDTHS[1:]],
]

"""GaLore vs AdamW (Zhao et al. 2024, arXiv 2403.03507). GaLore projects each block
matrix's gradient onto a rank-r subspace (its top singular vectors, refreshed every
UPDATE_EVERY steps), runs Adam there and projects the update back, scaled by SCALE;
embeddings, head, norms and biases take plain Adam. The paper: pretraining loss
comparable to full-rank Adam's with much less optimizer state (LLaMA 60M, rank 128 of
512: 34.88 vs 34.06 perplexity). At the ablation model's scale, does GaLore match AdamW's
held-out loss, each at its best LR and at equal per-group LRs, and what state does it save?

    python -m phijax.sweep experiments/galore.py --workdir=runs/galore --parallel=2
    # smoke: AdamW at its best LR, the 3 arms at GaLore's, seed 0, 20 steps, ~4 min
    python -m phijax.sweep experiments/galore.py --workdir=runs/galore_quick \\
        --only='optim=adamw,lr=0.008,seed=0|lr=0.032.*seed=0' --parallel=2 \\
        --config.train.tokens=40960 --config.train.final_eval_batches=4

Arms x seeds 0-2 (init and data order): AdamW at ADAMW_LRS; GaLore rank RANK (a quarter
of hidden 128, as the paper's 128 of 512) at GALORE_LRS (SCALE shrinks the block
matrices' step, so Adam's LR need not suit GaLore: the earlier 2-seed run had 2x beat 1x
at every rank); at GALORE_BEST, AdamW with ``optim.block_scale=SCALE`` (GaLore's
per-group LRs, lr x SCALE on the block matrices and lr elsewhere, decay at lr, without
the projection) and GaLore at rank FULL_RANK (its basis and scale, nothing compressed).
Declared bests: ADAMW_BEST is lr_sweep.py's (flat down to 4e-3 there, so the grid goes
one octave lower); GALORE_BEST gives the block matrices ADAMW_BEST (lr x SCALE), its grid
two octaves either way. Model and budget as lr_sweep.py (hidden 128, 2 layers, batch
8 x 256, TOKENS per arm, weight decay 0.1, clip 1, cosine to 0.1x); every evaluation
reads the same FINAL_EVAL_BATCHES held-out batches. EVALS: ``state_bytes``, optimizer
state per parameter as the run logged it, and ``block_state_bytes``, the block
matrices' alone (Adam's 8 bytes a parameter on the rest taken out).
"""

import math

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps import evals
from phijax.sweeps.stats import Comparison

ALIASES = {"optim.name": "optim", "optim.galore_rank": "rank", "optim.lr": "lr",
           "optim.block_scale": "block_scale"}
TOKENS = 163_840  # 80 steps of 8 x 256
UPDATE_EVERY, SCALE, RANK = 20, 0.25, 32  # projector refreshes at steps 0, 20, 40, 60
FULL_RANK = 128  # the smaller side of every block matrix: nothing compressed
FINAL_EVAL_BATCHES = 32
ADAMW_LRS, ADAMW_BEST = (2e-3, 4e-3, 8e-3, 1.6e-2), 8e-3
GALORE_LRS, GALORE_BEST = (8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 1.28e-1), 3.2e-2


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=8, eval_every=20,
                          final_eval_batches=FINAL_EVAL_BATCHES, log_every=2)
  c.optim.update(lr=ADAMW_BEST, galore_update_every=UPDATE_EVERY, galore_scale=SCALE)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  c.train.eval_batches = FINAL_EVAL_BATCHES  # every eval point on the same batches
  return base.finish(c, arg)


def get_sweep(h):
  adamw = h.product([{"optim.name": "adamw"}], h.sweep("optim.lr", ADAMW_LRS))
  galore = h.product([{"optim.name": "galore", "optim.galore_rank": RANK}],
                     h.sweep("optim.lr", GALORE_LRS))
  controls = [{"optim.name": "adamw", "optim.lr": GALORE_BEST, "optim.block_scale": SCALE},
              {"optim.name": "galore", "optim.galore_rank": FULL_RANK, "optim.lr": GALORE_BEST}]
  return h.product(adamw + galore + controls, h.seeds(3))


def state_bytes(arm_dir: str) -> dict:
  import jax
  import numpy as np
  from flax import linen as nn
  from phijax.model import abstract_params
  from phijax.sweeps import runs
  from phijax.train import optim
  total = (runs.split_rows(runs.read_rows(arm_dir))[2] or {}).get(
      "opt_state_bytes_per_param", math.nan)
  params = nn.unbox(abstract_params(get_config().model))
  sizes = [int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)]
  block = sum(s for s, m in zip(sizes, jax.tree_util.tree_leaves(
      optim.block_matrix_mask(params))) if m) / sum(sizes)
  return {"state_bytes": total, "block_state_bytes": (total - 8 * (1 - block)) / block}


EVALS = [evals.ArmEval("state", fn=state_bytes, fmt=".2f")]

ADAMW = {"optim": "adamw", "block_scale": None}
GALORE = {"optim": "galore", "lr": GALORE_BEST, "rank": RANK}
COMPARISONS = [
    # "Comparable" is no lower/higher claim; the paper's numbers put GaLore a little
    # above full-rank Adam at every size (34.88 vs 34.06 ppl at 60M), so that is the
    # declared side: reproduced = GaLore costs loss (is the mean small?), inconclusive =
    # no gap resolved (comparable), refuted = GaLore better, which the paper never says.
    Comparison("GaLore at its best LR vs AdamW at its best", metric="eval_loss",
               claim="higher", arm=GALORE, control=dict(ADAMW, lr=ADAMW_BEST)),
    # The same at equal per-group LRs: what GaLore's projection (basis and rank) costs.
    Comparison("GaLore vs AdamW with GaLore's per-group LRs", metric="eval_loss",
               claim="higher", arm=GALORE, control={"optim": "adamw", "block_scale": SCALE}),
    # ... and what the low rank costs against GaLore compressing nothing (the paper:
    # lower ranks, higher loss).
    Comparison(f"GaLore rank {RANK} vs rank {FULL_RANK} (full)", metric="eval_loss",
               claim="higher", arm=GALORE, control=dict(GALORE, rank=FULL_RANK)),
    Comparison("GaLore's optimizer state is smaller than AdamW's", metric="state_bytes",
               claim="lower", arm=GALORE, control=dict(ADAMW, lr=ADAMW_BEST)),
    # Each grid brackets its declared best: an octave either way costs loss.
    *[Comparison(f"{arm['optim']} at {x:g}x its declared best LR is worse", "eval_loss",
                 "higher", arm=dict(arm, lr=arm["lr"] * x), control=arm)
      for arm in (dict(ADAMW, lr=ADAMW_BEST), GALORE) for x in (0.5, 2)],
]

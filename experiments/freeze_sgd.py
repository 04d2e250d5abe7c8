"""Frozen-embedding SGD fine-tuning (Kumar et al. 2022, "How to Fine-Tune Vision Models
with SGD", arXiv 2211.09359): SGD fine-tunes worse than AdamW when the embedding layer
gets much larger gradients than the rest; freezing it lets SGD (with momentum) match or
beat AdamW, also out of distribution, with less optimizer state. Does that hold for a
small phi fine-tuned on stdlib packages it never saw in pretraining?

    python -m phijax.sweep experiments/freeze_sgd.py --workdir=runs/freeze_sgd
    # smoke: one pretrain and two fine-tuning arms, 10 steps each
    python -m phijax.sweep experiments/freeze_sgd.py --workdir=runs/freeze_sgd_quick \\
        --only='optim=sgd,lr=1,freeze=embed,seed=0|optim=adamw,lr=0.003,seed=0' \\
        --config.train.tokens=20480 --config.curriculum.lr.warmup_steps=3

Arms: ``config=pretrain`` x seeds {0, 1, 2}: lr_sweep.py's model (0.92M parameters,
untied ``lm_head``) on the stdlib WITHOUT the packages NEW, 600 steps of 8 x 256, AdamW
8e-3 (lr_sweep.py's best), its tokenizer trained on that corpus. ``config=finetune``:
warm-started (parameters and tokenizer; a fresh optimizer) from the pretrain arm of its
seed, on ONLY the packages NEW, 60 steps of 8 x 256, 3 warmup steps, cosine to 0.1x, no
weight decay, clip 1.0: SGD with momentum 0.9 at LR 1 and 3, AdamW (b2 0.95) at 3e-3,
each with and without ``optim.freeze=embed`` (the token embedding: 28% of this model's
parameters, the paper's <1%), x seeds {0, 1, 2} (fine-tuning data order, and the
pretrain arm). 21 arms. EVALS: held-out loss on NEW's held-out files (``new_loss``: the
pretrain arm's is "before") and on the pretraining corpus's (``old_loss``: forgetting,
the paper's out-of-distribution side), and the optimizer-state bytes per parameter the
run logs (float32, over all parameters, frozen ones counted).
"""

import math

from phijax import config as base
from phijax.configs import tiny
from phijax.sweeps import runs
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

ALIASES = {"optim.name": "optim", "optim.freeze": "freeze", "optim.lr": "lr"}
NEW = "email/*,json/*,xml/*,http/*"  # held out of pretraining (9.3% of the corpus bytes)
STEP_TOKENS = 8 * 256
EVAL_BATCHES = 6  # NEW's whole held-out split: 44 rows of 256


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in ("pretrain", "finetune"):
    raise ValueError(f"freeze_sgd.py: recipe {recipe!r}; choose pretrain or finetune")
  c = base.small_ablation(tiny.small_phi(), tokens=600 * STEP_TOKENS, batch_size=8,
                          eval_every=0, final_eval_batches=32, log_every=2)
  c.train.save_every_minutes = 0.0  # checkpoints only at the end: the arms are short
  c.optim.update(name="adamw", lr=8e-3, b1=0.9, b2=0.95, weight_decay=0.1, clip=1.0)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  if recipe == "pretrain":
    c.data.sources.stdlib.exclude = NEW
  else:
    c.data.sources.stdlib.glob = NEW
    c.train.update(tokens=60 * STEP_TOKENS, eval_every=10, log_every=1,
                   eval_batches=EVAL_BATCHES, final_eval_batches=EVAL_BATCHES)
    c.curriculum.lr.warmup_steps = 3
    # b1 is SGD's momentum (Adam's first moment); no decay: SGD's scales with its LR.
    c.optim.update(b1=0.9, weight_decay=0.0)
  return base.finish(c, None)


def get_sweep(h):
  methods = [{"optim.name": o, "optim.lr": lr, **f} for o, lr in
             (("sgd", 1.0), ("sgd", 3.0), ("adamw", 3e-3)) for f in ({}, {"optim.freeze": "embed"})]
  seeds = [{"train.seed": s, "train.init_from": f"{{arm:config=pretrain,seed={s}}}"}
           for s in range(3)]
  return (h.product([{"config": "pretrain"}], h.seeds(3))
          + h.product([{"config": "finetune"}], methods, seeds))


def _state_bytes(arm_dir):
  final = runs.split_rows(runs.read_rows(arm_dir))[2] or {}
  return {"state_bytes": final.get("opt_state_bytes_per_param", math.nan)}


EVALS = [
    ArmEval("new", task="bpb", args=("--config={experiment}:finetune",),
            columns={"new_loss": "eval_loss", "new_bpb": "eval_bpb"}),
    ArmEval("old", task="bpb", args=("--config={experiment}:pretrain",),
            columns={"old_loss": "eval_loss"}),
    ArmEval("state", fn=_state_bytes, fmt=".2f"),
]
PLOTS = ()  # pretrain and fine-tuning losses are of different corpora: one axis misleads

# Fixed LRs, each method's best in the earlier 2-seed LR grid (experiments/results/
# freeze_sgd/: SGD {0.3, 1, 3}, AdamW {1e-3, 3e-3, 1e-2}, with and without freezing, all
# best at SGD 1 / AdamW 3e-3); SGD at 3 is where unfrozen SGD spiked there.
SGD = {"config": "finetune", "optim": "sgd", "lr": 1.0, "freeze": None}
FROZEN = dict(SGD, freeze="embed")
ADAMW = {"config": "finetune", "optim": "adamw", "lr": 3e-3, "freeze": None}
COMPARISONS = [
    Comparison("SGD fine-tunes worse than AdamW", metric="new_loss", claim="higher",
               arm=SGD, control=ADAMW),
    Comparison("freezing the embedding helps SGD", metric="new_loss", claim="lower",
               arm=FROZEN, control=SGD),
    Comparison("at 3x its LR, freezing the embedding helps SGD", metric="new_loss",
               claim="lower", arm=dict(FROZEN, lr=3.0), control=dict(SGD, lr=3.0)),
    # "Matches or beats": refuted means reliably worse; inconclusive is a match.
    Comparison("frozen-embedding SGD matches or beats AdamW", metric="new_loss",
               claim="lower", arm=FROZEN, control=ADAMW),
    # Out of distribution (here: the pretraining corpus, i.e. forgetting).
    Comparison("freezing the embedding: SGD forgets less", metric="old_loss",
               claim="lower", arm=FROZEN, control=SGD),
    Comparison("frozen-embedding SGD forgets less than AdamW", metric="old_loss",
               claim="lower", arm=FROZEN, control=ADAMW),
    Comparison("frozen-embedding SGD keeps less optimizer state than AdamW",
               metric="state_bytes", claim="lower", arm=FROZEN, control=ADAMW),
]

"""The CPU speedrun: which recipe reaches the lowest held-out bits/byte in 10 minutes of
wall time on 2 cores? (The modded-nanogpt speedrun's "time to a target loss" turned
round: a fixed time, the lowest loss. Target: 1.30 bits/byte, against the default's
1.41-1.46.)

    # stage 1, proxies: every recipe at a 150 s budget, seed 0, one at a time (~25 min)
    python -m phijax.sweep experiments/cpu_speedrun.py \\
        --workdir=experiments/results/cpu_speedrun --parallel=1 --only='budget=150'
    # stage 2, finals: FINALISTS and the old default at 600 s, seeds 0-2 (~70 min)
    python -m phijax.sweep experiments/cpu_speedrun.py \\
        --workdir=experiments/results/cpu_speedrun --parallel=1 --only='budget=600'

Timing is the point, so arms run one at a time (``--parallel=1``) on an otherwise idle
machine. Every arm is configs/tiny.py (the default run: 4.9M parameters, Muon at 1e-2,
16 x 256 tokens a step, cosine, an 8k tokenizer) with ``train.time_budget_s`` (the run
decides its number of steps when its LR warmup ends, from the measured step time, so
it ends decayed within the budget: phijax/train/pieces/time_budget.py) and one change:

- ``old``: none (the control every recipe is paired with);
- ``lr2e-2``: Muon at 2e-2 (experiments/lr_sweep.py's best for the small phi, 2.4e-2);
- ``batch8``: 8 x 256 tokens a step: twice the steps in the same time;
- ``narrow``: hidden 128, 4 heads, MLP 512 (2.9M parameters, mostly embeddings): more
  tokens a second;
- ``seq128``: rows of 128 tokens, 32 a step: the same tokens, cheaper attention;
- ``wsd``: warmup-stable-decay (20% decay) instead of cosine;
- ``adamw``: AdamW at 3e-3 instead of Muon.

The tokenizer is trained once and cached (one vocabulary here), so its training time
is not inside the budgets; the README figure states it separately. Stage 1 narrows
the field (one seed each: a proxy, not a verdict); stage 2 is the claim: FINALISTS
against ``old`` at the full budget, 3 seeds (initialisation and data order), paired.
"""

from phijax.configs import tiny
from phijax.sweeps.stats import Comparison

RECIPES = ("old", "lr2e-2", "batch8", "narrow", "seq128", "wsd", "adamw")
PROXY_S, FULL_S = 150.0, 600.0
FINALISTS = ()  # set from stage 1's table before running stage 2
ALIASES = {"train.time_budget_s": "budget"}
PLOTS = ("final",)


def get_config(arg=None):
  recipe = arg or "old"
  if recipe not in RECIPES:
    raise ValueError(f"cpu_speedrun.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = tiny.get_config()
  c.train.update(steps=2000, save_every=0, save_every_minutes=0.0, samples=0,
                 eval_every=0)  # the budget sets the steps; only the final evaluation
  if recipe == "lr2e-2":
    c.optim.lr = 2e-2
  elif recipe == "batch8":
    c.train.batch_size = 8
  elif recipe == "narrow":
    c.model.update(hidden_size=128, num_heads=4, intermediate_size=512)
  elif recipe == "seq128":
    c.data.seq_len = 128
    c.train.batch_size = 32
  elif recipe == "wsd":
    c.curriculum.lr.update(schedule="wsd", decay_fraction=0.2)
  elif recipe == "adamw":
    c.optim.update(name="adamw", lr=3e-3)
  return c


def get_sweep(h):
  arms = [{"config": r, "train.time_budget_s": PROXY_S, "train.seed": 0} for r in RECIPES]
  for seed in h.seeds(3):
    arms += [{"config": r, "train.time_budget_s": FULL_S, **seed}
             for r in ("old",) + tuple(FINALISTS)]
  return arms


COMPARISONS = [
    Comparison(f"{r} beats old in {FULL_S / 60:.0f} minutes", metric="eval_bpb",
               claim="lower", arm={"config": r, "budget": FULL_S},
               control={"config": "old", "budget": FULL_S})
    for r in FINALISTS
]

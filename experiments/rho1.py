"""Rho-1: selective language modelling (Lin et al. 2024, arXiv 2404.07965): a reference
model trained on clean data scores each token, and the model trains only on the top
fraction of each batch by excess loss (its loss minus the reference's); the paper reports
lower loss than plain LM at the same tokens (ratio 60% for math). Here the target is clean
Python stdlib and the mix is 60% stdlib, 40% noise for it: does SLM at 0.6 reach lower
held-out stdlib bits/byte than plain LM on the mix, a random 60% of the tokens, and LM
with the noise dropped?

    python -m phijax.sweep experiments/rho1.py --workdir=runs/rho1 --parallel=1
    # smoke: the 4 arms at seed 0, 20 steps each, ~4 min
    python -m phijax.sweep experiments/rho1.py --workdir=runs/rho1_quick --only='seed=0' \\
        --config.train.tokens=40960 --config.train.final_eval_batches=2 --parallel=1

Data: ``stdlib`` less ``encodings/`` (noise-like codec tables) and, NOISE_WEIGHT each,
``tables`` (the generated codec tables in encodings/) and ``topics`` (pydoc_data/topics.py,
English help text); evaluations read FINAL_EVAL_BATCHES held-out batches of stdlib only.
Arms x seeds 0-2, TOKENS tokens through the model each, one tokenizer (the seed-0 clean
arm's: SLM's two losses must read the same ids): ``config=clean``, LM on stdlib alone,
the drop-the-noise baseline (its seed 0 is the SLM reference); ``config=mix``, LM on the
mix; ``by=excess``, SLM; ``by=random``, as many tokens drawn at random each step
(``train.token_selection_by``). Model: the ablation phi (~0.9M parameters), Muon at LR.
EVALS: ``tables_bpb``, bits/byte on held-out codec tables (noise learned);
``train_flops`` = tokens x F x (4/3 for SLM, else 1), F = ``metrics.flops_per_token``
(6N + attention: forward and backward; the reference's forward is F/3 a token; the
selection's sort and the reference's own training, shared by the SLM arms, left out).
"""

import json
import math
import os

from phijax import config as base
from phijax.configs import tiny
from phijax.data import config as data_config, corpus
from phijax.sweeps import evals
from phijax.sweeps.stats import Comparison

ALIASES = {"train.token_selection": "select", "train.token_selection_by": "by"}
TOKENS = 409_600  # 200 steps of 8 x 256
LR = 2.4e-2  # lr_sweep.py's best Muon LR for this model
FINAL_EVAL_BATCHES = 32
NOISE_WEIGHT, RATIO = 0.2, 0.6  # NOISE_WEIGHT: each of tables and topics
REFERENCE = "{arm:config=clean,seed=0}"
PLOTS = ("curves",)  # final.png would plot against "select", which LM arms leave unset


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=8, eval_every=40,
                          final_eval_batches=FINAL_EVAL_BATCHES, log_every=2)
  c.optim.update(name="muon", lr=LR)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  c.train.update(eval_batches=FINAL_EVAL_BATCHES, save_every_minutes=0.0)  # short arms
  c.data.sources.stdlib.update(weight=1 - 2 * NOISE_WEIGHT, exclude="encodings/*")
  c.data.eval_sources = "stdlib"  # held-out: the target alone, not the noisy mix
  # Every recipe has the noise sources (every arm's held-out tables_bpb); "clean" gives
  # them weight 0, for training and for the tokenizer it trains.
  weight = {"mix": NOISE_WEIGHT, "clean": 0.0}[arg or "mix"]
  root = corpus.stdlib_root()
  hand_written = [p.name for p in sorted((root / "encodings").glob("*.py"))
                  if not corpus.is_generated(p)]
  c.data.sources.tables = data_config.source(
      "text", str(root / "encodings" / "*.py"), exclude=",".join(hand_written), weight=weight)
  c.data.sources.topics = data_config.source(
      "text", str(root / "pydoc_data" / "topics.py"), weight=weight)
  return base.finish(c, None)


def get_sweep(h):
  selected = {"config": "mix", "train.token_selection": RATIO}
  arms = [{"config": "clean"}, {"config": "mix"},
          {**selected, "train.token_selection_by": "excess", "train.reference": REFERENCE},
          {**selected, "train.token_selection_by": "random"}]
  tok = {"data.tokenizer.path": f"{REFERENCE}/tokenizer.model"}
  reference = {"config": "clean", "train.seed": 0}  # trains the shared tokenizer
  return [a if a == reference else {**a, **tok} for a in h.product(arms, h.seeds(3))]


def train_flops(arm_dir: str) -> dict:
  """The arm's training FLOPs, the reference's forward included (see the docstring)."""
  from phijax.model.config import ModelConfig
  from phijax.sweeps import runs
  from phijax.train import metrics
  with open(os.path.join(arm_dir, "config.json")) as f:
    c = json.load(f)
  final = runs.split_rows(runs.read_rows(arm_dir))[2] or {}
  per_token = metrics.flops_per_token(ModelConfig.from_dict(c["model"]), c["data"]["seq_len"])
  slm = c["train"]["token_selection"] > 0 and c["train"]["token_selection_by"] == "excess"
  return {"train_flops": final.get("tokens", math.nan) * per_token * (4 / 3 if slm else 1)}


EVALS = [evals.ArmEval("tables", task="bpb", columns={"tables_bpb": "eval_bpb"},
                       args=("--source=tables", "--eval_batches=3")),  # ~27 rows of tables
         evals.ArmEval("compute", fn=train_flops, fmt=".3e")]


def _slm_vs(name, control, metric="eval_bpb", claim="lower"):
  return Comparison(f"SLM 0.6 {name}", metric=metric, claim=claim, control=control,
                    arm={"config": "mix", "select": RATIO, "by": "excess"})


LM = {"config": "mix", "select": None}
COMPARISONS = [
    # The paper: SLM beats plain LM on the same data and tokens, by what it selects (not
    # by training on fewer tokens); and its tokens are useful ones, more than a noise
    # filter, so it should match or beat LM on the clean data alone (which trains on
    # 1/0.6 x SLM's tokens, all clean): "refuted" = knowing the noise and dropping it wins.
    _slm_vs("beats plain LM on the noisy mix", LM),
    _slm_vs("beats a random 0.6 of the tokens", {"config": "mix", "by": "random"}),
    _slm_vs("on the mix beats dropping the noise", {"config": "clean"}),
    # Its mechanism: the tokens it leaves out, here the noise, are learned less.
    _slm_vs("learns less of the noise than LM", LM, "tables_bpb", "higher"),
]

"""Quality versus quantity, phi-1's thesis (Gunasekar et al. 2023, "Textbooks Are All You
Need", arXiv 2306.11644, section 2.1): at an equal token budget, does training on the
documents a quality classifier ranks best beat a random subset of the same size, and the
whole corpus?

    python -m phijax.sweep experiments/quality_vs_quantity.py \\
        --workdir=experiments/results/quality_vs_quantity --parallel=2
    # smoke (~4 min): python -m phijax.sweep experiments/quality_vs_quantity.py \\
    #   --workdir=runs/qvq_quick --only='seed=0' --config.train.tokens=65536 \\
    #   --config.curriculum.lr.warmup_steps=2

Corpus: the standard library, held-out split as every run's. Annotator: no strong model
is available offline, so the rubric of ``phijax.data.quality.rubric`` (module docstring,
documented functions, doctest examples, comments, short functions, code rather than
data) labels SAMPLE training files as phi-1's GPT-4 prompt did ("educational value for a
student learning to code"). Classifier: a random forest on the mean-pooled hidden states
of the whole-corpus arm of seed 0 (the "code model"), fitted on the sample, scores every
file (step ``config=scores``, ``phijax.curate.score_run``; its held-out accuracy is that
arm's row). ``--config.curate.annotator=hf:DIR`` makes a real model the annotator.

Arms, TOKENS tokens each (batch 16 x 256, the experiments' small phi, one tokenizer:
seed 0 whole-corpus arm's): ``all`` (every training file), ``random`` (a random KEEP of
the training bytes, a new draw per seed: the control for training on a smaller, more
repeated set), ``top`` (the classifier's best files holding KEEP of the bytes) and
``rubric`` (the rubric applied to every file, ties broken at random: what the classifier
would pick if it generalised the annotator perfectly) x seeds 0-2 (initialisation and
data order). KEEP of the bytes is ~1M tokens: the subsets repeat ~1.2x within the budget,
the whole corpus does not repeat.

EVALS: bits/byte of the held-out files the rubric labels good (``textbook``: the
"textbook-like" held-out set; every arm's own held-out bits/byte covers all held-out
files) and of the held-out exercises' bodies (``phijax.evaluate --task=exercises``: 124
docstring -> body exercises from held-out files, phi-1's HumanEval-style format).
"""

import functools
import json
import math
import os

from ml_collections import ConfigDict

from phijax import config as base
from phijax.configs import tiny
from phijax.curate import score_run
from phijax.data import config as data_config, pipeline
from phijax.data.quality import rubric
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

TOKENS = 1_228_800  # 300 steps of 16 x 256
KEEP, SAMPLE = 0.25, 400
EMBEDDER = "{arm:config=all,seed=0}"
SCORES = "{arm:config=scores}"
ALIASES = {"data.sources.stdlib.quality_scores": "scores"}


@functools.cache
def _textbook_heldout() -> str:
  """The held-out files the rubric labels good, as a stdlib glob."""
  c = tiny.small_phi()
  src = pipeline.build_sources(c.data)["stdlib"]
  return ",".join(src.key(i) for i in src.heldout_indices() if rubric.label(src.text(i)))


def _train_mb(arm_dir: str) -> float:
  """Megabytes of the training files the arm's filter kept (same size: random, top)."""
  with open(os.path.join(arm_dir, "config.json")) as f:
    cfg_data = ConfigDict(json.load(f)["data"])
  src = pipeline.build_sources(cfg_data)["stdlib"]
  return sum(len(src.text(int(i)).encode("utf-8")) for i in src.train_indices()) / 1e6


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=16, eval_every=0,
                          final_eval_batches=32, log_every=10)
  c.optim.lr = 2.4e-2  # lr_sweep.py's best Muon LR for this model
  c.curriculum.lr.update(schedule="cosine", warmup_steps=15, min_ratio=0.1)
  c.train.save_every_minutes = 0.0
  c.data.sources.textbook = data_config.source("stdlib", glob=_textbook_heldout(),
                                               weight=0.0)
  c.data.eval_sources = "stdlib"
  if arg in ("random", "top", "rubric"):
    c.data.sources.stdlib.update(quality_keep=KEEP, quality_keep_by="bytes")
  elif arg not in ("all", "scores"):
    raise ValueError(f"quality_vs_quantity.py: unknown arm {arg!r}")
  c = base.finish(c, None)
  if arg == "scores":  # the scoring step's own settings (not a training run's field)
    c.curate = score_run.defaults()
    c.curate.update(source="stdlib", sample=SAMPLE)
  return c


def get_sweep(h):
  tok = {"data.tokenizer.path": f"{EMBEDDER}/tokenizer.model"}
  scores = {"top": f"{SCORES}/scores.json", "rubric": f"{SCORES}/rubric_scores.json"}
  arms = [{"config": "scores", "program": "phijax.curate.score_run",
           "curate.embedder": EMBEDDER}]
  for seed in range(3):
    s = {"train.seed": seed}
    arms.append({"config": "all", **s, **(tok if seed else {})})
    arms.append({"config": "random", **s, **tok,
                 "data.sources.stdlib.quality_scores": f"random:{seed}"})
    arms += [{"config": k, **s, **tok, "data.sources.stdlib.quality_scores": v}
             for k, v in scores.items()]
  return arms


def _classifier(arm_dir: str) -> dict:
  """The scoring step's held-out accuracies (its final row); nothing for other arms."""
  rows = [json.loads(line) for line in open(os.path.join(arm_dir, "metrics.jsonl"))]
  final = rows[-1] if rows and rows[-1].get("final") else {}
  return {k: final.get(k, math.nan) for k in ("forest_accuracy", "logistic_accuracy",
                                              "majority")}


EVALS = [ArmEval("textbook", task="bpb", args=("--source=textbook",),
                 columns={"textbook_bpb": "eval_bpb"}),
         ArmEval("exercises", task="exercises", args=("--exercises_format=text",),
                 columns={"exercise_bpb": "response_bpb"}),
         ArmEval("subset", fn=lambda arm: {"train_mb": _train_mb(arm)}, fmt=".2f"),
         ArmEval("classifier", fn=_classifier, fmt=".3f")]
PLOTS = ("curves",)


def _vs(arm, control, metric):
  return Comparison(f"{arm} beats {control} ({metric})", metric=metric, claim="lower",
                    arm={"config": arm}, control={"config": control})


COMPARISONS = [
    # phi-1: filtered data trains a better model at the same tokens than a random subset
    # of the same size (quality, not size) and than all of the data (quality over
    # quantity); measured where the filter aims (textbook-like files, exercises) and on
    # every held-out file (does the gain hold off the filter's target?).
    *[_vs("top", c, m) for c in ("random", "all")
      for m in ("textbook_bpb", "exercise_bpb", "eval_bpb")],
    # The classifier against its annotator: does it lose what the rubric itself gets?
    _vs("rubric", "top", "textbook_bpb"),
    _vs("rubric", "random", "textbook_bpb"),
]

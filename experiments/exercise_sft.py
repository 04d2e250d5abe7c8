"""phi-1's exercise fine-tuning at toy scale: does fine-tuning a code-pretrained model
on a few "docstring -> body" exercises (Gunasekar et al. 2023, arXiv 2306.11644:
CodeExercises lifted HumanEval from 29% to 51%) lower its loss on, and raise its exact
match of, held-out exercises more than the same training on pretraining data? Does
mixing them into the end of pretraining (MiniCPM, Hu et al. 2024, arXiv 2404.06395) do
as well at the same total tokens?

    python -m phijax.sweep experiments/exercise_sft.py --workdir=runs/exercise_sft --parallel=2

Arms x seeds {0, 1, 2} (init and data order), a recipe each: ``pretrain``, lr_sweep.py's
model on the stdlib for PRETRAIN_STEPS of 8 x 256 tokens, Muon at its best LR, cosine.
``sft``, from the seed's pretrain arm (``{arm:...}``): configs/lima_sft.py's recipe
(AdamW, linear decay, residual dropout to 0.2, loss on the body only, prompt <eot> body
<eot>) at SFT_LR for SFT_STEPS (3 epochs) on LIMA_EXERCISES exercises from training
files. ``cpt``, the control: the same start, recipe and steps on the stdlib (continued
pretraining, rows in an order of their own), so a gain beyond it is the exercises', not
more training's. ``mixed``: from scratch, pretrain's stdlib tokens, its last 2 x
SFT_STEPS steps stdlib and the same exercises 1:1 (sft's exercise tokens).

EVALS: ``phijax.evaluate --task=exercises`` (124 exercises of held-out stdlib files) as
plain code (``text``) and in sft's template (``chat``): body loss, bits per body byte,
exact match and bodies ended, greedy. Every run's own held-out loss is the stdlib's;
the runs train on different data, so no generic loss curves (PLOTS).
"""

from phijax import config as base
from phijax.configs import lima_sft
from phijax.data import config as data_config
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison
from phijax.train import curriculum

RECIPES = ("pretrain", "sft", "cpt", "mixed")
STEP_TOKENS = 8 * 256
PRETRAIN_STEPS = 400
PEAK_LR = 2.4e-2  # Muon, experiments/lr_sweep.py
LIMA_EXERCISES = 1000  # LIMA's 1,000 examples
SFT_LR = 1e-3  # lima_sft's 1e-4 hardly moves this model in a few hundred steps
SFT_STEPS = 228  # 3 epochs of the 1,000 exercises packed into 8-row batches
FORMATS = ("text", "chat")
PLOTS = ()


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in RECIPES:
    raise ValueError(f"exercise_sft.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = lima_sft.exercise_pretrain(steps=PRETRAIN_STEPS, lr=PEAK_LR, exercises=LIMA_EXERCISES)
  if recipe in ("sft", "cpt"):
    lima_sft.recipe(c, lr=SFT_LR)
    c.train.update(steps=SFT_STEPS, tokens=0)
    c.curriculum.lr.token_based_decay = False
    c.data.sources.stdlib.weight = 0.0
    if recipe == "sft":
      c.data.sources.exercises.weight = 1.0
    else:  # a source name of its own: pipeline.stage_seed then draws the stdlib's rows
      # in another order, not the pretrain arm's first SFT_STEPS batches again.
      c.data.sources.stdlib_more = data_config.source("stdlib")
  elif recipe == "mixed":
    c.train.tokens = (PRETRAIN_STEPS + SFT_STEPS) * STEP_TOKENS
    c.curriculum.stages.pretrain = curriculum.stage(  # the first 172 of 628 steps
        (PRETRAIN_STEPS - SFT_STEPS) / (PRETRAIN_STEPS + SFT_STEPS), "fraction", "stdlib:1")
    c.curriculum.stages.exercises = curriculum.stage(0, "tokens", "stdlib:1,exercises:1")
    c.curriculum.stage_order = "pretrain,exercises"
  return base.finish(c, None)


def get_sweep(h):
  arms = []
  for seed in h.seeds(3):
    start = {"train.init_from": f"{{arm:config=pretrain,seed={seed['train.seed']}}}"}
    arms += [{"config": "pretrain", **seed}, {"config": "sft", **seed, **start},
             {"config": "cpt", **seed, **start}, {"config": "mixed", **seed}]
  return arms


EVALS = [ArmEval(fmt, task="exercises", args=(f"--exercises_format={fmt}",),
                 columns={f"{fmt}_loss": "response_loss", f"{fmt}_bpb": "response_bpb",
                          f"{fmt}_exact": "exact_match", f"{fmt}_ended": "ended"})
         for fmt in FORMATS]


def _vs(arm, control, metric, claim):
  return Comparison(f"{arm} vs {control}: {metric} {claim}", metric=metric, claim=claim,
                    arm={"config": arm}, control={"config": control})


COMPARISONS = [
    # phi-1: exercise SFT beats the same steps on pretraining data, and its start.
    *[_vs("sft", control, f"{fmt}_{metric}", claim) for control in ("cpt", "pretrain")
      for metric, claim in (("bpb", "lower"), ("exact", "higher")) for fmt in FORMATS],
    # MiniCPM: mixed into the end of pretraining (equal total tokens) they help as much
    # or more; declared as "lower" than sft, and than cpt (the stdlib-only arm).
    *[_vs("mixed", control, f"{fmt}_bpb", "lower") for control in ("sft", "cpt")
      for fmt in FORMATS],
]

"""DPO at toy scale on code exercises: does direct preference optimization (Rafailov et
al. 2023, arXiv 2305.18290; phi-3 and phi-4 post-train with it) teach a small model
pretrained on code to prefer a function's real body over the same lines shuffled, on
exercises from files it never saw, more than plain SFT on the preferred bodies does?

    python -m phijax.sweep experiments/exercise_dpo.py --workdir=runs/exercise_dpo --parallel=2

Pairs (``phijax.data.exercises.preference_pairs``): prompt = signature and docstring,
chosen = the body, rejected = its lines shuffled (same tokens, wrong order). Training:
exercise_sft.py's LIMA_EXERCISES train exercises (946 after the source's hash held-out
5%); held out: every exercise of the held-out stdlib files.

Arms x seeds {0, 1, 2} (init and data order): ``pretrain``, exercise_sft.py's recipe.
``dpo``, from the seed's pretrain arm (``{arm:...}``), also its frozen reference: beta
DPO_BETA, AdamW at LR (5 warmup steps, linear decay to 0.1x), STEPS of PAIRS_PER_STEP
pairs. ``sft_chosen``, the control: the same start, optimizer, schedule and steps, plain
SFT on the chosen side of the same pairs (data kind ``chosen``: same file, same split),
SFT_ROWS packed rows a step (1.57 bodies a row: ~DPO's 8 chosen). Each draws ~510 of the
946 training pairs in its own seeded order.

EVALS (in-process, ``phijax.evals.preferences``) on the held-out pairs: the share whose
chosen body is the likelier (``pref_accuracy``, for every arm), the mean log-probability
gap (``logp_margin``), and DPO's implicit reward against the pretrain arm
(``reward_accuracy``, ``reward_margin``, ``dpo_loss``; not for pretrain, the reference).
Runs log DPO or LM losses on different data: no generic curves (PLOTS).
"""

import importlib.util
import os

from phijax import files
from phijax.data import config as data_config, exercises as data_exercises
from phijax.evals import preferences as pref_eval
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

_spec = importlib.util.spec_from_file_location(
    "exercise_sft", os.path.join(os.path.dirname(os.path.abspath(__file__)), "exercise_sft.py"))
SFT = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SFT)
RECIPES = ("pretrain", "dpo", "sft_chosen")
DPO_BETA, LR, STEPS, PAIRS_PER_STEP = 0.1, 1e-3, 64, 8
SFT_ROWS = 5  # packed rows of chosen bodies a step: DPO's 8 pairs' chosen side
PLOTS = ()


def pairs_path(split: str = "train") -> str:
  return data_exercises.cached_jsonl(split, "preferences",
                                     count=SFT.LIMA_EXERCISES if split == "train" else 0)


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in RECIPES:
    raise ValueError(f"exercise_dpo.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = SFT.get_config("pretrain")
  if recipe == "pretrain":
    return c
  c.unlock()
  dpo = recipe == "dpo"
  c.data.sources = {"pairs": data_config.source("preferences" if dpo else "chosen",
                                                pairs_path("train"))}
  c.data.eval_sources = ""  # the run's own held-out pairs (DPO loss) or bodies (LM loss)
  c.train.update(objective="dpo" if dpo else "lm", dpo_beta=DPO_BETA, steps=STEPS, tokens=0,
                 batch_size=PAIRS_PER_STEP if dpo else SFT_ROWS, final_eval_batches=0)
  c.optim.update(name="adamw", lr=LR, b1=0.9, b2=0.95, weight_decay=0.0, clip=1.0)
  c.curriculum.lr.update(schedule="linear", warmup_steps=5, min_ratio=0.1,
                         token_based_decay=False)
  c.lock()
  return c


def get_sweep(h):
  arms = []
  for seed in h.seeds(3):
    start = {"train.init_from": f"{{arm:config=pretrain,seed={seed['train.seed']}}}"}
    arms += [{"config": "pretrain", **seed}, {"config": "dpo", **seed, **start},
             {"config": "sft_chosen", **seed, **start}]
  return arms


def held_out_pairs(arm_dir):
  """pref_eval's scores on the held-out pairs; the reward against the arm's start (its
  sibling in this sweep directory, wherever the directory has moved)."""
  start = files.read_json_object(os.path.join(arm_dir, "config.json"),
                                 "a phijax run config")["train"]["init_from"]
  ref = os.path.join(os.path.dirname(arm_dir), os.path.basename(start)) if start else None
  return pref_eval.score_run(arm_dir, pairs_path("heldout"), reference_dir=ref,
                             beta=DPO_BETA)


EVALS = [ArmEval("pairs", fn=held_out_pairs)]


def _vs(arm, control, metric):
  return Comparison(f"{arm} vs {control}: {metric} higher", metric=metric, claim="higher",
                    arm={"config": arm}, control={"config": control})


COMPARISONS = [
    # DPO raises held-out preference accuracy and margin: beyond SFT on the chosen
    # bodies of the same pairs (both rewards against the same reference) ...
    *[_vs("dpo", "sft_chosen", m) for m in ("reward_accuracy", "reward_margin",
                                            "pref_accuracy", "logp_margin")],
    # ... and beyond the model it starts from (its reward is 0 there by definition).
    *[_vs("dpo", "pretrain", m) for m in ("pref_accuracy", "logp_margin")],
]

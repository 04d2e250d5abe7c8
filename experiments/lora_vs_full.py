"""LoRA and QLoRA against full fine-tuning: does a rank-r adapter on every block
matrix (Hu et al. 2021, arXiv 2106.09685: LoRA matches full fine-tuning with a
fraction of the trained parameters) reach full fine-tuning's held-out loss, at which
rank, and does a 4-bit NF4 base (Dettmers et al. 2023, arXiv 2305.14314: QLoRA
matches 16-bit LoRA) cost anything?

    python -m phijax.sweep experiments/lora_vs_full.py \\
        --workdir=experiments/results/lora_vs_full --parallel=2

Arms x seeds {0, 1, 2} (initialisation and data order): ``pretrain``, exercise_sft.py's
start (the ablations' small phi on the stdlib, PRETRAIN_STEPS of 8 x 256 tokens, Muon
at lr_sweep.py's best LR, cosine). From the seed's pretrain arm, SFT_STEPS on the same
LIMA_EXERCISES code exercises with configs/lima_sft.py's recipe (AdamW, linear decay,
residual dropout to 0.2, loss on the body only): ``full`` (every parameter at
FULL_LR, exercise_sft's), ``lora`` at ranks RANKS on every block matrix (QLoRA's
finding: adapters on all of them are needed to match full fine-tuning) with alpha
ALPHA held fixed (Hu et al. 4.1) at LORA_LR, and ``qlora``: rank 16 over the base
stored in NF4 (double-quantised scales), everything else lora 16's. LoRA's LR is 5x
full fine-tuning's (adapters usually want a higher LR; chosen, not tuned) and is
the same for every rank, so rank is the only change between lora arms, and the base's
precision the only one between qlora and lora 16.

EVALS: ``phijax.evaluate --task=exercises`` in the SFT template (``chat``): body loss
and bits per body byte on 124 exercises of held-out stdlib files; ``footprint``: the
trained parameters, the parameter bytes (the stored base: 0.52 bytes a matrix value
in NF4 against 4 in float32), the optimizer-state bytes and the quantized base's
relative RMS error. tokens/s is the runner's at --parallel=2, two arms sharing 2 cores:
compare it between arms of one run only. Every run's own held-out loss is the stdlib's
(pretraining data): no generic loss curves (PLOTS).
"""

import json
import math
import os

import jax

from phijax import config as base
from phijax.configs import lima_sft
from phijax.convert import weights
from phijax.model import lora, quant
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

RECIPES = ("pretrain", "full", "lora", "qlora")
PRETRAIN_STEPS = 400
PEAK_LR = 2.4e-2  # Muon, experiments/lr_sweep.py
LIMA_EXERCISES = 1000
SFT_STEPS = 228  # 3 epochs of the exercises in 8-row batches (exercise_sft.py)
FULL_LR = 1e-3  # exercise_sft.py's SFT LR
LORA_LR = 5e-3
RANKS = (4, 16, 64)
ALPHA = 16.0
PLOTS = ()


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in RECIPES:
    raise ValueError(f"lora_vs_full.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = lima_sft.exercise_pretrain(steps=PRETRAIN_STEPS, lr=PEAK_LR, exercises=LIMA_EXERCISES)
  if recipe != "pretrain":
    lima_sft.recipe(c, lr=FULL_LR if recipe == "full" else LORA_LR)
    c.train.update(steps=SFT_STEPS, tokens=0)
    c.curriculum.lr.token_based_decay = False
    c.data.sources.stdlib.weight = 0.0
    c.data.sources.exercises.weight = 1.0
  if recipe in ("lora", "qlora"):
    c.model.lora.update(rank=16, alpha=ALPHA, targets=".",
                        quantize="nf4" if recipe == "qlora" else "")
  return base.finish(c, None)


def get_sweep(h):
  arms = []
  for seed in h.seeds(3):
    start = {"train.init_from": f"{{arm:config=pretrain,seed={seed['train.seed']}}}"}
    arms += [{"config": "pretrain", **seed}, {"config": "full", **seed, **start},
             *[{"config": "lora", "model.lora.rank": r, **seed, **start} for r in RANKS],
             {"config": "qlora", "model.lora.rank": 16, **seed, **start}]
  return arms


def _footprint(arm_dir: str) -> dict:
  """Trained parameters, parameter and optimizer-state megabytes, the base's error."""
  cfg, params, _ = weights.load_run_params(arm_dir)
  total = quant.parameter_count(params)
  trained = lora.count(params) if cfg.lora.rank else total
  rows = [json.loads(line) for line in open(os.path.join(arm_dir, "metrics.jsonl"))]
  per_param = next((r["opt_state_bytes_per_param"] for r in reversed(rows)
                    if "opt_state_bytes_per_param" in r), math.nan)
  q_path = os.path.join(arm_dir, "quantization.json")
  q_error = json.load(open(q_path))["relative_rms_error"] if os.path.exists(q_path) else 0.0
  param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  return {"trained_params": trained, "param_mb": param_bytes / 1e6,
          "opt_mb": per_param * total / 1e6, "base_error": q_error}


EVALS = [ArmEval("chat", task="exercises", args=("--exercises_format=chat",),
                 columns={"chat_loss": "response_loss", "chat_bpb": "response_bpb"}),
         ArmEval("trained", fn=lambda arm: {"trained_params": _footprint(arm)["trained_params"]},
                 fmt=",.0f"),
         ArmEval("footprint", fn=lambda arm: {k: v for k, v in _footprint(arm).items()
                                              if k != "trained_params"}, fmt=".3f")]


def _vs(arm, control, claim="lower", metric="chat_bpb"):
  name = lambda a: a["config"] + (f" r{a['rank']}" if "rank" in a else "")  # noqa: E731
  return Comparison(f"{name(arm)} vs {name(control)}: {metric} {claim}", metric=metric,
                    claim=claim, arm=arm, control=control)


LORA = {r: {"config": "lora", "rank": r} for r in RANKS}  # the table's short field name
COMPARISONS = [
    # Hu et al.: LoRA matches (Table 2: often beats) full fine-tuning, at each rank.
    *[_vs(LORA[r], {"config": "full"}) for r in RANKS],
    # Hu et al. 7.2: a small rank suffices; declared as "higher rank is lower".
    _vs(LORA[64], LORA[4]), _vs(LORA[16], LORA[4]),
    # QLoRA: an NF4 base matches the float one (declared "lower or equal" as "lower").
    _vs({"config": "qlora", "rank": 16}, LORA[16]),
    # Fine-tuning on the exercises helps at all (the start as control).
    _vs({"config": "full"}, {"config": "pretrain"}),
    _vs(LORA[16], {"config": "pretrain"}),
]

"""Context-window extension: a model trained at 256 tokens, continued at 1024 with the
same fine-tuning tokens by plain RoPE (``none``), position interpolation (``linear``,
Chen et al. 2023, arXiv 2306.15595), YaRN (Peng et al. 2023, arXiv 2309.00071) and
LongRoPE-style factors (Ding et al. 2024, arXiv 2402.13753): which keeps the held-out
loss flat past the trained length? Do the papers' orderings hold (PI and YaRN beat
plain RoPE trained at the length; YaRN beats PI at the same fine-tuning)?

    python -m phijax.sweep experiments/context_extension.py \\
        --workdir=experiments/results/context_extension --parallel=2

Arms x seeds {0, 1, 2} (initialisation and data order): ``base``, the ablations' small
phi pretrained on the stdlib at 256 tokens (BASE_STEPS of 16 x 256, Muon at
lr_sweep.py's best LR, cosine). ``none`` / ``linear`` / ``yarn`` / ``longrope``, from
the seed's base (``{arm:...}``): configs/extend_context.py's recipe (4x the length,
EXTEND_STEPS of 4 x 1024 tokens: the same tokens a step, sequence-length warmup
256 -> 1024 over the first 30%, Muon at EXTEND_LR, cosine), differing only in
``model.rope_scaling``. ``none`` is the control: the same continued training with
positions unscaled, so a gain over it is the rescaling's, not the extra tokens'. Our
``longrope`` has no evolutionary search: short factors 1 and long factors YaRN's
per-dimension stretch (one of the paper's search starting points), so it tests that
parametrisation, not LongRoPE's searched factors.

EVALS: ``phijax.evaluate --task=positions --seq_len=1024``: held-out loss (nats/token)
by position bucket of 256, positions counted from each document's start, on the same
128 held-out rows of 1024 tokens for every arm (base: 8 batches of 16; the others: 32
of 4). The base row is the break the extensions must repair (its loss past 256 is a
model reading positions it never saw). ``start_loss``: the extended arms' held-out loss
at 1024 before their first step (the base model with the new scaling, zero-shot; the
training loop's 4-batch evaluation, 16k tokens). ``positions.png``: the buckets per arm.
"""

import json
import math
import os

from phijax import config as base
from phijax.configs import extend_context, tiny
from phijax.sweeps import figures
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

KINDS = ("none", "linear", "yarn", "longrope")
BASE_STEPS = 300
PEAK_LR = 2.4e-2  # Muon, experiments/lr_sweep.py
EXTEND_STEPS = 150
EXTEND_LR = 7e-3  # extend_context's 3e-3 after tiny's 1e-2, at this model's LR ratio
LENGTH = 1024
BUCKETS = [f"loss_{s}_{s + 256}" for s in range(0, LENGTH, 256)]
PLOTS = ()  # base and extended arms train and evaluate at different lengths: one axis misleads


def get_config(arg=None):
  kind = arg or "base"
  if kind not in ("base",) + KINDS:
    raise ValueError(f"context_extension.py: arm {kind!r}; choose base or one of {KINDS}")
  c = base.small_ablation(tiny.small_phi(), tokens=BASE_STEPS * 16 * 256, batch_size=16,
                          eval_every=0, final_eval_batches=8, log_every=10)
  c.train.save_every_minutes = 0.0  # checkpoints only at the end: the arms are short
  c.optim.lr = PEAK_LR
  c.curriculum.lr.update(schedule="cosine", warmup_steps=15, min_ratio=0.1)
  if kind != "base":
    c = extend_context.extend(c, kind, steps=EXTEND_STEPS, lr=EXTEND_LR, eval_every=0,
                              save_every=0)
    c.train.final_eval_batches = 32  # 32 x 4 rows: base's 8 x 16
  return base.finish(c, None)


def get_sweep(h):
  arms = []
  for seed in h.seeds(3):
    start = {"train.init_from": f"{{arm:config=base,seed={seed['train.seed']}}}"}
    arms += [{"config": "base", **seed}] + [{"config": k, **seed, **start} for k in KINDS]
  return arms


def _start_loss(arm_dir: str) -> dict:
  """The held-out loss the training loop measured before step 1 (warm-started arms)."""
  with open(os.path.join(arm_dir, "metrics.jsonl")) as f:
    first = next((row for row in map(json.loads, f) if "eval_loss" in row), {})
  config = json.load(open(os.path.join(arm_dir, "config.json")))
  start = first.get("step") == 0 and config["train"].get("init_from")
  return {"start_loss": first["eval_loss"] if start else math.nan}


EVALS = [ArmEval("positions", task="positions", args=(f"--seq_len={LENGTH}", "--bucket=256"),
                 columns={"loss_1024": "eval_loss", **{b: b for b in BUCKETS}}),
         ArmEval("start", fn=_start_loss)]


def _vs(arm, control, metric, claim="lower"):
  return Comparison(f"{arm} vs {control}: {metric} {claim}", metric=metric, claim=claim,
                    arm={"config": arm}, control={"config": control})


FAR = BUCKETS[-1]
COMPARISONS = [
    # Each rescaling beats plain RoPE trained at the length with the same tokens, where
    # the model is furthest past its trained length and over the whole row.
    *[_vs(k, "none", m) for k in KINDS[1:] for m in (FAR, "loss_1024")],
    # YaRN beats PI at equal fine-tuning (YaRN, section 4); LongRoPE-style factors
    # (plain RoPE inside the trained length) beat YaRN.
    _vs("yarn", "linear", FAR), _vs("longrope", "yarn", FAR),
    # Zero-shot, before any step: YaRN's interpolation reads 4x the length better than
    # PI's and than plain RoPE (YaRN, section 4.3).
    _vs("yarn", "linear", "start_loss"), _vs("yarn", "none", "start_loss"),
    # PI's cost inside the original window (PI paper, section 3.4: a small rise).
    _vs("linear", "none", BUCKETS[0], "higher"),
    # The control itself: continued training at the length repairs the break.
    _vs("none", "base", FAR),
]


def plot(table, sweep_dir):
  """positions.png: held-out loss by position bucket, one line per arm."""
  path = os.path.join(sweep_dir, "positions.png")
  figures.plot_columns(table, path, BUCKETS, xticks=[b[5:].replace("_", "-") for b in BUCKETS],
                       xlabel="position bucket (tokens into the document)",
                       ylabel="held-out loss (nats/token)",
                       title=f"held-out loss by position at {LENGTH} tokens "
                             "(trained at 256; line: seed mean, dots: seeds)")
  return [path]

"""phi-1's exercise fine-tuning at toy scale: does fine-tuning a model pretrained on
code on a small set of "docstring -> body" exercises (Gunasekar et al. 2023,
"Textbooks Are All You Need", arXiv 2306.11644: CodeExercises lifted HumanEval from
29% to 51%) lower its loss on, and raise its exact match of, held-out exercises? And
does mixing the same exercises into the end of pretraining (a curriculum stage, as
MiniCPM anneals with SFT data; Hu et al. 2024, arXiv 2404.06395) do as well at the
same total tokens?

    python -m phijax.sweep experiments/exercise_sft.py \\
        --workdir=experiments/results/exercise_sft --parallel=2
    # one seed: 3 arms + 6 evaluations, about half the time
    python -m phijax.sweep experiments/exercise_sft.py --workdir=runs/exercise_sft_s0 \\
        --only='seed=0' --parallel=2

Arms (x seeds {0, 1}; each recipe is ``get_config(RECIPE)``, one run directory each):

- ``config=pretrain``: the model of experiments/lr_sweep.py (phi, hidden 128, 2
  layers, 2048-token vocabulary, ~0.9M parameters) on the stdlib corpus, PRETRAIN_STEPS
  steps of 8 x 256 tokens, Muon at 2.4e-2 (lr_sweep.py's best), cosine to 0.1x.
- ``config=sft``: warm-started from the seed's pretrain arm (``{arm:...}``: the
  sweep runs it first), LIMA's recipe as configs/lima_sft.py scales it (AdamW b1 0.9,
  b2 0.95, weight decay 0.1, no warmup, linear decay to 0.1x, residual dropout
  rising linearly with depth to 0.2, loss on the body only, ``plain`` chat template:
  prompt <eot> body <eot>) on LIMA_EXERCISES train exercises (an even sample of the
  3,363 from training files; LIMA's 1,000), SFT_EPOCHS epochs at SFT_LR (lima_sft's
  1e-4 hardly moves this model in a few hundred steps; LIMA: 15 epochs at 1e-5).
  Evaluated on the source's held-out 5% (also training-file exercises) every epoch.
- ``config=mixed``: from scratch, the pretrain arm's tokens plus the sft arm's,
  Muon and cosine as pretrain. Stage ``pretrain`` (stdlib only) until the last
  2 x (the sft arm's tokens), then stage ``exercises``: stdlib and the same exercises
  at 1:1, so this arm sees the pretrain arm's stdlib tokens and the sft arm's
  exercise tokens, in one run.

Before / after: ``summarize`` scores every finished arm with the ``exercises`` task of
``phijax.evaluate`` (the 124 held-out exercises, from held-out stdlib files) in both
presentations, ``text`` (prompt and body as plain code) and ``chat`` (the sft
template), and caches the scores in ARM/evals-text/ and ARM/evals-chat/. The
pretrain arm is the sft arm's "before". Response loss is in nats per body token (every
arm has the pretrain arms' tokenizer: the exercises source trains none) and bits per
body byte.

Runtime on 2 CPU cores at --parallel=2: measured 64 minutes beside other jobs (load
average 10-17): 29 for the 6 arms (pretrain 581-614 s, sft 277-301 s, mixed 859-861 s),
35 for the 12 evaluations (~4 minutes each, nearly all greedy decoding). On a quiet
machine (probe: ~4,500 tokens/s per arm, ~45 s per evaluation) about 15 minutes.
"""

import json
import math
import os
import subprocess
import sys
import time

from phijax import config as base
from phijax.train import curriculum
from phijax.configs import tiny
from phijax.data import config as data_config, exercises as data_exercises

RECIPES = ("pretrain", "sft", "mixed")
STEP_TOKENS = 8 * 256
PRETRAIN_STEPS = 400
PEAK_LR = 2.4e-2  # Muon, experiments/lr_sweep.py
LIMA_EXERCISES = 1000
SFT_EPOCHS = 3
SFT_LR = 1e-3
# The sft arm's steps: SFT_EPOCHS epochs of the packed LIMA_EXERCISES set at batch 8
# (train.apply_epochs counts them from the data: 602 packed rows, 76 steps; the
# sft arm logs it, and plot() checks it against the sft arm).
SFT_STEPS_PER_EPOCH = 76
FINAL_EVAL_BATCHES = 16
FORMATS = ("text", "chat")


def exercises_path() -> str:
  return data_exercises.cached_jsonl("train", "sft", count=LIMA_EXERCISES)


def _model(c):
  c = base.small_ablation(c, tokens=PRETRAIN_STEPS * STEP_TOKENS, batch_size=8,
                          eval_every=0, final_eval_batches=FINAL_EVAL_BATCHES, log_every=5)
  c.train.save_every_minutes = 0.0  # checkpoints only at the end: the arms are short
  return c


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in RECIPES:
    raise ValueError(f"exercise_sft.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = _model(tiny.get_config())
  c.optim.lr = PEAK_LR
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  # Weight 0: present in every recipe (so every config has the same keys) and neither
  # trained on nor used to train the tokenizer unless a recipe gives it weight.
  c.data.sources.exercises = data_config.source("sft", exercises_path(), weight=0.0,
                                                template="plain")
  if recipe == "sft":  # configs/lima_sft.py's recipe on this model
    c.data.sources.stdlib.weight = 0.0
    c.data.sources.exercises.weight = 1.0
    c.model.update(resid_pdrop=0.2, resid_pdrop_schedule="linear")
    c.train.update(epochs=SFT_EPOCHS, steps=1, tokens=0, eval_batches=0,
                   final_eval_batches=0)  # epochs set the steps
    c.optim.update(name="adamw", lr=SFT_LR, b1=0.9, b2=0.95, weight_decay=0.1, clip=1.0)
    c.curriculum.lr.update(schedule="linear", warmup_steps=0, min_ratio=0.1,
                           token_based_decay=False)
  elif recipe == "mixed":
    sft_tokens = SFT_EPOCHS * SFT_STEPS_PER_EPOCH * STEP_TOKENS
    c.train.tokens = PRETRAIN_STEPS * STEP_TOKENS + sft_tokens
    c.curriculum.stages.pretrain = curriculum.stage(
        PRETRAIN_STEPS * STEP_TOKENS - sft_tokens, "tokens", "stdlib:1")
    c.curriculum.stages.exercises = curriculum.stage(0, "tokens", "stdlib:1,exercises:1")
    c.curriculum.stage_order = "pretrain,exercises"
  return base.finish(c, None)


def get_sweep(h):
  arms = []
  for seed in (0, 1):
    pre = f"config=pretrain,seed={seed}"
    arms += [{"config": "pretrain", "train.seed": seed},
             {"config": "sft", "train.seed": seed, "train.init_from": f"{{arm:{pre}}}"},
             {"config": "mixed", "train.seed": seed}]
  return arms


# ------------------------------------------------------------- held-out exercise scores

def exercise_scores(arm_dir: str, fmt: str) -> str:
  """Where the arm's ``exercises`` scores in ``fmt`` are cached (``phijax.evaluate
  --out=ARM/evals-FMT`` writes them there)."""
  return os.path.join(arm_dir, f"evals-{fmt}", "evals", "exercises.json")


def evaluate_arms(arm_dirs, formats=FORMATS, parallel=2) -> None:
  """``python -m phijax.evaluate --task=exercises`` for every (arm, format) whose
  scores are not cached yet, ``parallel`` at a time, the cores split as the sweep
  runner splits them. Its log: ARM/evals-FMT.log."""
  from phijax.sweeps import runner
  jobs = [(d, f) for d in arm_dirs for f in formats
          if not os.path.exists(exercise_scores(d, f))]
  slots = runner.core_slices(parallel)
  free, running = list(range(parallel)), []
  while jobs or running:
    while jobs and free:
      d, fmt = jobs.pop(0)
      slot = free.pop(0)
      cores = slots[slot]
      cmd = [sys.executable, "-m", "phijax.evaluate", f"--workdir={d}", "--task=exercises",
             f"--exercises_format={fmt}", f"--out={os.path.join(d, f'evals-{fmt}')}"]
      log = open(os.path.join(d, f"evals-{fmt}.log"), "w")
      preexec = (lambda c=cores: os.sched_setaffinity(0, c)) if cores else None
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              env=runner.arm_env(cores), preexec_fn=preexec)
      running.append((proc, log, slot, d, fmt))
    time.sleep(0.2)
    for item in list(running):
      proc, log, slot, d, fmt = item
      if proc.poll() is not None:
        log.close()
        running.remove(item)
        free.append(slot)
        if proc.returncode:
          print(f"exercise_sft: evaluating {d} ({fmt}) failed; see {log.name}", flush=True)


# ------------------------------------------------------------------- results and plot

LABELS = {"pretrain": "pretrained (before)", "sft": "pretrained + exercise SFT (after)",
          "mixed": "exercises mixed into pretraining"}
COLORS = {"pretrain": "tab:gray", "sft": "tab:blue", "mixed": "tab:orange"}


def _arm(table, recipe, seed):
  rows = [r for r in table.where(config=recipe, seed=seed) if r["status"] == "done"]
  return rows[0] if rows else None


def _all_scores(table, sweep_dir):
  """{(recipe, seed): {fmt: scores}} of the finished arms (evaluating what is missing)."""
  done = [r for r in table.rows if r["status"] == "done"]
  evaluate_arms([os.path.join(sweep_dir, r["arm"]) for r in done])
  out = {}
  for r in done:
    got = {}
    for fmt in FORMATS:
      path = exercise_scores(os.path.join(sweep_dir, r["arm"]), fmt)
      if os.path.exists(path):
        with open(path) as f:
          got[fmt] = json.load(f)["scores"]
        got[fmt]["ended"] = _ended(os.path.join(sweep_dir, r["arm"]), fmt)
    out[(r["config"], r["seed"])] = got
  return out


def _get(scores, recipe, seed, fmt, key):
  return scores.get((recipe, seed), {}).get(fmt, {}).get(key, math.nan)


def _ended(arm_dir, fmt) -> float:
  """Greedy bodies the model ended itself (end-of-text / end-of-turn, or a line at
  column 0), not cut at their token budget: how well it learned where a body stops."""
  path = exercise_scores(arm_dir, fmt).replace(".json", ".samples.jsonl")
  if not os.path.exists(path):
    return math.nan
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return float(sum(r["finish"] != "length" for r in rows))


def _pm(values, signed=False, digits=3):
  from phijax.sweeps import tables
  vals = [v for v in values if math.isfinite(v)]
  if not vals:
    return "-"
  mean, std, n = tables.mean_std(vals)
  f = f"{{:{'+' if signed else ''}.{digits}f}}"
  text = f.format(mean) + (f" ± {std:.{digits}f}" if n > 1 else "")
  return text + " [" + ", ".join(f.format(v) for v in vals) + "]"


def _tables(table, scores) -> str:
  seeds = table.values("seed")
  lines = []
  for fmt in FORMATS:
    rows = []
    for recipe in RECIPES:
      loss = [_get(scores, recipe, s, fmt, "response_loss") for s in seeds]
      base_loss = [_get(scores, "pretrain", s, fmt, "response_loss") for s in seeds]
      rows.append({
          "model": LABELS[recipe],
          "response loss (nats/token)": _pm(loss),
          "minus pretrained, per seed": "-" if recipe == "pretrain" else
              _pm([a - b for a, b in zip(loss, base_loss)], signed=True),
          "response bits/byte": _pm([_get(scores, recipe, s, fmt, "response_bpb")
                                     for s in seeds]),
          "exact matches (of 124)": _pm([_get(scores, recipe, s, fmt, "exact_match") *
                                         _get(scores, recipe, s, fmt, "exercises")
                                         for s in seeds], digits=1),
          "bodies it ended itself (of 124)": _pm(
              [_get(scores, recipe, s, fmt, "ended") for s in seeds], digits=1),
          "tokens (pretrain + this run)": _tokens(table, recipe)})
    from phijax.sweeps.tables import summary_table
    lines += [f"Held-out exercises, `{fmt}` presentation "
              + ("(prompt and body as plain code):" if fmt == "text" else
                 "(the sft template: prompt <eot> body <eot>; the loss includes the "
                 "closing <eot>):"),
              summary_table(rows)]
  return "\n\n".join(lines)


def _tokens(table, recipe) -> str:
  """Training tokens behind the model: the sft arm's include its pretrain arm's."""
  out = []
  for s in table.values("seed"):
    r = _arm(table, recipe, s)
    pre = _arm(table, "pretrain", s) if recipe == "sft" else None
    if r is not None:
      out.append(f"{pre['tokens']:,} + {r['tokens']:,}" if pre else f"{r['tokens']:,}")
  return ", ".join(dict.fromkeys(out)) or "-"


def _budget_check(table) -> str:
  """The mixed arm's token budget against pretrain + sft, as measured."""
  out = []
  for s in table.values("seed"):
    pre, sft, mixed = (_arm(table, r, s) for r in RECIPES)
    if pre and sft and mixed:
      out.append(f"seed {s}: pretrain {pre['tokens']:,} + sft {sft['tokens']:,} = "
                 f"{pre['tokens'] + sft['tokens']:,} tokens; mixed {mixed['tokens']:,}")
  return "; ".join(out)


def summarize(table):
  """Points to the held-out exercise tables, which ``plot`` appends (they need the
  arms' directories, which only ``plot`` is given)."""
  return ("The held-out exercise scores (before / after SFT, and the mixed arm) are "
          "appended at the end of this file by the experiment's `plot`, which evaluates "
          "each finished arm once (cached in ARM/evals-text/ and ARM/evals-chat/). "
          "The `held-out loss` column above is each run's own final evaluation: the "
          "stdlib's held-out rows for pretrain and mixed, but the exercises source's "
          "hash-held-out 5% (exercises from training files) for sft, so it does not "
          "compare across recipes.")


def plot(table, sweep_dir):
  """Evaluates the arms on the held-out exercises (cached), appends the tables to
  results.md, and draws exercises.png."""
  import numpy as np
  from matplotlib.figure import Figure
  from phijax.sweeps import runs

  scores = _all_scores(table, sweep_dir)
  seeds = table.values("seed")
  with open(os.path.join(sweep_dir, "results.md"), "a") as f:
    f.write("\n## Held-out exercises: before and after\n\n" + _tables(table, scores) +
            "\n\nMean ± sample std over seeds, each seed in brackets (seed order "
            f"{seeds}). 124 held-out exercises (every one from a held-out stdlib file), "
            "greedy decoding for exact match. Token budgets: " + _budget_check(table) +
            ".\n\nPlot: `exercises.png`.\n")

  fig = Figure(figsize=(17, 5.2), layout="constrained")
  ax_loss, ax_em, ax_train = fig.subplots(1, 3)
  width = 0.26
  for j, recipe in enumerate(RECIPES):
    for k, fmt in enumerate(FORMATS):
      x = k + (j - 1) * width
      for ax, metric in ((ax_loss, "response_loss"), (ax_em, "ended")):
        vals = [_get(scores, recipe, s, fmt, metric) for s in seeds]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
          ax.bar(x, np.mean(vals), width * 0.9, color=COLORS[recipe],
                 label=LABELS[recipe] if k == 0 else None)
          ax.plot([x] * len(vals), vals, "k.", markersize=6)
  for ax in (ax_loss, ax_em):
    ax.set_xticks(range(len(FORMATS)), [f"{f} presentation" for f in FORMATS])
    ax.grid(alpha=0.3, axis="y")
  lo = min((_get(scores, r, s, f, "response_loss") for r in RECIPES for s in seeds
            for f in FORMATS if math.isfinite(_get(scores, r, s, f, "response_loss"))),
           default=0.0)
  ax_loss.set_ylim(max(0.0, lo - 0.6), None)
  ax_loss.set(title="held-out exercises: body loss given the prompt\n(bars: seed mean; "
              "dots: seeds; lower is better)", ylabel="response loss (nats / body token)")
  ax_loss.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08),
                 ncol=2)
  ax_em.set(title="held-out exercises: greedy bodies the model ended itself\n(not cut "
            "at the token budget; bars: seed mean; dots: seeds)",
            ylabel="bodies ended (of 124)")
  ax_em.set_ylim(0, 124)
  ems = [_get(scores, r, s, f, "exact_match") for r in RECIPES for s in seeds
         for f in FORMATS]
  if all(v == 0 for v in ems if math.isfinite(v)):
    ax_em.text(0.5, 0.93, "exact match: 0 of 124 in every arm and presentation",
               transform=ax_em.transAxes, ha="center", va="center", fontsize="medium",
               color="dimgray")
  # Training: the sft arms' loss on exercise bodies by step (and their per-epoch
  # evaluation on training-file exercises), the mixed arms' stage switch.
  for s, style in zip(seeds, ("-", "--")):
    r = _arm(table, "sft", s)
    if r is None:
      continue
    train, evals, final = runs.split_rows(runs.read_rows(os.path.join(sweep_dir,
                                                                      r["arm"])))
    ax_train.plot([x["step"] for x in train], runs.ema([x["loss"] for x in train]),
                  style, color=COLORS["sft"], label=f"sft, seed {s}: training loss (EMA; residual dropout on)")
    ev = evals + ([final] if final else [])
    ax_train.plot([x["step"] for x in ev], [x["eval_loss"] for x in ev], "o" + style,
                  color="navy", markersize=5,
                  label=f"sft, seed {s}: held-out 5% of the training exercises, per epoch")
  ax_train.set(title="exercise SFT: loss on exercise bodies", xlabel="SFT step",
               ylabel="loss (nats / body token)")
  ax_train.grid(alpha=0.3)
  ax_train.legend(fontsize="small")
  path = os.path.join(sweep_dir, "exercises.png")
  fig.savefig(path, dpi=100)
  return [path]
